"""Rollout-GDRO: the compute adversary, rollouts per prompt under a fixed mean budget (docs/algorithms.md).

Each group b has a variance proxy v_b: an EMA (rate `variance_beta`) of the batch mean of
p̂(1 − p̂) over its prompts, p̂ = c/n, floored at v_min; never-seen groups start at 0.25 (the
largest possible). Given the current batch's group shares s_b, the continuous allocation solves

    min_n Σ_b s_b v_b / n_b   s.t.  Σ_b s_b n_b = n̄,  n_min ≤ n_b ≤ n_max,

whose Lagrangian best response at shadow price μ ≥ 0 is n_b(μ) = clip(√(v_b/μ), n_min, n_max).
Without binding bounds this is the square-root (Neyman) law n_b = n̄ √v_b / Σ_j s_j √v_j.

Finding μ. The derivative of the dual function in μ is the budget gap Σ_b s_b n_b(μ) − n̄, so
μ moves by projected dual ascent on that gap. We take the ascent in y = μ^(−1/2), where the
budget Σ_b s_b clip(√v_b y, n_min, n_max) is piecewise linear and increasing: each step is the
exact step 1/slope of the current piece (a Newton step), kept inside a bracket of y that
shrinks every iteration, with bisection when the step would leave it. It stops when
|gap| ≤ 1e-12·n̄, which takes a few iterations (one when no bound binds), is warm-started from
the previous μ, and projection onto μ ≥ 0 is automatic (μ = y⁻²). The result is the exact
constrained optimum; `shadow_price` and `last_iterations` report μ and the iteration count.
`dual_lr` (the paper's α_μ) is accepted for configuration compatibility; the exact solver
needs no step size.

Integer allocation for the *current* batch's prompts from their own groups: per-prompt largest
remainder. Prompt i gets ⌊n_{g(i)}⌋, and the R = round(B·n̄) − Σ⌊·⌋ leftover rollouts go one each
to the prompts with the largest fractional parts (ties: larger v_b, lower group id, earlier position),
skipping prompts already at n_max. So Σ_i n_i = round(B·n̄) exactly, every n_i ∈ [n_min, n_max],
each prompt gets ⌊n_b⌋ or ⌈n_b⌉, a group's fractional part is spread over its prompts, and a
group with a larger n_b never gets a smaller minimum or maximum than one with a smaller n_b.

`mode="knapsack"` allocates per prompt instead, from each prompt's own estimated success rate
(passed to `allocate`): the greedy maximiser of the expected number of groups with a non-zero
advantage (`knapsack.py`), with the same exact total and bounds. The variance proxies are still
tracked (and reported) in that mode, but they do not decide anything.
"""
from __future__ import annotations

import math

import numpy as np

from gdro_ray.algorithms.knapsack import knapsack_allocate
from gdro_ray.algorithms.validation import as_float_array, as_int_array, check_ids

MODES = ("shadow_price", "uniform", "knapsack")
_TOLERANCE = 1e-12
_MAX_ITERATIONS = 200


