"""The search space: hydra-optuna-sweeper's `params` syntax <-> Optuna distributions.

Each entry of `hydra.sweeper.params` (and each sweep override on the command line, which
wins over the config) is a Hydra override value, read with Hydra's own override parser and
given the meaning hydra-optuna-sweeper 1.3 gives it, so users' sweep files carry over:

    choice(a, b, c)              categorical
    range(1, 8) / range(1, 8, 2) integers from 1 to 8 *inclusive* (float bounds: stepped floats)
    interval(0.0, 0.5)           uniform float (Hydra reads interval bounds as floats)
    int(interval(1, 100))        uniform integer
    tag(log, interval(1e-3, 1))  log-uniform (floats or ints)
    0.1, adam                    not a sweep: the same value for every trial

The reverse, `describe(distribution)`, writes a distribution back in that syntax (for the
logs, MLflow and optimization_results.yaml); parsing it again gives the same distribution.
"""

from dataclasses import dataclass, field

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from evasweep.errors import SweepError
from evasweep.overrides import override_value, quoted


@dataclass
class SearchSpace:
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key -> override line, every trial

    def describe(self) -> dict[str, str]:
        return {key: describe(d) for key, d in self.distributions.items()}


def from_search_space(search_space: dict) -> dict[str, str]:
    """hydra-optuna-sweeper's older form, {key: {type, low, high, step, log, choices}}, as
    params lines: `{x: {type: float, low: 0, high: 1}}` -> `{x: "interval(0.0, 1.0)"}`."""
    params = {}
    for key, d in search_space.items():
        kind = str(d.get("type", "")).rsplit(".", 1)[-1]  # a name, or the enum DistributionType
        low, high, step, log = d.get("low"), d.get("high"), d.get("step"), d.get("log", False)
        if kind == "categorical" and d.get("choices"):
            values = [quoted(c) if isinstance(c, str) else override_value(c) for c in d.choices]
            params[key] = f"choice({', '.join(values)})"
        elif kind in ("int", "float") and low is not None and high is not None:
            cast = int if kind == "int" else float
            bounds = f"{cast(low)!r}, {cast(high)!r}"
            if log:
                params[key] = f"tag(log, {'int(' if kind == 'int' else ''}interval({bounds})"
                params[key] += "))" if kind == "int" else ")"
            elif step is not None:
                params[key] = f"range({bounds}, {cast(step)!r})"
            else:
                params[key] = f"int(interval({bounds}))" if kind == "int" else f"interval({bounds})"
        else:
            raise SweepError(
                f"hydra.sweeper.search_space.{key}: expected type int or float with low and "
                f"high, or type categorical with choices; got {dict(d)}"
            )
    return params


def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_space(params: dict | None, arguments: list[str]) -> SearchSpace:
    """params from the sweeper config first, then the command line's task overrides."""
    from hydra.errors import HydraException

    lines = [f"{key}={value}" for key, value in (params or {}).items()]
    lines += list(arguments)
    space = SearchSpace()
    parser = _parser()
    for line in lines:
        try:
            override = parser.parse_override(line)
        except HydraException as e:  # bad syntax, or a bad argument to a sweep function
            reason = str(e).splitlines()[0]
            raise SweepError(f"hydra.sweeper.params: cannot parse {line!r}: {reason}") from None
        key = override.get_key_element()
        space.distributions.pop(key, None)  # a later entry for a key replaces an earlier one
        space.fixed.pop(key, None)
        if override.is_sweep_override():
            space.distributions[key] = to_distribution(override, line)
        else:
            space.fixed[key] = override.input_line
    return space


