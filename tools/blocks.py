"""Generated blocks of the docs: the text between a pair of marker lines in a page.

Measured figures and reference tables are written by scripts, never typed, so that each
has one source and can be regenerated. A page holds each block between

    <!-- begin generated: NAME -->
    ...
    <!-- end generated: NAME -->

and everything outside the markers belongs to the people who write the page: these
functions rewrite only what is between them. The markdown helpers at the end are shared by
the scripts that make the blocks' text.
"""

import os
import re
import tempfile
from pathlib import Path


class MissingBlock(LookupError):
    """The page has no (or no well-formed) pair of markers for the block."""


def begin_marker(name: str) -> str:
    return f"<!-- begin generated: {name} -->"


def end_marker(name: str) -> str:
    return f"<!-- end generated: {name} -->"


def _block_span(text: str, page: Path, name: str) -> tuple[int, int]:
    """(start, end) of what lies between the block's marker lines; the markers must each be
    on a line of their own, once, begin before end."""
    begin = rf"^{re.escape(begin_marker(name))}[ \t]*\n"
    end = rf"^{re.escape(end_marker(name))}[ \t]*$"
    begins = [m.end() for m in re.finditer(begin, text, re.M)]
    ends = [m.start() for m in re.finditer(end, text, re.M)]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        found = f"{len(begins)} begin and {len(ends)} end marker(s)"
        raise MissingBlock(
            f"{page}: block {name!r} needs one line {begin_marker(name)!r} followed by one "
            f"line {end_marker(name)!r} (found {found})"
        )
    return begins[0], ends[0]


def read_block(page: Path, name: str) -> str:
    """What is between the block's markers now (without the marker lines)."""
    page = Path(page)
    text = page.read_text(encoding="utf-8")
    start, end = _block_span(text, page, name)
    return text[start:end]


def replace_block(page: Path, name: str, body: str) -> bool:
    """Put `body` between the block's markers (kept); True when the page changed.

    Read, replaced and written back at once, through a temporary file renamed over the
    page: other people edit the prose of the same page, and a reader (mkdocs serve, an
    editor) never sees a half-written file.
    """
    page = Path(page)
    text = page.read_text(encoding="utf-8")
    start, end = _block_span(text, page, name)
    inner = body.strip("\n") + "\n" if body.strip() else ""
    new = text[:start] + inner + text[end:]
    if new == text:
        return False
    _write_atomically(page, new)
    return True


def _write_atomically(page: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=page.parent, prefix=f".{page.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, page.stat().st_mode & 0o777)  # mkstemp makes it 0600
        os.replace(tmp, page)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- markdown


def md_text(text: str) -> str:
    """Text for a table cell or paragraph: `<launch dir>` would be read as an HTML tag and a
    bare `|` as a column break; code spans (backticks) are left as they are."""
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):  # the even parts are outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    return "".join(parts)


def code(text: str) -> str:
    """An inline code span, with a longer fence when the text holds a backtick."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table of cells that are markdown already (see md_text, code)."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += [table_row(cells) for cells in rows]
    return "\n".join(lines)


def table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
