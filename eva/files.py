"""Files that are whole or absent: every file eva writes for others to read goes here.

A reader (a resume, mode=test, a sweep's summary, another worker) never sees half a file
(evasweep.files: a temporary file beside the target, renamed onto it in one step).
"""

import json
from pathlib import Path

from evasweep.files import write_atomically, write_text

__all__ = ["write_atomically", "write_text", "write_json"]


def write_json(data: dict, path: Path) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")