def to_distribution(override, line: str) -> BaseDistribution:
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep, Transformer

    value = override.value()
    if isinstance(value, RangeSweep):
        _check_range(value, line)
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if not choices:
            raise SweepError(f"{line!r}: the sweep has no values to choose from")
        for choice in choices:
            if not isinstance(choice, str | int | float | bool | type(None)):
                raise SweepError(f"{line!r}: a choice must be a str, number, bool or null")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(x, float) for x in (start, stop, step)):
            return FloatDistribution(float(start), float(stop), step=float(step))
        return IntDistribution(int(start), int(stop), step=int(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if value.start >= value.end:
            raise SweepError(f"{line!r}: interval needs low < high")
        if log and value.start <= 0:
            raise SweepError(f"{line!r}: a log interval needs low > 0")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise SweepError(f"{line!r}: this kind of sweep is not supported by the Optuna sweeper")


def _check_range(value, line: str) -> None:
    """range(low, high[, step]) counts up from low to high: Optuna has no other kind."""
    low, high, step = value.start, value.stop, value.step
    if low is None or high is None or step is None or low > high or step <= 0:
        descending = (step is not None and step < 0) or (None not in (low, high) and low > high)
        raise SweepError(
            f"{line!r}: range(low, high[, step]) needs low <= high and a positive step, "
            f"got low={low}, high={high}, step={step}"
            + (" (for a descending order: choice(...))" if descending else "")
        )


def _number(x) -> str:
    return repr(x)  # shortest text that reads back as the same float / int


def describe(d: BaseDistribution) -> str:
    """The params syntax for a distribution: parse_space reads it back unchanged."""
    if isinstance(d, CategoricalDistribution):
        return "choice(" + ", ".join(override_value(c) for c in d.choices) + ")"
    if isinstance(d, IntDistribution):
        if d.log:
            return f"tag(log, int(interval({d.low}, {d.high})))"
        if d.step != 1:
            return f"range({d.low}, {d.high}, {d.step})"
        return f"int(interval({d.low}, {d.high}))"
    if isinstance(d, FloatDistribution):
        bounds = f"{_number(float(d.low))}, {_number(float(d.high))}"
        if d.step is not None:
            return f"range({bounds}, {_number(float(d.step))})"
        return f"tag(log, interval({bounds}))" if d.log else f"interval({bounds})"
    raise TypeError(f"no params syntax for {d!r}")


def trial_overrides(params: dict) -> list[str]:
    """`key=value` lines for a trial's sampled values, as Hydra reads them back."""
    return [f"{key}={override_value(value)}" for key, value in params.items()]


def grid(space: SearchSpace) -> dict[str, list]:
    """GridSampler's search space: every value of each (finite) distribution."""
    values: dict[str, list] = {}
    for key, d in space.distributions.items():
        if isinstance(d, CategoricalDistribution):
            values[key] = list(d.choices)
        elif isinstance(d, IntDistribution) and not d.log:
            values[key] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = int(round((d.high - d.low) / d.step))
            values[key] = [d.low + i * d.step for i in range(n + 1)]
        else:
            raise SweepError(
                f"sampler=grid needs finite values; {key}: {describe(d)} is continuous "
                "(use choice(...) or range(...))"
            )
    return values


def probe_values(d: BaseDistribution) -> list:
    """The values of a distribution checked before any trial: every choice, or both bounds."""
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    return [d.low] if d.low == d.high else [d.low, d.high]


def probes(space: SearchSpace) -> list[tuple[dict, list[str]]]:
    """(changes, overrides) lists that compose every value of probe_values() once, in as
    few lists as the key with the most values needs (each compose costs a Hydra load).

    The first list has every key at its first value (first choice, low bound) and no
    changes; list r then moves every key that has an r-th value to it ({key: value}), the
    others staying at their first value. A list that fails while the first one composes
    holds a value at fault among its changes, which the sweeper then tries one by one.
    """
    values = {key: probe_values(d) for key, d in space.distributions.items()}
    base = {key: v[0] for key, v in values.items()}
    fixed = list(space.fixed.values())
    lists: list[tuple[dict, list[str]]] = [({}, [*fixed, *trial_overrides(base)])]
    for r in range(1, max((len(v) for v in values.values()), default=1)):
        changes = {key: v[r] for key, v in values.items() if len(v) > r}
        lists.append((changes, [*fixed, *trial_overrides({**base, **changes})]))
    return lists


def single_probe(space: SearchSpace, key: str, value) -> list[str]:
    """The first list of probes() with only `key` moved to `value`."""
    base = {k: probe_values(d)[0] for k, d in space.distributions.items()}
    return [*space.fixed.values(), *trial_overrides({**base, key: value})]
