"""Prompt-GDRO: the data adversary, exponential weights over difficulty groups (docs/algorithms.md).

Score (default `score_mode="ema"`, the paper's EMA-debiased form): for each group b present in
a batch, with ℓ̄_b the mean per-prompt difficulty signal of its prompts,

    value_b = ℓ̄_b / max(|U_s| · share_b, floor)   (normalize_by_share=True; else value_b = ℓ̄_b)
    S_b ← (1 − β) S_b + β value_b                 (first observation: S_b = value_b)

where share_b is the group's *reference share* and |U_s| the number of groups with a positive
reference share, so |U_s|·share_b is the share relative to uniform: a group at the uniform share
keeps its mean signal, a thinner one is boosted by at most 1/floor (default 2×). The reference
share is the batch's realised share by default, or what the caller passes to `observe` (the
adversary passes the pool's group shares in resample mode, see below).

Why relative to uniform, and why a floor of ½. The paper divides by the raw share with a small
floor (0.02). A group at the uniform share of 11 groups then scores 11× its mean signal, so
with signals in [0, 1] nearly every group sits at the clip C = 3 and q is flat whatever the
signal says (end to end with the `failure` signal q was exactly uniform, every score 7.7–12.5).
Relative to uniform, signals in [0, 1] give scores in [0, 1/floor] = [0, 2], inside the clip.

Why the batch share must not be the reference in resample mode. There the batch is drawn from q
itself, so dividing by the realised share feeds the adversary's own choice back as evidence: a
group q favours gets a larger share, hence a smaller score, and q is pulled back toward uniform
(with fixed losses from 0.3 to 0.9 over 10 groups every group ended with the same q). The
natural frequency of a group is its share of the *pool*, which q does not choose.

Groups absent from a batch keep their score. The distribution over the groups U in play is

    q_b = (1 − γ) exp(η clip(S_b, −C, C)) / Σ_{j∈U} exp(η clip(S_j, −C, C)) + γ / |U|,

exactly 0 outside U. Tracking the *mean* signal (an intensive quantity) rather than a running
sum is what removes frequency bias: a rare group with a high mean signal outranks a common
group whose summed signal is larger.

What is (and is not) no-regret. The EMA score forgets (β < 1) and its sharpness η is fixed,
so the default configuration tracks the currently hardest groups; it is not Hedge and makes no
regret promise against the best fixed group. `score_mode="cumulative"` replaces the EMA with
the running sum S_b ← S_b + value_b; with normalize_by_share=False, score_clip=inf, γ = 0,
η = √(8 ln B / T) and every group's loss fed each step (full information) it is exactly Hedge
for a maximising player, with regret ≤ √(T ln B / 2) for losses in [0, 1]. Fed importance-
weighted loss estimates (the bandit form, see tests) it is EXP3. The tests check both.

`share_raw=True` divides by the raw share itself, max(share_b, floor), the paper's form (its
`batch_raw` normalisation, floor 0.02): kept for the paper profile, with the scale flaw above.

Linear weights (`weights="linear"`): q_b = (1 − γ) v_b / Σ_U v + γ/|U| with v_b = w_b · max(S_b, 0),
so q is proportional to the score and a group whose score is 0 (no learning progress, say) gets
exactly the γ floor, which exponential weights never give (exp(0) is not small). The clip to 0
acts on the EMA, after averaging. w_b = softmax_U(−worst_eta · p̄_b), p̄_b the group's mean success
rate, is the worst-group weight of the entropic surrogate (the paper's Eq. 22–26 with the loss
1 − p̄): 1 for every group when worst_eta = 0. A group in play with no score yet (the `unseen`
group, or a bin not yet measured) is given the mean v of the scored groups: no evidence is not
evidence of no progress. With no positive v anywhere q is uniform over U. η and the clip C are not
used by linear weights.

Reweight mode (`advantage_weights`): each response gets q of its group, rescaled to mean 1 over
the given responses and capped at ω_max, so the average update scale equals plain GRPO's.
`informative_mean_one` rescales such weights to mean 1 over the responses of informative groups
only (groups whose rewards differ): an all-fail or all-pass group has advantage 0, so the weight
it holds would otherwise shrink every other group's update.
"""
from __future__ import annotations

