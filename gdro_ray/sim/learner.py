"""A synthetic learner: prompts with a success probability that grows with the GRPO signal.

The model of a policy (all in logit space, per prompt i):

    logit_i = base_i + Θ[cell_i] + m_i,     p_i = sigmoid(logit_i)   (0 if i is unsolvable)

- `base_i`: the initial skill, `sim.base_logit − sim.logit_spread · t_i` with t_i drawn from a
  Student-t with `sim.tail_shape` degrees of freedom: a heavy tail of very hard prompts (and
  of very easy ones), pooled base pass@8 ≈ 0.45 with the defaults.
- Difficulty order defines the skill structure. `cell_i` is prompt i's cell among
  `sim.num_skills` equal-population cells of base difficulty (quantiles of the training pool);
  Θ is the competence per cell, shared by every prompt of similar difficulty, including
  held-out prompts. `m_i` is what the policy learned about prompt i alone (memorisation).
  Held-out prompts only ever gain through Θ (findings §8: gains on new prompts need skills
  tied to difficulty).
- A fraction `sim.unsolvable_fraction` of prompts (train and held-out) can never be solved.

Learning from one visit (prompt i with n_i rollouts, c_i correct, advantage multiplier w_i):
the GRPO signal is g_i = w_i · n_i^α · sqrt(r̄_i (1 − r̄_i)), zero when all rewards are equal
(no advantage, r̄ = c/n). With standardised advantages a group's policy gradient on its
log-odds is n·σ̂; the exponent α = `sim.rollout_exponent` < 1 models diminishing returns of
more rollouts on one prompt. Then

    m_i  += lr · (1 − transfer) · g_i                                     (per visit)
    Θ    += lr · transfer · (C / B) · K @ (Σ_{visits in cell} ν_i g_i)     (per step)

with K a Gaussian kernel over cells of width `sim.transfer_width` (in difficulty quantile
units) and rows summing to 1: a cell whose prompts fill their even share of the batch moves by
lr · transfer · ḡ per step, and learning spills to neighbouring difficulties.

Revisiting costs novelty: ν_i = (1 + v_i / `sim.revisit_scale`)^(−½), v_i the prompt's earlier
visits. Seeing the same prompt again teaches that prompt (m_i) as much as before, but adds less
and less that transfers, so hammering a few prompts with repeats drifts toward memorisation
(findings §8) while still teaching something general (one-prompt RLVR does transfer). With the
default scale 20, a GRPO prompt visited ~18 times over 1,000 steps at B = 256 transfers ~80% of
its signal; a prompt resampled 400 times about a third.

With `sim.start_from` (gdro_ray/sim/start.py) the start point is measured instead: the cells
and report tiers are the tiers of a real base model's evaluation file (the toy world's skill
families) and each prompt's base logit is drawn from its measured success rate. The learning
rules above are unchanged, with two optional additions: `sim.tier_choice_rate` makes
p_i = ceiling_i · sigmoid(logit_i), a fixed per-prompt ceiling (a skill the model lacks) that
`sim.ceiling_lr` lets move by ceiling_lr × each step's ΔΘ of the cell, and `sim.tier_positions`
places the tiers on the kernel's axis (e.g. operation families). benchmarks/sim_calibration.py
fits the learning parameters to real GRPO runs this way (docs/simulator.md).

Interference (`sim.interference` = ι, default 0): every step also moves every cell by
−ι · lr · transfer · (Σ ν_i g_i) / B, the batch's mean transferable signal: an update made for
some prompts costs every skill a little (shared weights), so a cell whose own share of the
signal is small can lose ground, as sub_neg does under real GRPO on the toy world.

No forgetting beyond that interference and no instability from large advantage weights: both
favour the controllers (findings, last paragraph).
"""
from __future__ import annotations

import numpy as np

from gdro_ray.config.schema import SimConfig


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1.0 - 1e-6)
    return np.log(q) - np.log1p(-q)


