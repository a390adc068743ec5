"""The command line's error contract: a mistake costs one line, not a traceback hunt.

Bad input (eva's own checks, Hydra composition, OmegaConf types, override syntax) prints
`Error: <one line naming the bad value>` on stderr and exits 1. Anything else is a bug and
keeps its traceback. HYDRA_FULL_ERROR=1 shows the full traceback for everything.

Hydra prints its own multi-line report unless HYDRA_FULL_ERROR=1 is set; eva sets it for
the duration of the command so that the exception reaches this module, which formats it.
"""

import os
import re
import sys

from eva.errors import EvaError

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
SHORT_ERRORS_ENV = "EVA_SHORT_ERRORS"  # set while eva itself asked Hydra to re-raise


def full_errors() -> bool:
    """Did the user ask for tracebacks (HYDRA_FULL_ERROR=1 set by them, not by eva)?"""
    return os.environ.get(FULL_ERROR_ENV) == "1" and not os.environ.get(SHORT_ERRORS_ENV)


def _detail_lines(text: str) -> list[str]:
    """The meaningful lines of a Hydra/OmegaConf message (no key/type trailer, no blanks)."""
    skip = ("full_key:", "object_type=", "reference_type=", "Config search path", "provider=")
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith(skip)]


def one_line(e: BaseException) -> str:
    """A user error as one line that names the bad value."""
    from hydra.errors import MissingConfigException, OverrideParseException

    from evasweep.errors import SweepError

    if isinstance(e, EvaError | SweepError):
        return " ".join(str(e).split())
    if isinstance(e, MissingConfigException) and e.options is not None:
        # "In 'train': Could not find 'model/nosuch'" + the group's options
        found = re.search(r"Could not find '([^']+)/([^'/]+)'", str(e))
        if found:
            group, name = found.groups()
            return (
                f"{group}={name}: no such option (available: {', '.join(e.options)}; "
                "your own: hydra.searchpath=[file://$PWD/conf] with conf/" + group + "/*.yaml)"
            )
    if isinstance(e, OverrideParseException):
        reason = _detail_lines(e.message)[0]
        return f"{e.override}: not a valid override ({reason}; see hydra.cc override grammar)"
    lines = _detail_lines(str(e))
    cause = e.__cause__
    if cause is not None and cause is not e:
        lines += [line for line in _detail_lines(str(cause)) if line not in lines]
    merged = re.match(r"Error merging override (\S+)", lines[0]) if lines else None
    if merged and len(lines) > 1:  # epochs=abc: Value 'abc' ... could not be converted
        return f"{merged.group(1)}: {lines[1]}"
    unknown = re.match(r"Could not override '([^']+)'", lines[0]) if lines else None
    if unknown:  # epoch=3 (a typo of epochs): the key is not in the schema
        plus = next((line.split()[-1] for line in lines if line.startswith("To append")), "")
        given = plus[1:] if plus.startswith("+") else unknown.group(1)
        why = next((line for line in lines if line.startswith("Key ")), "no such key")
        hint = option_arguments(unknown.group(1))
        if hint:  # model.widht=3: the option's builder says what it takes
            return f"{given}: {hint}"
        return f"{given}: {why} (a new key needs a leading +: {plus or '+key=value'})"
    return "; ".join(lines) or type(e).__name__


def option_arguments(key: str) -> str:
    """For an unknown key of an option group (`model.widht`): which arguments the chosen
    option's builder takes, from the command line's config composed without that key.
    Imports the builder (torch): only on this error path. "" when it cannot tell."""
    group, _, name = key.partition(".")
    if group not in ("model", "dataset", "augment", "optimizer", "scheduler") or "." in name:
        return ""
    try:
        from eva.config import compose_config, options
        from eva.config.validate import PROVIDED, eva_keys

        argv = [a for a in sys.argv[1:] if not a.startswith("-")]
        kept = [a for a in argv if a.lstrip("+~").split("=", 1)[0] != key]
        node = compose_config(kept)[group]
        builder = options.import_target(node[options.TARGET], group)
        names = options.keyword_names(options.signature_of(builder))
        own = [n for n in names if n not in PROVIDED[group]]
        evas = sorted(eva_keys(group) - {"name", *PROVIDED[group]})
        shown = options.target_name(node[options.TARGET])
        return (
            f"{group}={node.name} ({shown}) takes no {name!r}; its arguments: "
            f"{', '.join(own) or 'none'} (eva's keys: {', '.join(evas) or 'none'})"
        )
    except Exception:  # the hint is a courtesy: never let it hide the error itself
        return ""


def is_user_error(e: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from evasweep.errors import SweepError

    return isinstance(e, EvaError | SweepError | HydraException | OmegaConfBaseException)


def run(hydra_main, conf_dir=None) -> None:
    """Call the @hydra.main function with eva's error contract; `--help` is eva's own
    (eva/cli/help.py) when conf_dir, the app's config folder, is given."""
    from eva.cli.startup import pause_gc, resume_gc

    pause_gc()  # until the first loop: a faster start-up (eva/cli/startup.py)
    try:
        _run(hydra_main, conf_dir)
    finally:
        resume_gc()  # a command that never reached a loop (--help, errors, a sweep's end)


def _run(hydra_main, conf_dir) -> None:
    from eva.cli.help import print_help, wants_help

    main = hydra_main
    if conf_dir is not None and wants_help(sys.argv[1:]):
        main = lambda: print_help(conf_dir, sys.argv[1:])  # noqa: E731
    if full_errors() or os.environ.get(SHORT_ERRORS_ENV):  # tracebacks, or already wrapped
        main()
        return
    saved = os.environ.get(FULL_ERROR_ENV)
    os.environ[FULL_ERROR_ENV] = os.environ[SHORT_ERRORS_ENV] = "1"
    try:
        main()
    except Exception as e:
        if not is_user_error(e):
            raise  # a bug: keep the traceback
        print(f"Error: {one_line(e)}", file=sys.stderr)
        sys.exit(1)
    finally:
        os.environ.pop(SHORT_ERRORS_ENV, None)
        if saved is None:
            os.environ.pop(FULL_ERROR_ENV, None)
        else:
            os.environ[FULL_ERROR_ENV] = saved
