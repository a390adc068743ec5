"""The params syntax, the grid, sampler seeds and quoted override values (no sweep runs)."""

import json

import pytest

from evasweep.errors import SweepError
from evasweep.overrides import quoted
from evasweep.sampling import derived_seed
from evasweep.space import grid, parse_space


@pytest.mark.parametrize(
    "value, message",
    [
        ("interval(0.5, 0.1)", "interval needs low < high"),
        ("tag(log, interval(0.0, 1.0))", "a log interval needs low > 0"),
        ("interval(0.1,", "cannot parse"),
    ],
)
def test_bad_params_fail_with_one_line_naming_them(value, message):
    with pytest.raises(SweepError, match=message) as info:
        parse_space({"model.dropout": value}, [])
    assert "\n" not in str(info.value)


def test_grid_lists_every_point_and_refuses_continuous_ranges():
    space = parse_space({"a": "choice(1, 2)", "b": "range(0.0, 0.5, 0.25)"}, [])
    assert grid(space) == {"a": [1, 2], "b": [0.0, 0.25, 0.5]}
    with pytest.raises(SweepError, match="sampler=grid needs finite values; c"):
        grid(parse_space({"c": "interval(0.0, 1.0)"}, []))


def test_sampler_seeds_differ_per_resume_and_worker_and_repeat_otherwise():
    assert derived_seed(None, 0, 0) is None
    seeds = {derived_seed(1, n, w) for n in (0, 4) for w in (0, 1)}
    assert len(seeds) == 4
    assert derived_seed(1, 4, 1) == derived_seed(1, 4, 1)
    assert derived_seed(1, 0, 0, "host-a") != derived_seed(1, 0, 0, "host-b")


TEXTS = [
    "",
    "plain",
    "sqlite:////tmp/a b/optuna.db",
    "it's",
    "''",
    'say "hi"',
    "back\\slash",
    "ends with a backslash\\",
    "ends with two\\\\",
    "\\'",
    "\\\\'x",
    "a=b, c=[1, 2]",
    "choice(a, b)",
    "  spaces  and\ttab ",
    "ünïcode ✓",
    json.dumps({"a": [1, "b c"], "q": "it's", "p": "C:\\dir\\", "n": None}),
]


@pytest.mark.parametrize("text", TEXTS)
def test_quoted_values_read_back_unchanged_by_hydra(text):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    override = parser.parse_override(f"++hydra.job.env_set.KEY={quoted(text)}")
    assert not override.is_sweep_override()
    assert override.value() == text
    # and as a whole command line, next to other overrides
    lines = parser.parse_overrides([f"a={quoted(text)}", f"b={quoted(text + 'x')}"])
    assert [o.value() for o in lines] == [text, text + "x"]