class SyntheticLearner:
    """Training pool + held-out set of synthetic prompts and the policy's competence."""

    def __init__(self, sim: SimConfig, seed: int):
        rng = np.random.default_rng([seed, 17])  # the pool depends on the seed only, never on the algorithm
        self.sim = sim
        if sim.start_from:  # a measured start point: cells and report tiers are the real tiers
            self._init_measured(sim, rng)
        else:
            self._init_synthetic(sim, rng)
        centres = (np.arange(self.num_cells) + 0.5) / self.num_cells
        if sim.tier_positions:  # a transfer geometry of the measured tiers (e.g. skill families)
            if not sim.start_from or len(sim.tier_positions) != self.num_cells:
                from gdro_ray.config.loader import ConfigError

                raise ConfigError(f"sim.tier_positions: needs sim.start_from and one value per tier "
                                  f"({self.num_cells}), got {len(sim.tier_positions)}")
            centres = np.asarray(sim.tier_positions, dtype=np.float64)
        kern = np.exp(-0.5 * ((centres[:, None] - centres[None, :]) / max(sim.transfer_width, 1e-9)) ** 2)
        self.kernel = kern / kern.sum(axis=1, keepdims=True)
        # The hardest 20% of held-out prompts by base difficulty (a fixed set across algorithms).
        self.hardest20_eval = -self.base_eval >= np.quantile(-self.base_eval, 0.8)

        self.theta = np.zeros(self.num_cells)  # competence per skill cell
        self.phi = np.zeros(self.num_cells)  # the ceilings' learned shift per cell (sim.ceiling_lr)
        self.memo = np.zeros(self.base_train.size)  # per-prompt memorisation
        self.visits = np.zeros(self.base_train.size, dtype=np.int64)

    def _init_synthetic(self, sim: SimConfig, rng: np.random.Generator) -> None:
        n_train, n_eval = int(sim.num_prompts), int(sim.eval_prompts)
        t = rng.standard_t(sim.tail_shape, size=n_train + n_eval)
        base = sim.base_logit - sim.logit_spread * t
        unsolvable = rng.random(n_train + n_eval) < sim.unsolvable_fraction
        self.base_train, self.base_eval = base[:n_train], base[n_train:]
        self.unsolvable_train, self.unsolvable_eval = unsolvable[:n_train], unsolvable[n_train:]
        self.ceil_train, self.ceil_eval = np.ones(n_train), np.ones(n_eval)
        self.ceil_logit_train = self.ceil_logit_eval = None  # no split: nothing for sim.ceiling_lr to move
        # Skill cells: equal-population difficulty quantiles of the training pool.
        self.num_cells = int(sim.num_skills)
        cut = np.quantile(-self.base_train, np.linspace(0, 1, self.num_cells + 1)[1:-1])
        self.cell_train = np.searchsorted(cut, -self.base_train, side="right").astype(np.int64)
        self.cell_eval = np.searchsorted(cut, -self.base_eval, side="right").astype(np.int64)
        # Report tiers: deciles (num_tiers) of base difficulty, tier 0 easiest.
        self.num_report_tiers = int(sim.num_tiers)
        tier_cut = np.quantile(-self.base_train, np.linspace(0, 1, sim.num_tiers + 1)[1:-1])
        self.tier_eval = np.searchsorted(tier_cut, -self.base_eval, side="right").astype(np.int64)
        self.tier_names = [str(t) for t in range(self.num_report_tiers)]

    def _init_measured(self, sim: SimConfig, rng: np.random.Generator) -> None:
        from gdro_ray.sim.start import measured_start

        st = measured_start(sim, rng)
        self.base_train, self.base_eval = st["base_train"], st["base_eval"]
        self.unsolvable_train = np.zeros(self.base_train.size, dtype=bool)
        self.unsolvable_eval = np.zeros(self.base_eval.size, dtype=bool)
        self.num_cells = self.num_report_tiers = len(st["tier_names"])
        self.cell_train, self.cell_eval = st["tier_train"], st["tier_eval"]
        self.tier_eval = st["tier_eval"]
        self.tier_names = st["tier_names"]
        self.ceil_train, self.ceil_eval = st["ceil_train"], st["ceil_eval"]
        self.ceil_logit_train, self.ceil_logit_eval = _logit(self.ceil_train), _logit(self.ceil_eval)

    # ------------------------------------------------------------------ the policy
    def p_train(self, ids: np.ndarray | None = None) -> np.ndarray:
        sl = slice(None) if ids is None else ids
        p = self._ceiling(self.ceil_train, "ceil_logit_train", self.cell_train, sl) * sigmoid(
            self.base_train[sl] + self.theta[self.cell_train[sl]] + self.memo[sl])
        return np.where(self.unsolvable_train[sl], 0.0, p)

    def p_eval(self) -> np.ndarray:
        p = self._ceiling(self.ceil_eval, "ceil_logit_eval", self.cell_eval, slice(None)) * sigmoid(
            self.base_eval + self.theta[self.cell_eval])
        return np.where(self.unsolvable_eval, 0.0, p)

    def _ceiling(self, ceil: np.ndarray, logit_name: str, cells: np.ndarray, sl) -> np.ndarray:
        """A prompt's ceiling: fixed, or moved in logit space by the cell's learned φ (sim.ceiling_lr)."""
        if self.sim.ceiling_lr <= 0 or getattr(self, logit_name) is None:
            return ceil[sl]
        return sigmoid(getattr(self, logit_name)[sl] + self.phi[cells[sl]])

    def sample(self, ids: np.ndarray, rollouts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Bernoulli(p_i) rewards for every rollout, flat, prompt-major."""
        p = np.repeat(self.p_train(ids), rollouts)
        return (rng.random(p.size) < p).astype(np.float64)

    # ------------------------------------------------------------------ learning
    def learn(self, ids: np.ndarray, rollouts: np.ndarray, correct: np.ndarray,
              adv_weights: np.ndarray) -> np.ndarray:
        """Apply one step's GRPO signal; returns the per-prompt signal g_i."""
        sim = self.sim
        rbar = correct / np.maximum(rollouts, 1)
        g = adv_weights * rollouts.astype(np.float64) ** sim.rollout_exponent * np.sqrt(rbar * (1.0 - rbar))
        np.add.at(self.memo, ids, sim.learning_rate * (1.0 - sim.transfer) * g)
        novelty = (1.0 + self.visits[ids] / sim.revisit_scale) ** -0.5 if sim.revisit_scale > 0 else 1.0
        np.add.at(self.visits, ids, 1)
        per_cell = np.bincount(self.cell_train[ids], weights=g * novelty, minlength=self.num_cells)
        scale = sim.learning_rate * sim.transfer * self.num_cells / max(ids.size, 1)
        step = scale * (self.kernel @ per_cell)
        if sim.interference > 0:  # shared weights: every update costs every cell alike
            step -= sim.interference * scale * per_cell.sum() / self.num_cells
        self.theta += step
        self.phi += sim.ceiling_lr * step
        return g

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, k: int) -> dict:
        """Expected pass@k (exact for Bernoulli p: 1 − (1 − p)^k) on the held-out set."""
        pk = 1.0 - (1.0 - self.p_eval()) ** k
        p = self.p_eval()
        tiers = [float(pk[self.tier_eval == t].mean()) if np.any(self.tier_eval == t) else float("nan")
                 for t in range(self.num_report_tiers)]
        tier_mean = [float(p[self.tier_eval == t].mean()) if np.any(self.tier_eval == t) else float("nan")
                     for t in range(self.num_report_tiers)]
        train_pk = 1.0 - (1.0 - self.p_train()) ** k
        return {
            "pass_at_k_mean": float(pk.mean()),
            "tier_pass_at_k": tiers,
            "worst_tier_pass_at_k": float(np.nanmin(tiers)),
            "hardest20_pass_at_k": float(pk[self.hardest20_eval].mean()),
            "train_pass_at_k_mean": float(train_pk.mean()),
            "mean_at_k": float(p.mean()),
            "tier_mean_at_k": tier_mean,
        }

    def true_pass_at_k(self, ids: np.ndarray, k: int) -> np.ndarray:
        return 1.0 - (1.0 - self.p_train(ids)) ** k
