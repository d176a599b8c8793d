"""Online difficulty classifier: prompt id → difficulty bin by a windowed pass@k (docs/algorithms.md).

Per prompt we keep the last H visits' (rollouts n_i, correct c_i) in a ring buffer (H = 0
keeps running totals of all history instead) and pool them: N = Σn, C = Σc.

The estimate, for every N, is the posterior mean of pass@k under a Beta(α, β) prior fitted to
the pool by empirical Bayes:

    est(N, C) = 1 − Π_{i<k} (β' + i)/(α' + β' + i),   α' = α + C,  β' = β + N − C.

Why one formula for every N. The unbiased estimator 1 − C(N−C, k)/C(N, k) needs N ≥ k and at
N = k is just "any success"; switching to it at N = k made the estimate jump (1 of 4 → 0.74,
then one more failed visit, 1 of 8 → 1.00: more failures looked easier) and piled a pool seen
twice with 4 rollouts per visit into the two end bins. The posterior mean is
* monotone: one more failure raises β' and so every factor, lowering the estimate; one more
  success moves one unit from β' to α', lowering every factor, raising it;
* continuous in N (there is no switch);
* shrunk toward the pool's prior when N is small (α + β is the prior's weight in pseudo-trials);
* consistent: as N grows with C/N → p it tends to 1 − (1 − p)^k, the limit of the unbiased
  estimator too (they differ by O((α + β)/N)).
A flat prior would call 0 of 4 correct "easy" (pass@8 ≈ 0.6); the pool prior knows most
prompts are hard. The fit is the beta-binomial method of moments on the rates C/N of seen
prompts: with ρ = 1/(α+β+1), Var(C/N) = m(1−m)·(E[1/N] + ρ(1 − E[1/N])), solved for ρ, so the
binomial noise of small N is not mistaken for spread between prompts. α+β is capped at
`prior_strength_max` so new data stays influential, and floored at PRIOR_STRENGTH_MIN. Until
`prior_min_prompts` prompts (or half of a smaller pool) are seen the Jeffreys prior
Beta(½, ½) is used. The prior is first fitted as soon as enough prompts are seen, then
refitted every `prior_refit_every` calls of `end_step`; a prompt's cached estimate is
recomputed only when it is observed.
* Bins by `edges` (bin b covers [edges[b−1], edges[b]); bin 0 is the hardest); never-seen
  prompts sit in the separate group `unseen` (index num_bins). The first observation assigns
  the raw bin. Later, hysteresis δ: a prompt moving up leaves bin o only if est ≥ edges[o] + δ,
  moving down only if est ≤ edges[o−1] − δ (the edge adjacent to the old bin, also for jumps of
  several bins), and then lands in its raw bin.

`binning="equal_count"` replaces the fixed pass@k edges by len(edges) + 1 bins of equal counts:
edges at quantiles of each seen prompt's posterior-mean per-rollout success rate
p̂ = (α + C)/(α + β + N) (`binning.py`), re-placed every `refresh_every` steps (and at the end of
the first step), when every seen prompt takes the bin of its current p̂. Between refreshes an
observed prompt takes its bin under the current edges, without hysteresis: the edges live on the
pool's own scale, where a fixed margin δ has no common meaning, and each refresh regroups the
whole pool anyway. Why p̂ and not pass@k: pass@8 is within 0.1 of 1 for every p ≥ 0.25, so
quantiles of it cannot separate the middle of the pool.

Group membership (`GroupMembership`) is a member array per group with swap-remove (O(1) per
move, done in batches with numpy), so uniform sampling inside a group is O(count) at any pool size.

Memory per prompt (`state_bytes_per_prompt`), H > 0: ring_n, ring_c uint8[H] (2H bytes; so a
visit may have at most 255 rollouts), pooled N, C uint32 (8), visits uint32 (4), group uint8
(1), slot in the group's member array int32 (4), cached estimate float64 (8), member arrays
int32 (4, plus growth slack ≤ 4). At H = 50: about 129–133 bytes.
"""
from __future__ import annotations

import numpy as np

from gdro_ray.algorithms.binning import assign_bins, quantile_edges
from gdro_ray.algorithms.membership import GroupMembership
from gdro_ray.algorithms.passk import beta_pass_at_k
from gdro_ray.algorithms.validation import as_int_array, check_ids

