"""Per-prompt difficulty signals that feed Prompt-GDRO's scores (docs/algorithms.md).

* ``failure``: 1 − mean reward of the prompt's rollouts (rewards in [0, 1]).
* ``learnability``: mean |A| over the prompt's rollouts with the GRPO advantage
  A = (r − mean)/(std + ε), std the population standard deviation. For 0/1 rewards with a
  fraction p correct this is 2√(p(1−p))·σ/(σ+ε) ≈ 2√(p(1−p)): zero for solved and hopeless
  prompts, largest at p = ½, so it does not chase unsolvable prompts the way ``failure`` does.
* ``surrogate``: a per-prompt loss computed by the learner (the paper's clipped-surrogate
  residual), passed through after validation.

Everything is vectorised over the concatenated rollouts (no loop over the batch beyond
numpy's concatenate of the ragged list).
"""
from __future__ import annotations

import numpy as np

from gdro_ray.algorithms.validation import as_float_array

SIGNAL_KINDS = ("failure", "learnability", "surrogate")
ADVANTAGE_EPS = 1e-6


def _flatten(rewards: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated rewards, the prompt index of each, and the rollouts per prompt."""
    try:
        sizes = np.fromiter(map(len, rewards), dtype=np.int64, count=len(rewards))
        flat = np.concatenate(rewards)
    except (TypeError, ValueError):
        raise ValueError("rewards must be one 1-D sequence of numbers per prompt") from None
    if np.any(sizes < 1):
        raise ValueError(f"every prompt needs at least one reward, prompt {int(np.argmin(sizes))} has none")
    if flat.ndim != 1 or flat.size != sizes.sum():
        raise ValueError("rewards must be one 1-D sequence of numbers per prompt")
    flat = as_float_array(flat, "rewards")
    owner = np.repeat(np.arange(len(rewards)), sizes)
    return flat, owner, sizes


def group_advantages(rewards: list[np.ndarray], eps: float = ADVANTAGE_EPS) -> list[np.ndarray]:
    """GRPO advantages (r − mean)/(std + eps) per prompt group (population std)."""
    if len(rewards) == 0:
        return []
    flat, owner, sizes = _flatten(rewards)
    advantages = _advantages(flat, owner, sizes, eps)
    return np.split(advantages, np.cumsum(sizes)[:-1])


def _advantages(flat: np.ndarray, owner: np.ndarray, sizes: np.ndarray, eps: float) -> np.ndarray:
    mean = np.bincount(owner, weights=flat) / sizes
    centred = flat - mean[owner]
    std = np.sqrt(np.bincount(owner, weights=centred**2) / sizes)
    return centred / (std[owner] + eps)


def difficulty_signal(kind: str, rewards: list[np.ndarray], surrogate: np.ndarray | None = None) -> np.ndarray:
    """One difficulty value per prompt; see the module docstring for the kinds."""
    if kind not in SIGNAL_KINDS:
        raise ValueError(f"signal kind must be one of {SIGNAL_KINDS}, got {kind!r}")
    if kind == "surrogate":
        if surrogate is None:
            raise ValueError("signal kind 'surrogate' needs the per-prompt surrogate losses")
        values = as_float_array(surrogate, "surrogate")
        if len(values) != len(rewards):
            raise ValueError(f"surrogate has {len(values)} values for {len(rewards)} prompts")
        return values
    if len(rewards) == 0:
        return np.zeros(0, np.float64)
    flat, owner, sizes = _flatten(rewards)
    if kind == "failure":
        if flat.min() < 0 or flat.max() > 1:
            raise ValueError(f"failure signal needs rewards in [0, 1], got range [{flat.min()}, {flat.max()}]")
        return 1.0 - np.bincount(owner, weights=flat) / sizes
    advantages = _advantages(flat, owner, sizes, ADVANTAGE_EPS)
    return np.bincount(owner, weights=np.abs(advantages)) / sizes
