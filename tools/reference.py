"""The configuration reference of docs/configuration.md, generated from the code.

    python tools/reference.py            # rewrite the block configuration-reference
    python tools/reference.py --check    # exit 1 (one line) when the page is out of date

Every key is read from where it is defined, so the reference cannot drift from it: the
run-level keys and eva's keys of each group from the dataclasses of eva/config/schemas.py
(type and default from the dataclass, the description from the comments next to and above
each field in the source), the values a run starts from in eva/conf/train.yaml, and every
option of every group from its YAML in eva/conf/ (leading comment, `_target_`, keys, values
and their comments). Only cheap modules are imported (Hydra, OmegaConf; no torch).
"""

import argparse
import ast
import dataclasses
import enum
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for folder in (REPO, REPO / "tools"):  # `python tools/reference.py` from anywhere
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from blocks import code, md_text, read_block, replace_block, table  # noqa: E402
from omegaconf import MISSING, OmegaConf  # noqa: E402

from eva.cli.help import config_groups  # noqa: E402
from eva.config import CONF_DIR, schemas  # noqa: E402
from eva.config.options import HYDRA_KEYS, TARGET  # noqa: E402
from eva.config.validate import PROVIDED  # noqa: E402
from eva.tracking.params import override_value as yaml_value  # noqa: E402

PAGE = REPO / "docs" / "configuration.md"
BLOCK = "configuration-reference"
NESTED = {  # the run's nested blocks of keys, each a section of its own
    "tracking": schemas.TrackingConfig,
    "lr_find": schemas.LrFindConfig,
    "report": schemas.ReportConfig,
}
SCHEMA_FILE = "eva/config/schemas.py"


# --------------------------------------------------------------------------- values


# --------------------------------------------------------------------------- source comments


def _comment_lines(source: str) -> tuple[dict[int, str], set[int]]:
    """({line: its comment text}, lines that hold nothing but a comment), from tokenize, so
    that a # inside a string is never taken for a comment."""
    comments, code_lines = {}, set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(tok.start[0])
    return comments, set(comments) - code_lines


def _is_rule(comment: str) -> bool:
    """A section rule such as `# ------ tracking`: a heading of the file, not a description."""
    return comment.startswith("---")


def assigned_name(stmt: ast.stmt) -> str | None:
    """The name a class-body statement defines (`epochs: int = 24`, `test = "test"`)."""
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return stmt.target.id
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        return getattr(stmt.targets[0], "id", None)
    return None


def member_comments(cls: type) -> dict[str, str]:
    """{field or member name: its comment} for a class's body: the comment lines right above
    the assignment (no blank line between) and the comment at the end of its line(s)."""
    source = textwrap.dedent("".join(inspect.getsourcelines(cls)[0]))
    comments, alone = _comment_lines(source)
    (klass,) = ast.parse(source).body
    found = {}
    for stmt in klass.body:
        name = assigned_name(stmt)
        if name is None:
            continue
        above, line = [], stmt.lineno - 1
        while line in alone and not _is_rule(comments[line]):
            above.insert(0, comments[line])
            line -= 1
        after = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments]
        found[name] = " ".join(above + after)
    return found


# --------------------------------------------------------------------------- dataclass keys


