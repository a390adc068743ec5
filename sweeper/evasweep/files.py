"""Files that are whole or absent: a reader never sees half of one.

The content goes to a hidden temporary file in the same folder, is flushed to disk, then
renamed over the target in one step; a process killed mid-write leaves the previous file.
Each write has a temporary file of its own, so writers of one file (the workers of a sweep
that all see it end) never rename each other's.
"""

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
