"""The generated parts of the docs: the configuration reference is current, it follows the
code, and benchmarks publish into marked blocks only (tools/, benchmarks/common.py)."""

import datetime
import enum
import sys
from dataclasses import dataclass

import pytest
from helpers import REPO

for folder in (REPO / "tools", REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import blocks  # noqa: E402
import common  # noqa: E402
import reference  # noqa: E402


def test_the_configuration_reference_is_current():
    page = reference.PAGE.relative_to(REPO)
    assert reference.is_current(), f"{page} is out of date: run python tools/reference.py"
    assert reference.main(["--check"]) == 0


class Colour(enum.StrEnum):
    red = "red"  # the default
    blue = "blue"


@dataclass
class Schema:
    epochs: int = 3  # passes over the data


@dataclass
class SchemaWithANewField:
    epochs: int = 3  # passes over the data
    # Where the weights go.
    folder: str | None = None  # null: nowhere
    colour: Colour = Colour.red


def test_a_new_schema_field_changes_the_reference():
    before = reference.key_table(Schema)
    after = reference.key_table(SchemaWithANewField)
    assert "| `epochs` | int | `3` | passes over the data |" in before
    assert "folder" not in before and "colour" not in before
    assert "| `folder` | str or null | `null` | Where the weights go. null: nowhere |" in after
    assert "| `colour` | one of `red`, `blue` | `red` | `red`: the default |" in after


def test_replace_block_keeps_the_prose_and_reports_a_change(tmp_path):
    page = tmp_path / "page.md"
    prose = (
        "# Page\n\nabove\n\n<!-- begin generated: t -->\nold\n<!-- end generated: t -->\n\nbelow\n"
    )
    page.write_text(prose)
    assert blocks.replace_block(page, "t", "new\n") is True
    assert page.read_text() == prose.replace("\nold\n", "\nnew\n")
    assert blocks.read_block(page, "t") == "new\n"
    assert blocks.replace_block(page, "t", "new") is False  # the same text: not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["page.md"]  # no temporary file left


def test_publish_writes_the_command_machine_and_date_into_the_block(tmp_path):
    page = tmp_path / "performance.md"
    page.write_text("prose\n\n<!-- begin generated: demo -->\n<!-- end generated: demo -->\n")
    command = common.command_line("benchmarks/demo.py", ["--quick", "--publish", "--uri", "/x"])
    assert command == "python benchmarks/demo.py --quick"  # storage options are not shown
    assert common.publish(str(page), "demo", "| a |\n| --- |\n| 1 |", command) is True
    first, *rest = blocks.read_block(page, "demo").splitlines()
    today = datetime.date.today().isoformat()
    assert first.startswith(f"Measured {today} with `python benchmarks/demo.py --quick` on ")
    assert "CPU core" in first and "torch thread" in first and ("GPU" in first)
    assert "| 1 |" in rest and page.read_text().startswith("prose\n")


def test_publish_refuses_a_page_without_the_markers(tmp_path):
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nno markers here\n")
    with pytest.raises(blocks.MissingBlock, match=r"results\.md: block 'results'"):
        common.publish(str(page), "results", "| a |", "python benchmarks/results.py")
    assert page.read_text() == "# Results\n\nno markers here\n"