def type_name(annotation) -> str:
    """An annotation in words: int, float or null, list of float, one of `a`, `b`."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(code(m.value) for m in annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        words = " or ".join(type_name(a) for a in rest)
        return f"{words} or null" if type(None) in args else words
    if origin in (list, tuple) and args:
        return f"list of {type_name(args[0])}"
    if annotation is typing.Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _enum_of(annotation) -> type | None:
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def enum_notes(choices: type) -> str:
    """What the commented members of an enum mean: "`test`: evaluate `checkpoint`"."""
    notes = member_comments(choices)
    said = [f"{code(m.value)}: {notes[m.name]}" for m in choices if notes.get(m.name)]
    return "; ".join(said)


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


def is_section(f: dataclasses.Field) -> bool:
    """Fields that are not keys of this table: nested blocks of keys, and the open groups
    (typed Any, filled by the options of eva/conf/<group>/)."""
    return dataclasses.is_dataclass(default_of(f)) or f.type is typing.Any


def key_rows(
    cls: type, prefix: str = "", starts_from: dict | None = None, missing: str = "required"
) -> list[list[str]]:
    """One table row per key of a dataclass: key, type, default, what it does.

    `starts_from` holds the values a run starts from where eva/conf/train.yaml sets them
    (they override the dataclass default, e.g. dataset.root from $EVA_DATA); `missing` is
    what the default column says for a key without a default.
    """
    comments = member_comments(cls)
    starts_from = starts_from or {}
    rows = []
    for f in dataclasses.fields(cls):
        if is_section(f):
            continue
        value = starts_from.get(f.name, default_of(f))
        shown = missing if value == MISSING else code(yaml_value(value))
        what = md_text(comments.get(f.name, ""))
        choices = _enum_of(f.type)
        if choices is not None and enum_notes(choices):
            what = "; ".join(filter(None, [what, md_text(enum_notes(choices))]))
        rows.append([code(prefix + f.name), md_text(type_name(f.type)), shown, what])
    return rows


def key_table(
    cls: type, prefix: str = "", starts_from: dict | None = None, missing: str = "required"
) -> str:
    return table(["key", "type", "default", "what"], key_rows(cls, prefix, starts_from, missing))


# --------------------------------------------------------------------------- YAML options


def yaml_comments(path: Path) -> tuple[list[str], dict[str, str]]:
    """(the file's leading comment lines, {top-level key: its comments}). A key's comments
    are the comment lines right above it and the one at the end of its line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    leading, i = [], 0
    while i < len(lines) and lines[i].lstrip().startswith("#"):
        text = lines[i].lstrip()[1:]
        if not text.strip().startswith("@package"):
            leading.append(text[1:] if text.startswith(" ") else text)
        i += 1
    per_key, above = {}, []
    for line in lines[i:]:
        if line.lstrip().startswith("#"):
            above.append(line.lstrip()[1:].strip())
            continue
        match = re.match(r"^([A-Za-z_][\w.]*):(.*)$", line)  # a top-level key
        if match:
            trailing = re.search(r"\s#\s?(.*)$", match.group(2))
            said = above + ([trailing.group(1).strip()] if trailing else [])
            per_key[match.group(1)] = " ".join(said)
        above = []  # a comment belongs to the line right below it only
    return leading, per_key


def comment_markdown(lines: list[str]) -> str:
    """Leading comment lines as markdown: prose joined into paragraphs, indented lines
    (commands in the comment) as a code block."""
    out, prose, commands = [], [], []

    def flush_prose():
        if prose:
            out.append(md_text(" ".join(prose)))
            prose.clear()

    def flush_commands():
        if commands:
            out.append("```bash\n" + "\n".join(commands) + "\n```")
            commands.clear()

    for line in lines:
        if line.startswith("  "):
            flush_prose()
            commands.append(line.strip())
        elif line.strip():
            flush_commands()
            prose.append(line.strip())
        else:
            flush_prose()
            flush_commands()
    flush_prose()
    flush_commands()
    return "\n\n".join(out)


def load_yaml(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}


def option_section(group: str, option: str, path: Path) -> str:
    """One option of a group: heading, leading comment, builder, its keys and values."""
    leading, comments = yaml_comments(path)
    values = load_yaml(path)
    eva_keys = {f.name for f in dataclasses.fields(schemas.GROUP_KEYS[group])}
    parts = [f"#### {group}={option}", comment_markdown(leading)]
    target = values.get(TARGET)
    parts.append(f"Builder: {code(target)}." if target else "Builder: none.")
    rows = []
    for key, value in values.items():
        if key in HYDRA_KEYS:
            continue
        note = md_text(comments.get(key, ""))
        if key in eva_keys:
            note = "; ".join(filter(None, ["eva's key", note]))
        rows.append([code(f"{group}.{key}"), code(yaml_value(value)), note])
    if rows:
        parts.append(table(["key", "value", "note"], rows))
    return "\n\n".join(p for p in parts if p)


def group_section(group: str, options: list[str], starts_from: dict, default: str) -> str:
    keys = schemas.GROUP_KEYS[group]
    provided = ", ".join(code(k) for k in PROVIDED.get(group, ())) or "nothing"
    intro = (
        f"Pick one with {code(f'{group}=NAME')}: "
        + ", ".join(code(o) for o in options)
        + f" (default {code(default)}). eva passes the builder {provided} itself, where its "
        + f"signature takes them. eva's own keys of every {group} option "
        + f"({code(keys.__name__)}, typed and checked by eva):"
    )
    own = key_table(keys, f"{group}.", starts_from.get(group), missing="set by each option")
    parts = [f"### {group}", intro, own]
    parts += [option_section(group, o, CONF_DIR / group / f"{o}.yaml") for o in options]
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- presets


def flatten(values: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested keys as dotted ones: {"optimizer": {"lr": 0.1}} -> [("optimizer.lr", 0.1)]."""
    flat = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat += flatten(value, f"{prefix}{key}.")
        else:
            flat.append((f"{prefix}{key}", value))
    return flat


def defaults_overrides(group: str, defaults: list) -> list[str]:
    """A preset's defaults list as overrides: `override /model: x` -> model=x; another
    preset of the same group (`- session10`) -> experiment=session10."""
    said = []
    for entry in defaults:
        if isinstance(entry, str):
            said.append(f"{group}={entry}" if entry != "_self_" else "")
            continue
        for key, value in entry.items():
            said.append(f"{key.removeprefix('override').strip().lstrip('/')}={yaml_value(value)}")
    return [s for s in said if s]


def preset_section(group: str, option: str, path: Path, skip: str | None = None) -> str:
    """A preset of a _global_ group (experiment, debug, hparams_search): its leading comment
    and every key it sets, as overrides. `skip`: a nested key shown as a table instead."""
    leading, _ = yaml_comments(path)
    values = load_yaml(path)
    sets = defaults_overrides(group, values.pop("defaults", []))
    table_part = ""
    if skip:
        node = values
        *parents, last = skip.split(".")
        for parent in parents:
            node = node.get(parent, {})
        space = node.pop(last, {}) or {}
        rows = [[code(k), code(yaml_value(v))] for k, v in space.items()]
        table_part = table(["key", "searched over"], rows) if rows else ""
    sets += [f"{k}={yaml_value(v)}" for k, v in flatten(values)]
    parts = [f"#### {group}={option}", comment_markdown(leading)]
    if sets:
        parts.append("Sets: " + ", ".join(code(s) for s in sets) + ".")
    parts.append(table_part)
    return "\n\n".join(p for p in parts if p)


def presets_section(group: str, options: list[str], intro: str, skip: str | None = None) -> str:
    parts = [f"### {group}", intro]
    parts += [preset_section(group, o, CONF_DIR / group / f"{o}.yaml", skip) for o in options]
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- the reference


def run_level_section(starts_from: dict) -> str:
    intro = (
        f"Typed by {code('TrainConfig')} in {code(SCHEMA_FILE)}: a wrong type, an unknown key "
        "or a value outside a list of choices fails when the config is composed. The default "
        f"is what {code('eva/conf/train.yaml')} sets, else the schema's."
    )
    return "\n\n".join(
        ["### Run-level keys", intro, key_table(schemas.TrainConfig, "", starts_from)]
    )


def nested_section(name: str, cls: type, starts_from: dict) -> str:
    parts = [f"### {name}.*", md_text(inspect.getdoc(cls) or "")]
    if name == "tracking":  # a group of its own: its one option sets these keys
        options = config_groups(CONF_DIR).get("tracking", [])
        leading, _ = yaml_comments(CONF_DIR / "tracking" / f"{options[0]}.yaml")
        parts.append(
            f"Set by the group {code('tracking')}, option "
            + ", ".join(code(o) for o in options)
            + f" (the default): {comment_markdown(leading)}"
        )
    parts.append(key_table(cls, f"{name}.", starts_from.get(name)))
    return "\n\n".join(p for p in parts if p)


def default_options() -> dict[str, str]:
    """{group: its default option} from the defaults list of eva/conf/train.yaml."""
    chosen = {}
    for entry in load_yaml(CONF_DIR / "train.yaml").get("defaults", []):
        if isinstance(entry, dict):
            chosen.update({k: yaml_value(v) for k, v in entry.items()})
    return chosen


def run_starts_from() -> dict:
    """What eva/conf/train.yaml sets, plus the tracking option's values: where a run starts
    before any option, preset or override."""
    values = load_yaml(CONF_DIR / "train.yaml")
    values.pop("defaults", None)
    values.pop("hydra", None)
    tracking = load_yaml(CONF_DIR / "tracking" / "mlflow.yaml")
    values["tracking"] = {**tracking, **values.get("tracking", {})}
    return values


def generate() -> str:
    """The whole block, as markdown."""
    groups = config_groups(CONF_DIR)
    starts_from, defaults = run_starts_from(), default_options()
    parts = [
        f"Generated by {code('python tools/reference.py')} from {code(SCHEMA_FILE)} and "
        f"{code('eva/conf/')}.",
        run_level_section(starts_from),
        *(nested_section(name, cls, starts_from) for name, cls in NESTED.items()),
        *(
            group_section(g, groups.get(g, []), starts_from, defaults.get(g, "null"))
            for g in schemas.GROUP_KEYS
        ),
        presets_section(
            "experiment",
            groups.get("experiment", []),
            f"Presets that set several groups and keys at once ({code('experiment=NAME')}, "
            "then any override). What each one sets, as the overrides it amounts to:",
        ),
        presets_section(
            "debug",
            groups.get("debug", []),
            f"{code('debug=default')} shrinks a run to a quick check; it overrides sizes only, "
            "so it combines with any option.",
        ),
        presets_section(
            "hparams_search",
            groups.get("hparams_search", []),
            f"With {code('-m')}: an Optuna search. The search space is "
            f"{code('hydra.sweeper.params')}; override any of it on the command line.",
            skip="hydra.sweeper.params",
        ),
    ]
    return "\n\n".join(parts) + "\n"


def is_current(page: Path = PAGE) -> bool:
    return read_block(page, BLOCK).strip("\n") == generate().strip("\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = p.parse_args(argv)
    page = PAGE.relative_to(REPO)
    if args.check:
        if not is_current():
            print(f"{page}: block {BLOCK} is out of date: run python tools/reference.py")
            return 1
        return 0
    changed = replace_block(PAGE, BLOCK, generate())
    print(f"{page}: block {BLOCK} {'rewritten' if changed else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
