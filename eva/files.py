"""Files that are whole or absent: every file eva writes for others to read goes here.

A reader (a resume, mode=test, a sweep's summary, another worker) never sees half a file:
the content goes to a hidden temporary file in the same folder, is flushed to disk, then
renamed over the target in one step. A process killed mid-write leaves the previous file.
Each write has a temporary file of its own, so writers of one file (the workers of a sweep
that all see it end) never rename each other's.
"""

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call write(file) on a temporary file beside `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when the write failed
    return path


def write_text(path: Path, text: str) -> Path:
    return write_atomically(path, lambda f: f.write(text.encode()))


def write_json(data: dict, path: Path) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")
