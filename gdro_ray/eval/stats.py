"""Paired bootstrap confidence intervals over prompts and seeds (pure numpy).

The question it answers: "is method B better than method A (or the final model better than
the base), and by how much?", when both were scored on the same held-out prompts and with the
same seeds. The data are per-prompt scores (mean@k or pass@k of one prompt) in arrays of
shape [seeds, prompts]; `a[s, p]` and `b[s, p]` belong to the same seed and prompt (paired).

Algorithm (a two-level, crossed bootstrap): each replicate draws seeds with replacement and,
independently, prompts with replacement (within each stratum when `strata` is given, so a
tier-balanced split stays balanced), applies the same draw to `a` and `b` (pairing), and
computes the statistic on the resampled means: the difference mean(b) − mean(a) or the
relative change mean(b) / mean(a) − 1. The interval is the percentile interval of the
replicates. Resampling the prompts shared by all seeds once per replicate keeps the prompt
effect common to every seed, as it is in the data; resampling the seeds carries the
run-to-run spread. With one seed only the prompts are resampled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    level: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level}


def _as_2d(x) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"scores must be [seeds, prompts] (or [prompts]), got shape {arr.shape}")
    return arr


def _statistic(mean_a: np.ndarray, mean_b: np.ndarray, kind: str) -> np.ndarray:
    if kind == "difference":
        return mean_b - mean_a
    if kind == "relative":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(mean_a > 0, mean_b / mean_a - 1.0, np.nan)
    raise ValueError(f"kind must be 'difference' or 'relative', got {kind!r}")


def _prompt_draws(num_prompts: int, strata, rng: np.random.Generator, reps: int) -> np.ndarray:
    """[reps, prompts] prompt indices drawn with replacement (within each stratum if given)."""
    if strata is None:
        return rng.integers(0, num_prompts, size=(reps, num_prompts))
    strata = np.asarray(strata)
    if strata.shape != (num_prompts,):
        raise ValueError(f"strata must have one label per prompt ({num_prompts}), got shape {strata.shape}")
    draws = np.empty((reps, num_prompts), dtype=np.int64)
    col = 0
    for label in np.unique(strata):
        members = np.flatnonzero(strata == label)
        draws[:, col:col + len(members)] = members[rng.integers(0, len(members), size=(reps, len(members)))]
        col += len(members)
    return draws


def paired_bootstrap(a, b, kind: str = "relative", strata=None, reps: int = 4000, level: float = 0.95,
                     seed: int = 0) -> Interval:
    """Percentile CI of mean(b) − mean(a) (`difference`) or mean(b)/mean(a) − 1 (`relative`).

    `a`, `b`: paired per-prompt scores, [seeds, prompts] or [prompts]. `strata`: optional
    per-prompt labels (e.g. tiers) to resample within. Deterministic in `seed`.
    """
    a2, b2 = _as_2d(a), _as_2d(b)
    if a2.shape != b2.shape:
        raise ValueError(f"paired scores need equal shapes, got {a2.shape} and {b2.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    seeds, prompts = a2.shape
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, seeds, size=(reps, seeds)) if seeds > 1 else np.zeros((reps, 1), dtype=np.int64)
    prompt_idx = _prompt_draws(prompts, strata, rng, reps)
    # mean over the drawn prompts for every seed ([reps, seeds]), then over the drawn seeds
    per_seed_a = a2[:, prompt_idx].mean(2).T
    per_seed_b = b2[:, prompt_idx].mean(2).T
    mean_a = np.take_along_axis(per_seed_a, seed_idx, 1).mean(1)
    mean_b = np.take_along_axis(per_seed_b, seed_idx, 1).mean(1)
    reps_stat = _statistic(mean_a, mean_b, kind)
    reps_stat = reps_stat[np.isfinite(reps_stat)]
    estimate = float(_statistic(np.array([a2.mean()]), np.array([b2.mean()]), kind)[0])
    if reps_stat.size == 0:
        return Interval(estimate, float("nan"), float("nan"), level)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(reps_stat, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), level)
