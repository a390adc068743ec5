"""The docs: the site builds with no broken link, the README stays short, nothing stale.

`mkdocs build --strict` fails on a link to a missing page or anchor; the other checks are
what mkdocs does not know: the README's own links, every page in the nav, every generated
block filled, and no words or paths that only mean something on one machine or to this
project's own tracker.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

DOCS = REPO / "docs"
README = REPO / "README.md"
README_LIMIT = 12_000  # characters: read in five minutes
BEGIN = re.compile(r"^<!-- begin generated: ([\w-]+)")


def written_files() -> list[Path]:
    """Docs and the code and configs users read (tests are excluded: they quote bad input)."""
    files = [README, *DOCS.glob("*.md")]
    for folder in ["eva", "sweeper", "benchmarks", "tools", "examples"]:
        for pattern in ["*.py", "*.yaml", "*.md", "*.toml"]:
            files += (REPO / folder).rglob(pattern)
    return [f for f in files if ".egg-info" not in str(f)]


def test_site_builds_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


def test_every_page_is_in_the_nav():
    def pages(entry) -> list[str]:
        if isinstance(entry, str):
            return [entry]
        if isinstance(entry, list):
            return [p for e in entry for p in pages(e)]
        return [p for v in entry.values() for p in pages(v)]

    nav = pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    on_disk = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(nav) == on_disk


def test_readme_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text) <= README_LIMIT, f"README.md has {len(text)} characters"
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (REPO / target).exists(), f"README.md links to a missing {target}"


def test_generated_blocks_are_paired_and_filled():
    for page in DOCS.glob("*.md"):
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            found = BEGIN.match(line)
            if not found:
                continue
            name = found.group(1)
            end = f"<!-- end generated: {name} -->"
            assert end in lines[i + 1 :], f"{page.name}: block {name} has no end marker"
            body = lines[i + 1 : lines.index(end, i + 1)]
            assert any(b.strip() and b.strip() != "(generated)" for b in body), (
                f"{page.name}: block {name} was never generated"
            )


# Words about this project's own tracker, not about eva. Links to other projects' issues
# ("hydra #3091") are fine: they name the project.
PROCESS_WORDS = re.compile(
    r"\bissues? #?\d+|\bdone[- ]when\b|\bacceptance\b|\bclosing note\b", re.IGNORECASE
)
ONE_MACHINE = re.compile(r"(?<![\w.])/(?:work|root|home/\w+)/")


@pytest.mark.parametrize("pattern", [PROCESS_WORDS, ONE_MACHINE], ids=["process", "paths"])
def test_no_process_words_or_machine_paths(pattern):
    found = [
        f"{f.relative_to(REPO)}:{n}: {line.strip()}"
        for f in written_files()
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "\n".join(found)
