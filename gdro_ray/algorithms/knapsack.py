"""Rollouts per prompt by the value of a non-zero gradient (Rollout-GDRO's `knapsack` mode).

A GRPO group of n rollouts on a prompt with per-rollout success rate p carries a gradient only
when its rewards differ; with 0/1 rewards that happens with probability

    V(n, p) = 1 − pⁿ − (1 − p)ⁿ.

Given a fixed total of rollouts for a batch, the allocation that maximises the expected number
of gradient-carrying groups, Σ_i V(n_i, p̂_i) subject to Σ_i n_i = total and n_min ≤ n_i ≤ n_max,
is a separable resource allocation problem (Knapsack-RL, arXiv 2509.25849, with its information
gain set to 1: std-normalised GRPO gives every informative group the same scale). The marginal
value of one more rollout,

    Δ(n, p) = V(n+1, p) − V(n, p) = pⁿ(1 − p) + (1 − p)ⁿ p,

falls strictly with n for 0 < p < 1 (each term is multiplied by p or 1 − p < 1), so V is concave
in n and the greedy rule is exact: start every prompt at n_min and hand out the remaining
rollouts one at a time to the prompt whose next rollout is worth most. A heap keyed by
(−Δ, rollouts so far, position) makes that O(R log B) for R rollouts handed out over B prompts and
breaks ties towards the prompt with fewer rollouts, then the earlier position (any tie-break is
optimal; this one is a function of the inputs alone). Prompts with equal p̂, even p̂ = 0 where
every Δ is 0, get their rollouts round-robin: n̄ each when the budget is B·n̄.

What the rule does: a prompt near p = ½ is saturated after a few rollouts (V(4, ½) = 0.875),
while a hard prompt (p = 0.05) still gains ~0.03 per rollout at n = 12, so hard-but-solvable
prompts get the most and prompts that never (p = 0) or always (p = 1) succeed get n_min: their
marginal value is exactly 0.
"""
from __future__ import annotations

import heapq

import numpy as np

from gdro_ray.algorithms.validation import as_float_array


def gradient_probability(n, p) -> np.ndarray:
    """V(n, p) = 1 − pⁿ − (1 − p)ⁿ: the chance that n rollouts do not all agree."""
    n, p = np.asarray(n, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return 1.0 - p**n - (1.0 - p) ** n


def marginal_value(n, p) -> np.ndarray:
    """Δ(n, p) = V(n+1, p) − V(n, p), in the closed form that has no cancellation."""
    n, p = np.asarray(n, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return p**n * (1.0 - p) + (1.0 - p) ** n * p


def knapsack_allocate(success, n_min: int, n_max: int, total: int) -> np.ndarray:
    """Integer rollouts per prompt, Σ = total, each in [n_min, n_max], maximising Σ V(n_i, p_i).

    `success` is each prompt's estimated per-rollout success rate in [0, 1]. Raises ValueError
    when the total cannot be met within the bounds.
    """
    p = as_float_array(success, "success")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("success rates must lie in [0, 1]")
    n_min, n_max, total = int(n_min), int(n_max), int(total)
    if not 1 <= n_min <= n_max:
        raise ValueError(f"need 1 <= n_min <= n_max, got n_min={n_min}, n_max={n_max}")
    size = p.size
    if not size * n_min <= total <= size * n_max:
        raise ValueError(f"total={total} rollouts cannot be split over {size} prompts within [{n_min}, {n_max}]")
    left = total - size * n_min
    if left == 0 or n_min == n_max:
        return np.full(size, n_min, dtype=np.int64)
    rates = p.tolist()  # plain floats: one pop costs a few hundred ns, not numpy's per-call overhead
    counts = [n_min] * size
    heap = [(-_delta(n_min, r), n_min, i) for i, r in enumerate(rates)]
    heapq.heapify(heap)
    while left > 0:
        _, _, i = heapq.heappop(heap)
        counts[i] += 1
        left -= 1
        if counts[i] < n_max:  # a prompt at its cap leaves the heap
            heapq.heappush(heap, (-_delta(counts[i], rates[i]), counts[i], i))
    return np.asarray(counts, dtype=np.int64)


def _delta(n: int, p: float) -> float:
    return p**n * (1.0 - p) + (1.0 - p) ** n * p
