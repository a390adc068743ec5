"""Runs that differ only in seed, as groups: mean ± std of their score.

A plain multirun such as `-m seed=1,2,3 model=session6,ultimus` trains each model three
times; its parent run (eva/tracking/callback.py) records, for each group of children whose
params are the same but for `seed` (and keys that leave the result alone: device, loader
workers, tracking), the mean and sample standard deviation of their best_test_acc.
"""

import math
import statistics

from eva.config.schemas import is_runtime_key

SCORE = "best_test_acc"
IGNORED = ("seed", "name", "derived.device")  # what may differ within a group


def group_key(params: dict) -> tuple:
    return tuple(
        sorted((k, v) for k, v in params.items() if k not in IGNORED and not is_runtime_key(k))
    )


def seed_groups(children) -> list[dict]:
    """Groups of 2 or more finished children (MLflow runs) that differ only in seed, in
    the order of their first run: {"label", "seeds", "values", "mean", "std", "run_ids"}.
    label: the params that tell the groups apart (`model.name=ultimus`), or "all"."""
    groups: dict[tuple, list] = {}
    for run in sorted(children, key=lambda r: r.info.start_time):
        if run.info.status == "FINISHED" and SCORE in run.data.metrics:
            groups.setdefault(group_key(run.data.params), []).append(run)
    groups = {k: runs for k, runs in groups.items() if len(runs) > 1}
    if not groups:
        return []
    # the params whose value differs between the groups name them
    keys = [dict(k) for k in groups]
    varying = sorted({k for d in keys for k in d if len({d2.get(k) for d2 in keys}) > 1})
    out = []
    for key, runs in groups.items():
        params = dict(key)
        values = [r.data.metrics[SCORE] for r in runs]
        out.append(
            {
                "label": " ".join(f"{k}={params.get(k)}" for k in varying) or "all",
                "seeds": [r.data.params.get("seed") for r in runs],
                "values": values,
                "mean": math.fsum(values) / len(values),
                "std": statistics.stdev(values),
                "run_ids": [r.info.run_id for r in runs],
            }
        )
    return out


def group_records(groups: list[dict]) -> tuple[dict, dict]:
    """(metrics, tags) of the groups for the parent run: seed_group.<i>.mean_best_test_acc
    and .std_, and a tag per group that reads `model.name=x: 0.9120 ± 0.0040 over seeds 1, 2`."""
    metrics, tags = {}, {}
    for i, g in enumerate(groups):
        metrics[f"seed_group.{i}.mean_{SCORE}"] = g["mean"]
        metrics[f"seed_group.{i}.std_{SCORE}"] = g["std"]
        seeds = ", ".join(str(s) for s in g["seeds"])
        tags[f"seed_group.{i}"] = (
            f"{g['label']}: {SCORE} {g['mean']:.4f} ± {g['std']:.4f} over seeds {seeds}"
        )
    return metrics, tags