DEFAULT_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FALLBACK_PRIOR = (0.5, 0.5)
PRIOR_STRENGTH_MIN = 0.1
PRIOR_MIN_PROMPTS = 30  # prompts seen before the pool prior is first fitted (default)
BINNINGS = ("equal_width", "equal_count")


class DifficultyClassifier:
    """Windowed pass@k per prompt id, binned with hysteresis; see the module docstring."""

    def __init__(self, num_prompts: int, k: int = 8, window: int = 50, edges=DEFAULT_EDGES,
                 hysteresis: float = 0.03, prior_refit_every: int = 1,
                 prior_strength_max: float = 20.0, prior_min_prompts: int | None = None,
                 binning: str = "equal_width", refresh_every: int = 10):
        edges_arr = np.asarray(list(edges), dtype=np.float64)
        if not 1 <= int(num_prompts) < 2**31:
            raise ValueError(f"num_prompts must be in [1, 2^31), got {num_prompts}")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if int(window) < 0:
            raise ValueError(f"window must be >= 0 (0 keeps all history), got {window}")
        if edges_arr.ndim != 1 or len(edges_arr) > 250:  # groups are stored as uint8
            raise ValueError(f"edges must be a flat list of at most 250 numbers, got {edges}")
        if np.any(~np.isfinite(edges_arr)) or np.any((edges_arr <= 0) | (edges_arr >= 1)):
            raise ValueError(f"edges must lie strictly inside (0, 1), got {list(edges_arr)}")
        if np.any(np.diff(edges_arr) <= 0):
            raise ValueError(f"edges must be strictly increasing, got {list(edges_arr)}")
        if not 0 <= hysteresis < 1:
            raise ValueError(f"hysteresis must be in [0, 1), got {hysteresis}")
        if int(prior_refit_every) < 1:
            raise ValueError(f"prior_refit_every must be >= 1, got {prior_refit_every}")
        if not prior_strength_max > PRIOR_STRENGTH_MIN:
            raise ValueError(f"prior_strength_max must be > {PRIOR_STRENGTH_MIN}, got {prior_strength_max}")
        if prior_min_prompts is not None and int(prior_min_prompts) < 2:
            raise ValueError(f"prior_min_prompts must be >= 2, got {prior_min_prompts}")
        if binning not in BINNINGS:
            raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")
        if int(refresh_every) < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
        self.binning, self.refresh_every = binning, int(refresh_every)
        self.num_prompts, self.k, self.window = int(num_prompts), int(k), int(window)
        self.edges, self.hysteresis = edges_arr, float(hysteresis)
        self.prior_refit_every, self.prior_strength_max = int(prior_refit_every), float(prior_strength_max)
        # Default: 30 prompts, or half of a smaller pool (a 20-prompt set would otherwise keep the
        # flat prior for the whole run). An explicit value is taken as given.
        if prior_min_prompts is None:
            prior_min_prompts = min(PRIOR_MIN_PROMPTS, max(2, -(-self.num_prompts // 2)))
        self.prior_min_prompts = int(prior_min_prompts)
        self.num_bins = len(edges_arr) + 1
        self.unseen = self.num_bins
        self.num_groups = self.num_bins + 1
        self._reset()

    def _reset(self) -> None:
        P, H = self.num_prompts, self.window
        self._ring_n = np.zeros((P, H), np.uint8) if H else None
        self._ring_c = np.zeros((P, H), np.uint8) if H else None
        self._pooled_n = np.zeros(P, np.uint32)
        self._pooled_c = np.zeros(P, np.uint32)
        self._visits = np.zeros(P, np.uint32)
        self._membership = GroupMembership(P, self.num_groups, self.unseen)
        self._estimate = np.full(P, np.nan, np.float64)
        self._group_est_sum = np.zeros(self.num_groups, np.float64)
        # Empirical-Bayes moments over seen prompts: count, Σ rate, Σ rate², Σ 1/N.
        self._moments = np.zeros(4, np.float64)
        self._prior = FALLBACK_PRIOR
        self._prior_fitted = False
        self._steps = 0
        # equal_count: the edges on p̂ in use; until the first refresh any valid placeholder
        self._count_edges = self.edges.copy()
        self._refreshed = False

    # ----------------------------------------------------------------- queries
    def groups(self, prompt_ids) -> np.ndarray:
        ids = check_ids(prompt_ids, self.num_prompts, "prompt_ids")
        return self._membership.group[ids].astype(np.int64)

    def estimates(self, prompt_ids) -> np.ndarray:
        ids = check_ids(prompt_ids, self.num_prompts, "prompt_ids")
        return self._estimate[ids].copy()

    def success_rates(self, prompt_ids) -> np.ndarray:
        """Posterior mean of each prompt's per-rollout success rate under the pool prior,
        (α + C)/(α + β + N); the prior mean for a prompt never seen."""
        ids = check_ids(prompt_ids, self.num_prompts, "prompt_ids")
        alpha, beta = self._prior
        return (alpha + self._pooled_c[ids]) / (alpha + beta + self._pooled_n[ids].astype(np.float64))

    def group_success_rates(self) -> np.ndarray:
        """Mean p̂ of each group's members (`success_rates`); NaN for an empty group."""
        seen = np.flatnonzero(self._visits > 0)
        group = self._membership.group.astype(np.int64)
        sums = np.bincount(group[seen], weights=self.success_rates(seen), minlength=self.num_groups)
        sizes = self._membership.sizes
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(sizes > 0, sums / np.maximum(sizes, 1), np.nan)
        if sizes[self.unseen] > 0:
            out[self.unseen] = self._prior[0] / (self._prior[0] + self._prior[1])
        return out

    def live_edges(self) -> np.ndarray:
        """The interior edges in use: `edges` on pass@k, or the equal-count edges on p̂."""
        return (self._count_edges if self.binning == "equal_count" else self.edges).copy()

    def group_counts(self) -> np.ndarray:
        return self._membership.sizes.copy()

    def group_pass_at_k(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            sizes = self._membership.sizes
            out = np.where(sizes > 0, self._group_est_sum / np.maximum(sizes, 1), np.nan)
        out[self.unseen] = np.nan
        return out

    def members(self, group: int) -> np.ndarray:
        return self._membership.members(self._check_group(group)).astype(np.int64)

    def sample(self, group: int, count: int, rng: np.random.Generator, replace: bool) -> np.ndarray:
        """Ids drawn uniformly inside `group`; without replacement at most the group's size."""
        if int(count) < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        return self._membership.sample(self._check_group(group), int(count), rng, bool(replace))

    @property
    def prior(self) -> tuple[float, float]:
        return self._prior

    def state_bytes_per_prompt(self) -> float:
        arrays = [self._pooled_n, self._pooled_c, self._visits, self._estimate]
        if self.window:
            arrays += [self._ring_n, self._ring_c]
        total = sum(a.nbytes for a in arrays) + self._membership.nbytes()
        return total / self.num_prompts

    def metrics(self) -> dict:
        return {"group_counts": self._membership.sizes.tolist(), "group_pass_at_k": self.group_pass_at_k().tolist(),
                "prior_alpha": self._prior[0], "prior_beta": self._prior[1],
                "prior_fitted": self._prior_fitted, "seen_prompts": int(self._moments[0]),
                "steps": self._steps}

    # ----------------------------------------------------------------- updates
    def observe(self, prompt_ids, n, c) -> None:
        """Record one visit per entry (repeated ids are several visits, in order), then regroup."""
        ids = check_ids(prompt_ids, self.num_prompts, "prompt_ids")
        n = as_int_array(n, "n")
        c = as_int_array(c, "c")
        if not (ids.shape == n.shape == c.shape):
            raise ValueError(f"prompt_ids, n and c need equal lengths, got {ids.shape}, {n.shape}, {c.shape}")
        if n.size and n.min() < 1:
            raise ValueError(f"n must be >= 1 rollouts per visit, got min n={n.min()}")
        if c.size and (c.min() < 0 or np.any(c > n)):
            raise ValueError("c must satisfy 0 <= c <= n for every visit")
        if self.window and n.size and n.max() > 255:
            raise ValueError(f"n must be <= 255 rollouts per visit with window > 0, got {n.max()}")
        if ids.size == 0:
            return
        uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
        old_n = self._pooled_n[uniq].astype(np.float64)
        old_c = self._pooled_c[uniq].astype(np.float64)
        if self.window:
            self._write_ring(uniq, inverse, counts, n, c)
            new_n = self._ring_n[uniq].sum(axis=1, dtype=np.uint32)
            new_c = self._ring_c[uniq].sum(axis=1, dtype=np.uint32)
        else:
            new_n = self._pooled_n[uniq] + np.bincount(inverse, weights=n, minlength=len(uniq)).astype(np.uint32)
            new_c = self._pooled_c[uniq] + np.bincount(inverse, weights=c, minlength=len(uniq)).astype(np.uint32)
        self._visits[uniq] += counts.astype(np.uint32)
        self._pooled_n[uniq], self._pooled_c[uniq] = new_n, new_c
        self._update_moments(old_n, old_c, new_n.astype(np.float64), new_c.astype(np.float64))
        if not self._prior_fitted and self._moments[0] >= self.prior_min_prompts:
            self._refit_prior()
        # Rounded so that exact ratios such as 2/20 are not pushed below an edge of 0.1 by the
        # float error of 1 − 18/20; the stored value is the one the grouping used.
        est = np.round(self._estimate_from(new_n.astype(np.float64), new_c.astype(np.float64)), 12)
        old_group = self._membership.group[uniq].astype(np.int64)
        if self.binning == "equal_count":
            new_group = assign_bins(self.success_rates(uniq), self._count_edges)
        else:
            new_group = self._regroup(old_group, est)
        was_seen = old_group != self.unseen
        self._group_est_sum -= np.bincount(old_group[was_seen], minlength=self.num_groups,
                                           weights=self._estimate[uniq][was_seen])
        self._group_est_sum += np.bincount(new_group, weights=est, minlength=self.num_groups)
        self._membership.move(uniq, new_group)
        self._estimate[uniq] = est

    def end_step(self) -> None:
        """Step boundary: refit the prior every `prior_refit_every` steps."""
        self._steps += 1
        if self._steps % self.prior_refit_every == 0 and self._moments[0] >= self.prior_min_prompts:
            self._refit_prior()
        if self.binning == "equal_count" and (not self._refreshed or self._steps % self.refresh_every == 0):
            self._refresh_count_bins()

    def _refresh_count_bins(self) -> None:
        """Re-place the equal-count edges on the seen prompts' p̂ and regroup all of them."""
        seen = np.flatnonzero(self._visits > 0)
        if seen.size == 0:
            return
        rates = self.success_rates(seen)
        self._count_edges = quantile_edges(rates, self.num_bins)
        self._membership.move(seen, assign_bins(rates, self._count_edges))
        group = self._membership.group[seen].astype(np.int64)
        self._group_est_sum = np.bincount(group, weights=self._estimate[seen], minlength=self.num_groups)
        self._refreshed = True

    def _write_ring(self, uniq, inverse, counts, n, c) -> None:
        H = self.window
        order = np.argsort(inverse, kind="stable")  # occurrences grouped by prompt, call order kept
        sorted_inv = inverse[order]
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rank = np.arange(len(order)) - starts[sorted_inv]
        keep = rank >= counts[sorted_inv] - H  # earlier visits would be overwritten in this call
        occ, rank, who = order[keep], rank[keep], sorted_inv[keep]
        rows = uniq[who]
        slots = (self._visits[rows].astype(np.int64) + rank) % H
        self._ring_n[rows, slots] = n[occ]
        self._ring_c[rows, slots] = c[occ]

    def _update_moments(self, old_n, old_c, new_n, new_c) -> None:
        seen_before = old_n > 0
        old_rate = old_c[seen_before] / old_n[seen_before]
        new_rate = new_c / new_n
        self._moments -= [seen_before.sum(), old_rate.sum(), (old_rate**2).sum(), (1.0 / old_n[seen_before]).sum()]
        self._moments += [len(new_n), new_rate.sum(), (new_rate**2).sum(), (1.0 / new_n).sum()]

    def _refit_prior(self) -> None:
        count, s1, s2, s_inv = self._moments
        mean_inv_n = s_inv / count
        if count < self.prior_min_prompts or mean_inv_n > 1.0 - 1e-6:
            return  # with one rollout per prompt, spread and noise cannot be told apart
        m = float(np.clip(s1 / count, 1e-3, 1.0 - 1e-3))
        var = max(s2 / count - (s1 / count) ** 2, 0.0)
        rho = (var / (m * (1.0 - m)) - mean_inv_n) / (1.0 - mean_inv_n)
        strength = self.prior_strength_max if rho <= 0 else 1.0 / rho - 1.0
        strength = float(np.clip(strength, PRIOR_STRENGTH_MIN, self.prior_strength_max))
        self._prior = (m * strength, (1.0 - m) * strength)
        self._prior_fitted = True

    def _estimate_from(self, pooled_n: np.ndarray, pooled_c: np.ndarray) -> np.ndarray:
        """Posterior mean of pass@k under the pool prior, for every N (module docstring)."""
        alpha, beta = self._prior
        return beta_pass_at_k(alpha + pooled_c, beta + pooled_n - pooled_c, self.k)

    def _regroup(self, old_group: np.ndarray, est: np.ndarray) -> np.ndarray:
        raw = np.searchsorted(self.edges, est, side="right").astype(np.int64)
        if len(self.edges) == 0:
            return raw
        last_edge = len(self.edges) - 1
        old = np.minimum(old_group, self.num_bins - 1)  # placeholder for unseen rows, masked below
        edge_above = self.edges[np.minimum(old, last_edge)]
        edge_below = self.edges[np.maximum(old - 1, 0)]
        stay = ((raw > old) & (est < edge_above + self.hysteresis)) | \
               ((raw < old) & (est > edge_below - self.hysteresis))
        stay &= old_group != self.unseen  # first observation: raw bin, no hysteresis
        return np.where(stay, old_group, raw)

    def _check_group(self, group) -> int:
        if not 0 <= int(group) < self.num_groups:
            raise ValueError(f"group must be in [0, {self.num_groups}), got {group}")
        return int(group)

    # ------------------------------------------------------------- state
    def _config(self) -> dict:
        return {"num_prompts": self.num_prompts, "k": self.k, "window": self.window, "edges": self.edges.tolist(),
                "binning": self.binning}

    def state_dict(self) -> dict:
        state = {"config": self._config(), "pooled_n": self._pooled_n.copy(), "pooled_c": self._pooled_c.copy(),
                 "visits": self._visits.copy(), "group": self._membership.group.copy(),
                 "estimate": self._estimate.copy(), "members": self._membership.flat_members(),
                 "sizes": self._membership.sizes.copy(), "group_est_sum": self._group_est_sum.copy(),
                 "moments": self._moments.copy(), "prior": list(self._prior),
                 "prior_fitted": self._prior_fitted, "steps": self._steps,
                 "count_edges": self._count_edges.copy(), "refreshed": self._refreshed}
        if self.window:
            state["ring_n"], state["ring_c"] = self._ring_n.copy(), self._ring_c.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()` output (arrays may come back as lists, e.g. via JSON)."""
        config = dict(state["config"])
        config["edges"] = [float(e) for e in config["edges"]]
        config.setdefault("binning", "equal_width")  # states saved before equal-count bins existed
        if config != self._config():
            raise ValueError(f"classifier state was saved with {config}, this classifier has {self._config()}")
        P, H = self.num_prompts, self.window

        def arr(key: str, dtype, shape: tuple) -> np.ndarray:
            value = np.array(state[key], dtype=dtype)  # a copy: later updates never alias the dict
            if value.shape != shape:
                raise ValueError(f"classifier state field {key!r} has shape {value.shape}, expected {shape}")
            return value

        loaded = {"_pooled_n": arr("pooled_n", np.uint32, (P,)), "_pooled_c": arr("pooled_c", np.uint32, (P,)),
                  "_visits": arr("visits", np.uint32, (P,)), "_estimate": arr("estimate", np.float64, (P,)),
                  "_group_est_sum": arr("group_est_sum", np.float64, (self.num_groups,)),
                  "_moments": arr("moments", np.float64, (4,))}
        if H:
            loaded["_ring_n"] = arr("ring_n", np.uint8, (P, H))
            loaded["_ring_c"] = arr("ring_c", np.uint8, (P, H))
        membership = GroupMembership(P, self.num_groups, self.unseen)
        membership.load(arr("group", np.uint8, (P,)), arr("sizes", np.int64, (self.num_groups,)),
                        arr("members", np.int64, (P,)))
        for name, value in loaded.items():
            setattr(self, name, value)
        self._membership = membership
        self._prior = (float(state["prior"][0]), float(state["prior"][1]))
        self._prior_fitted, self._steps = bool(state["prior_fitted"]), int(state["steps"])
        if "count_edges" in state:
            self._count_edges = arr("count_edges", np.float64, (self.num_bins - 1,))
            self._refreshed = bool(state["refreshed"])
        else:
            self._count_edges, self._refreshed = self.edges.copy(), False