class RolloutGDRO:
    """Shadow-price rollout allocator; see the module docstring."""

    def __init__(self, num_groups: int, n_min: int = 2, n_max: int = 12, budget_mean: float = 4,
                 dual_lr: float = 0.05, v_min: float = 0.01, variance_beta: float = 0.4,
                 mode: str = "shadow_price"):
        if int(num_groups) < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        if int(n_min) != n_min or int(n_max) != n_max:
            raise ValueError(f"n_min and n_max must be integers, got n_min={n_min}, n_max={n_max}")
        if n_min < 1:
            raise ValueError(f"n_min must be >= 1, got n_min={n_min}")
        if n_min > n_max:
            raise ValueError(f"n_min={n_min} > n_max={n_max}")
        if not n_min <= budget_mean <= n_max:
            raise ValueError(f"budget_mean={budget_mean} must lie in [n_min={n_min}, n_max={n_max}]")
        if not dual_lr > 0:
            raise ValueError(f"dual_lr must be > 0, got {dual_lr}")
        if not 0 < v_min <= 0.25:
            raise ValueError(f"v_min must be in (0, 0.25], got {v_min}")
        if not 0 < variance_beta <= 1:
            raise ValueError(f"variance_beta must be in (0, 1], got {variance_beta}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.num_groups, self.n_min, self.n_max = int(num_groups), int(n_min), int(n_max)
        self.budget_mean, self.dual_lr, self.v_min = float(budget_mean), float(dual_lr), float(v_min)
        self.variance_beta, self.mode = float(variance_beta), mode
        self.variance = np.full(self.num_groups, 0.25)
        self.shadow_price = 0.0
        self.last_iterations = 0
        self.steps = 0
        self._last_continuous = np.full(self.num_groups, self.budget_mean)
        self._last_realized = np.full(self.num_groups, np.nan)

    # ----------------------------------------------------------------- allocation
    def continuous_allocation(self, shares) -> np.ndarray:
        """Per-group n_b(μ) at the μ where Σ_b shares_b n_b(μ) = n̄ (shares are normalised)."""
        s = as_float_array(shares, "shares")
        if s.shape != (self.num_groups,) or np.any(s < 0) or s.sum() <= 0:
            raise ValueError(f"shares must be {self.num_groups} non-negative numbers with a positive sum")
        s = s / s.sum()
        if self.mode == "uniform":
            self.last_iterations = 0
            self._last_continuous = np.full(self.num_groups, self.budget_mean)
            return self._last_continuous.copy()
        root_v = np.sqrt(self.variance)
        active = s > 0
        lo, hi = self.n_min / root_v[active].max(), self.n_max / root_v[active].min()
        target = self.budget_mean
        iterations = 0
        if target <= self.n_min:
            y = lo  # every active group at n_min: the smallest price that achieves it
        elif target >= self.n_max:
            y = hi
        else:
            y = 1.0 / math.sqrt(self.shadow_price) if self.shadow_price > 0 else target / float(s @ root_v)
            y = min(max(y, lo), hi)
            while iterations < _MAX_ITERATIONS:
                iterations += 1
                n = np.clip(root_v * y, self.n_min, self.n_max)
                gap = float(s @ n) - target
                if abs(gap) <= _TOLERANCE * target:
                    break
                if gap > 0:
                    hi = y
                else:
                    lo = y
                free = (root_v * y > self.n_min) & (root_v * y < self.n_max)
                slope = float(s[free] @ root_v[free])
                step = y - gap / slope if slope > 0 else math.nan
                y = step if lo < step < hi else 0.5 * (lo + hi)
                if hi - lo <= 1e-15 * hi:
                    break
        self.shadow_price = 1.0 / (y * y)
        self.last_iterations = iterations
        self._last_continuous = np.clip(root_v * y, self.n_min, self.n_max)
        return self._last_continuous.copy()

    def allocate(self, group_ids, success=None) -> np.ndarray:
        """Integer rollouts per prompt of the current batch, Σ = round(B·n̄), each in [n_min, n_max].

        `success` (knapsack mode only, where it is required): each prompt's estimated per-rollout
        success rate in [0, 1].
        """
        ids = check_ids(group_ids, self.num_groups, "group_ids")
        size = len(ids)
        if self.mode == "knapsack" and success is None:
            raise ValueError("knapsack mode needs each prompt's estimated success rate")
        if size == 0:
            return np.zeros(0, np.int64)
        counts = np.bincount(ids, minlength=self.num_groups)
        if self.mode == "knapsack":
            p = as_float_array(success, "success")
            if p.shape != ids.shape:
                raise ValueError(f"success has {p.size} values for {size} prompts")
            base = knapsack_allocate(p, self.n_min, self.n_max, int(round(size * self.budget_mean)))
            self._record_realized(ids, base, counts)
            return base
        per_group = self.continuous_allocation(counts / size)
        wanted = per_group[ids]
        base = np.floor(wanted).astype(np.int64)
        leftover = int(round(size * self.budget_mean)) - int(base.sum())
        if leftover > 0:
            # Ties in the fractional part go to the larger variance (√ can merge values one ulp
            # apart), then the lower group id, then the earlier position.
            priority = np.lexsort((np.arange(size), ids, -self.variance[ids], -(wanted - base)))
            priority = priority[base[priority] < self.n_max]
            base[priority[:leftover]] += 1
        self._record_realized(ids, base, counts)
        return base

    def _record_realized(self, ids, alloc, counts) -> None:
        self._last_realized = np.bincount(ids, weights=alloc, minlength=self.num_groups) / np.maximum(counts, 1)
        self._last_realized[counts == 0] = np.nan

    # ----------------------------------------------------------------- updates
    def observe(self, group_ids, n, c, proxy_values=None) -> None:
        """Update the groups' variance proxies from this batch, then re-solve μ for its shares.

        Each prompt contributes p̂(1 − p̂) with p̂ = c/n (the paper's proxy), unless
        `proxy_values` gives its per-prompt value in [0, 0.25] directly (the adversary's
        `passk_variance` proxy: π(1 − π) of the prompt's estimated pass@k).
        """
        ids = check_ids(group_ids, self.num_groups, "group_ids")
        n = as_int_array(n, "n")
        c = as_int_array(c, "c")
        if not (ids.shape == n.shape == c.shape):
            raise ValueError(f"group_ids, n and c need equal lengths, got {ids.shape}, {n.shape}, {c.shape}")
        if n.size and (n.min() < 1 or c.min() < 0 or np.any(c > n)):
            raise ValueError("need n >= 1 and 0 <= c <= n for every prompt")
        if proxy_values is not None:
            values = as_float_array(proxy_values, "proxy_values")
            if values.shape != ids.shape or np.any(~np.isfinite(values)) or np.any((values < 0) | (values > 0.25)):
                raise ValueError(f"proxy_values needs {ids.size} finite values in [0, 0.25]")
        if ids.size == 0:
            return
        rate = c / n
        values = rate * (1.0 - rate) if proxy_values is None else values
        counts = np.bincount(ids, minlength=self.num_groups)
        present = counts > 0
        batch_v = np.bincount(ids, weights=values, minlength=self.num_groups)[present] / counts[present]
        batch_v = np.maximum(batch_v, self.v_min)
        self.variance[present] = (1.0 - self.variance_beta) * self.variance[present] + self.variance_beta * batch_v
        self.steps += 1
        if self.mode == "shadow_price":
            self.continuous_allocation(counts / ids.size)  # keeps μ current for the warm start

    # ----------------------------------------------------------------- reporting and state
    def metrics(self) -> dict:
        return {"variance": self.variance.tolist(), "shadow_price": self.shadow_price,
                "iterations": self.last_iterations, "continuous_allocation": self._last_continuous.tolist(),
                "realized_mean_rollouts": self._last_realized.tolist(), "steps": self.steps}

    def _config(self) -> dict:
        return {"num_groups": self.num_groups}

    def state_dict(self) -> dict:
        return {"config": self._config(), "variance": self.variance.copy(), "shadow_price": self.shadow_price,
                "last_iterations": self.last_iterations, "steps": self.steps,
                "last_continuous": self._last_continuous.copy(), "last_realized": self._last_realized.copy()}

    def load_state_dict(self, state: dict) -> None:
        if dict(state["config"]) != self._config():
            raise ValueError(f"Rollout-GDRO state was saved with {dict(state['config'])}, this one has {self._config()}")
        shape = (self.num_groups,)
        arrays = {key: np.array(state[key], np.float64) for key in ("variance", "last_continuous", "last_realized")}
        for key, value in arrays.items():
            if value.shape != shape:
                raise ValueError(f"Rollout-GDRO state field {key!r} has shape {value.shape}, expected {shape}")
        if np.any(~np.isfinite(arrays["variance"])) or np.any(arrays["variance"] <= 0):
            raise ValueError("Rollout-GDRO state field 'variance' must be positive and finite")
        self.variance = arrays["variance"]
        self._last_continuous, self._last_realized = arrays["last_continuous"], arrays["last_realized"]
        self.shadow_price = float(state["shadow_price"])
        self.last_iterations, self.steps = int(state["last_iterations"]), int(state["steps"])