import math

import numpy as np

from gdro_ray.algorithms.validation import as_float_array, check_ids

SCORE_MODES = ("ema", "cumulative")
WEIGHTINGS = ("exp", "linear")


def informative_mean_one(weights, rollouts, informative, cap: float = math.inf) -> np.ndarray:
    """Per-prompt weights rescaled to mean 1 over the responses of the informative prompts, capped.

    The other prompts' weights are left as they are (their advantages are 0). With no informative
    prompt, or no weight on them, the weights are returned unchanged.
    """
    w = np.asarray(weights, dtype=np.float64).copy()
    n = np.asarray(rollouts, dtype=np.float64)
    mask = np.asarray(informative, dtype=bool)
    if not (w.shape == n.shape == mask.shape):
        raise ValueError(f"weights, rollouts and informative need equal lengths, got {w.shape}, {n.shape}, "
                         f"{mask.shape}")
    total = float((w[mask] * n[mask]).sum())
    if total <= 0:
        return w
    w[mask] = np.minimum(w[mask] * (float(n[mask].sum()) / total), cap)
    return w


class PromptGDRO:
    """Exponential-weights adversary over groups; see the module docstring."""

    def __init__(self, num_groups: int, eta: float = 0.65, gamma: float = 0.01, beta: float = 0.12,
                 share_floor: float = 0.5, normalize_by_share: bool = True, score_clip: float = 3.0,
                 omega_max: float = 15.0, score_mode: str = "ema", share_raw: bool = False,
                 weights: str = "exp", worst_eta: float = 0.0):
        if int(num_groups) < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        if not eta > 0 or not math.isfinite(eta):
            raise ValueError(f"eta must be > 0 and finite, got {eta}")
        if not 0 <= gamma < 1:
            raise ValueError(f"gamma must be in [0, 1), got {gamma}")
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        if not 0 < share_floor <= 1:
            raise ValueError(f"share_floor must be in (0, 1], got {share_floor}")
        if not score_clip > 0:
            raise ValueError(f"score_clip must be > 0 (inf disables it), got {score_clip}")
        if not omega_max > 0:
            raise ValueError(f"omega_max must be > 0, got {omega_max}")
        if score_mode not in SCORE_MODES:
            raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}")
        if weights not in WEIGHTINGS:
            raise ValueError(f"weights must be one of {WEIGHTINGS}, got {weights!r}")
        if not 0 <= worst_eta < math.inf:
            raise ValueError(f"worst_eta must be >= 0 and finite, got {worst_eta}")
        self.num_groups = int(num_groups)
        self.eta, self.gamma, self.beta = float(eta), float(gamma), float(beta)
        self.share_floor, self.normalize_by_share = float(share_floor), bool(normalize_by_share)
        self.score_clip, self.omega_max, self.score_mode = float(score_clip), float(omega_max), score_mode
        self.share_raw, self.weights, self.worst_eta = bool(share_raw), weights, float(worst_eta)
        # p̄ of the last `distribution` call that gave one; equal values (uniform worst-group weights) before
        self._last_success = np.zeros(self.num_groups)
        self.scores = np.zeros(self.num_groups, np.float64)
        self._initialized = np.zeros(self.num_groups, bool)
        self._clip_steps = np.zeros(self.num_groups, np.int64)  # steps with |S_b| at the clip
        self._active_steps = np.zeros(self.num_groups, np.int64)  # steps since b's first observation
        self.steps = 0

    # ----------------------------------------------------------------- decisions
    def _in_play_mask(self, in_play) -> np.ndarray:
        if in_play is None:
            return np.ones(self.num_groups, bool)
        mask = np.asarray(in_play)
        if mask.shape != (self.num_groups,) or mask.dtype != bool:
            raise ValueError(f"in_play must be a bool mask of length {self.num_groups}, got "
                             f"dtype {mask.dtype} shape {mask.shape}")
        if not mask.any():
            raise ValueError("in_play selects no group")
        return mask

    def distribution(self, in_play: np.ndarray | None = None, group_success=None) -> np.ndarray:
        """q over groups: exponential (or linear) weights mixed with γ-uniform over the groups in play.

        `group_success` (linear weights with worst_eta > 0): each group's mean success rate p̄_b;
        without it the last one given is used (NaN groups weigh as the worst in play).
        """
        mask = self._in_play_mask(in_play)
        if self.weights == "linear":
            return self._linear(mask, group_success)
        logits = self.eta * np.clip(self.scores, -self.score_clip, self.score_clip)
        logits = np.where(mask, logits, -np.inf)
        weights = np.exp(logits - logits[mask].max())  # exp(-inf) = 0 outside U
        q = (1.0 - self.gamma) * weights / weights.sum() + np.where(mask, self.gamma / mask.sum(), 0.0)
        return q

    def _linear(self, mask: np.ndarray, group_success) -> np.ndarray:
        worst = np.ones(self.num_groups)
        if self.worst_eta > 0:
            if group_success is not None:
                success = np.asarray(group_success, dtype=np.float64)
                if success.shape != (self.num_groups,):
                    raise ValueError(f"group_success must have {self.num_groups} values, got shape {success.shape}")
                self._last_success = success.copy()
            success = self._last_success
            known = mask & np.isfinite(success)  # a group without a rate weighs as the worst one known
            filled = np.where(np.isfinite(success), success, success[known].min() if known.any() else 0.0)
            logits = np.where(mask, -self.worst_eta * filled, -np.inf)
            worst = np.exp(logits - logits[mask].max())
        positive = np.maximum(self.scores, 0.0)
        top = positive[mask].max()
        if top > 0:  # scaled first, so a tiny positive score times a small worst weight cannot underflow to 0
            positive = positive / top
        value = worst * positive
        scored = mask & self._initialized
        if scored.any():
            value = np.where(mask & ~self._initialized, value[scored].mean(), value)
        value = np.where(mask, value, 0.0)
        total = value.sum()
        share = value / total if total > 0 else mask / mask.sum()
        return (1.0 - self.gamma) * share + np.where(mask, self.gamma / mask.sum(), 0.0)

    def advantage_weights(self, response_group_ids, in_play: np.ndarray | None = None) -> np.ndarray:
        """Per-response weight q[group], rescaled to mean 1 over the responses, capped at ω_max.

        in_play defaults to the groups present among the responses (the γ mix is spread over
        them only); responses of groups outside an explicit in_play get weight 0.
        """
        ids = check_ids(response_group_ids, self.num_groups, "response_group_ids")
        if ids.size == 0:
            return np.zeros(0, np.float64)
        if in_play is None:
            in_play = np.bincount(ids, minlength=self.num_groups) > 0
        weights = self.distribution(in_play)[ids]
        if weights.sum() <= 0:
            raise ValueError("no response belongs to a group in play")
        return np.minimum(weights * (len(weights) / weights.sum()), self.omega_max)

    # ----------------------------------------------------------------- updates
    def observe(self, group_ids, signals, shares=None, weights=None) -> None:
        """Update the scores of the groups present from per-prompt difficulty signals.

        `shares` (optional, one non-negative value per group) is the reference share for the
        normalisation; default: the batch's realised share of each group. `weights` (optional,
        one positive value per prompt) makes a group's mean signal a weighted mean.
        """
        ids = check_ids(group_ids, self.num_groups, "group_ids")
        values = as_float_array(signals, "signals")
        if ids.shape != values.shape:
            raise ValueError(f"group_ids and signals need equal lengths, got {ids.shape} and {values.shape}")
        if weights is not None:
            weights = as_float_array(weights, "weights")
            if weights.shape != ids.shape or (weights.size and weights.min() <= 0):
                raise ValueError(f"weights must be {ids.size} positive numbers")
        if shares is not None:
            shares = as_float_array(shares, "shares")
            if shares.shape != (self.num_groups,) or shares.min() < 0 or shares.sum() <= 0:
                raise ValueError(f"shares must be {self.num_groups} non-negative numbers with a positive sum")
        if ids.size == 0:
            return
        counts = np.bincount(ids, minlength=self.num_groups)
        present = counts > 0
        w = np.ones(ids.size) if weights is None else weights
        mean_signal = (np.bincount(ids, weights=values * w, minlength=self.num_groups)[present]
                       / np.bincount(ids, weights=w, minlength=self.num_groups)[present])
        if self.normalize_by_share:
            reference = counts / ids.size if shares is None else shares / shares.sum()
            # relative to uniform (1 at the uniform share), or the raw share (the paper's form)
            relative = reference if self.share_raw else reference * np.count_nonzero(reference)
            mean_signal = mean_signal / np.maximum(relative[present], self.share_floor)
        old = self.scores[present]
        first = ~self._initialized[present]
        if self.score_mode == "ema":
            updated = np.where(first, mean_signal, (1.0 - self.beta) * old + self.beta * mean_signal)
        else:
            updated = old + mean_signal
        self.scores[present] = updated
        self._initialized[present] = True
        self._active_steps[self._initialized] += 1
        self._clip_steps[self._initialized] += np.abs(self.scores[self._initialized]) >= self.score_clip
        self.steps += 1

    # ----------------------------------------------------------------- reporting and state
    def clip_fraction(self) -> np.ndarray:
        """Per group: fraction of steps since its first observation with |S_b| at the clip C."""
        return self._clip_steps / np.maximum(self._active_steps, 1)

    def metrics(self) -> dict:
        q = self.distribution()
        return {"q": q.tolist(), "q_ratio": q_ratio(q), "scores": self.scores.tolist(),
                "clip_fraction": self.clip_fraction().tolist(), "steps": self.steps}

    def _config(self) -> dict:
        return {"num_groups": self.num_groups, "score_mode": self.score_mode}

    def state_dict(self) -> dict:
        return {"config": self._config(), "scores": self.scores.copy(), "initialized": self._initialized.copy(),
                "clip_steps": self._clip_steps.copy(), "active_steps": self._active_steps.copy(),
                "steps": self.steps, "last_success": self._last_success.copy()}

    def load_state_dict(self, state: dict) -> None:
        if dict(state["config"]) != self._config():
            raise ValueError(f"Prompt-GDRO state was saved with {dict(state['config'])}, this one has {self._config()}")
        shape = (self.num_groups,)
        loaded = {"scores": np.array(state["scores"], np.float64), "initialized": np.array(state["initialized"], bool),
                  "clip_steps": np.array(state["clip_steps"], np.int64),
                  "active_steps": np.array(state["active_steps"], np.int64)}
        for key, value in loaded.items():
            if value.shape != shape:
                raise ValueError(f"Prompt-GDRO state field {key!r} has shape {value.shape}, expected {shape}")
        self.scores, self._initialized = loaded["scores"], loaded["initialized"]
        self._clip_steps, self._active_steps = loaded["clip_steps"], loaded["active_steps"]
        self.steps = int(state["steps"])
        if "last_success" in state:  # states saved before linear weights lack it
            success = np.array([np.nan if v is None else v for v in state["last_success"]], np.float64)
            if success.shape != shape:
                raise ValueError(f"Prompt-GDRO state field 'last_success' has shape {success.shape}, expected {shape}")
            self._last_success = success


def q_ratio(q) -> float:
    """max/min of q over the groups it puts mass on (1.0 for a uniform q; how hard q leans)."""
    q = np.asarray(q, dtype=np.float64)
    q = q[q > 0]
    return float(q.max() / q.min()) if q.size else 1.0
