"""Names of held-out evaluation metrics, as `checkpoint.keep_best` and the eval record spell them.

An evaluation result (`gdro_ray.eval.evaluate.aggregate`) holds statistics for the pooled set,
the worst tier and each tier. A metric name is `<group>/<stat>`: group `pooled`, `worst_tier` or
`tier<t>`; stat `pass_at_k` or `mean_at_k`, also written `pass@K` / `mean@K` where K must be the
evaluation's k (a `pass@4` asked of a k=8 evaluation would silently be a different number).
Pure: no Ray, no torch; the config loader reads it.
"""
from __future__ import annotations

import math
import re

STATS = ("pass_at_k", "mean_at_k")
_AT = re.compile(r"^(pass|mean)@(\d+)$")


def parse_eval_metric(name: str, k: int) -> tuple[str, str]:
    """`pooled/mean@8` → (`pooled`, `mean_at_k`); raises ValueError with the reason."""
    group, sep, stat = name.partition("/")
    if not sep or not group or not stat:
        raise ValueError(f"expected <group>/<metric> such as pooled/pass_at_k, got {name!r}")
    if not (group in ("pooled", "worst_tier") or (group.startswith("tier") and len(group) > 4)):
        raise ValueError(f"group must be pooled, worst_tier or tier<t>, got {group!r}")
    m = _AT.match(stat)
    if m:
        if int(m.group(2)) != k:
            raise ValueError(f"{stat} asks for k={m.group(2)} but evaluation samples eval.k={k}")
        stat = f"{m.group(1)}_at_k"
    if stat not in STATS:
        raise ValueError(f"metric must be one of {', '.join(STATS)}, pass@{k} or mean@{k}, got {stat!r}")
    return group, stat


def flat_metrics(result: dict, stats: tuple[str, ...] | None = STATS) -> dict[str, float]:
    """`{"pooled/pass_at_k": …, "worst_tier/mean_at_k": …, "tier3/pass_at_k": …}` of one result;
    `stats` names the statistics kept (None: every numeric field, as the loggers' eval tags
    have it); non-finite and missing values are left out."""
    out: dict[str, float] = {}

    def put(group: str, values) -> None:
        if not isinstance(values, dict):
            return
        for stat in (values if stats is None else stats):
            v = values.get(stat)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
                out[f"{group}/{stat}"] = float(v)

    put("pooled", result.get("pooled"))
    put("worst_tier", result.get("worst_tier"))
    for tier, values in (result.get("per_tier") or {}).items():
        put(f"tier{tier}", values)
    return out


def metric_value(result: dict, name: str, k: int) -> float | None:
    """The value of metric `name` in `result`, or None when the result does not have it."""
    group, stat = parse_eval_metric(name, k)
    return flat_metrics(result).get(f"{group}/{stat}")
