"""A measured start point for the simulator (`sim.start_from`): real tiers, real base success.

Instead of the synthetic Student-t pool, the learner starts from a real base model's held-out
evaluation: one or more `eval_*.json` files written by the driver (`per_prompt` rows
{id, tier, n, c}). Rows with the same id are merged (c and n summed), so several evaluations of
the same base model sharpen the estimate. Then:

- skill cells are the tiers of the file (the toy world's six skill families), so Θ is one
  competence per tier and `sim.transfer_width` spreads learning across neighbouring tiers
  (tier index order, in units of 1/num_tiers); `sim.num_skills` and `sim.num_tiers` are unused;
- the held-out set is the file's prompts; prompt j's base success probability is a draw from
  its posterior Beta(a_t + c_j, b_t + n_j − c_j), with a per-tier Beta(a_t, b_t) prior fitted to
  the tier's spread of c/n beyond binomial noise (`tier_priors`), so c = 0 prompts stay
  rare-but-possible rather than impossible (`sim.unsolvable_fraction` is unused); every base
  logit is then moved by `sim.start_shift` (0 = as measured; a knob for sensitivity studies);
- `sim.tier_choice_rate` r_t splits a prompt's success into two factors, as in the toy world
  (gdro_ray/models/prepare.py: the warm start picks the right procedure only at a tier-wide
  rate, otherwise a systematic slip): p = ceiling_i · sigmoid(logit), where ceiling_i =
  min(1, p_i / r_t) is the prompt's arithmetic accuracy (fixed: RL cannot supply a skill the
  model lacks) and the logit, starting at logit(r_t), is the procedure choice that training
  moves. Empty = no split (ceiling 1, the logit of p_i);
- the training pool has `sim.num_prompts` prompts split over tiers by `sim.tier_shares`
  (largest-remainder rounding, shuffled; empty = the toy world's shares when the file has its six
  tiers, else uniform); each training prompt's base is a fresh posterior draw for a random held-out
  prompt of its tier.

Everything is a pure function of (files, seed).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gdro_ray.config.loader import ConfigError


def read_start(spec: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Merge the per-prompt rows of the comma-separated files; returns (tier index, c, n, tier names)."""
    rows: dict = {}
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        path = Path(part)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"sim.start_from: cannot read {path} ({e.__class__.__name__})") from None
        per_prompt = data.get("per_prompt") if isinstance(data, dict) else None
        if not isinstance(per_prompt, list) or not per_prompt:
            raise ConfigError(f"sim.start_from: {path} has no per_prompt rows (an eval_*.json of the driver)")
        for r in per_prompt:
            try:
                key, tier, n, c = (r.get("source", ""), r["id"]), r["tier"], int(r["n"]), int(r["c"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"sim.start_from: {path}: every per_prompt row needs id, tier, n, c") from None
            if n < 1 or not 0 <= c <= n or tier is None:
                raise ConfigError(f"sim.start_from: {path}: bad row for id {r['id']} (n={n}, c={c}, tier={tier})")
            old = rows.get(key)
            if old is not None and old[0] != tier:
                raise ConfigError(f"sim.start_from: id {r['id']} has tier {old[0]} in one file and {tier} in another")
            rows[key] = (tier, (old[1] if old else 0) + c, (old[2] if old else 0) + n)
    if not rows:
        raise ConfigError("sim.start_from: no files given")
    names = sorted({str(t) for t, _, _ in rows.values()}, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))
    index = {name: i for i, name in enumerate(names)}
    tiers = np.array([index[str(t)] for t, _, _ in rows.values()], dtype=np.int64)
    c = np.array([v[1] for v in rows.values()], dtype=np.float64)
    n = np.array([v[2] for v in rows.values()], dtype=np.float64)
    return tiers, c, n, names


def tier_priors(tiers: np.ndarray, c: np.ndarray, n: np.ndarray, num_tiers: int) -> np.ndarray:
    """Per tier a Beta(a, b) prior on a prompt's success probability, by the method of moments.

    The spread of c/n is the spread of the true rates plus binomial noise m(1−m)/n; the prior
    takes the part that is not noise. Falls back to Jeffreys' Beta(½, ½) when a tier shows
    no excess spread (or is all 0 or all 1).
    """
    out = np.full((num_tiers, 2), 0.5)
    for t in range(num_tiers):
        sel = tiers == t
        x, nbar = c[sel] / n[sel], float(n[sel].mean())
        m, v = float(x.mean()), float(x.var())
        if sel.sum() < 2 or nbar <= 1 or not 0.0 < m < 1.0:
            continue
        var_p = (v - m * (1.0 - m) / nbar) / (1.0 - 1.0 / nbar)
        if var_p <= 0.0 or var_p >= m * (1.0 - m):
            continue
        total = m * (1.0 - m) / var_p - 1.0
        out[t] = (m * total, (1.0 - m) * total)
    return out


def _draw(a: np.ndarray, b: np.ndarray, rate: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A posterior draw p of each prompt's success, split into (ceiling, logit of the learnable part).

    With a choice rate r of the tier: ceiling = min(1, p / r) (the arithmetic accuracy) and the
    learnable part starts at p / ceiling (= r, or p when p > r); without one (r = 0): ceiling 1.
    """
    p = np.clip(rng.beta(a, b), 1e-6, 1.0 - 1e-6)
    ceiling = np.where(rate > 0, np.minimum(1.0, p / np.maximum(rate, 1e-12)), 1.0)
    q = np.clip(p / ceiling, 1e-6, 1.0 - 1e-6)
    return ceiling, np.log(q) - np.log1p(-q)


def pool_tiers(num_prompts: int, shares: list[float], rng: np.random.Generator) -> np.ndarray:
    """`num_prompts` tier labels, largest-remainder counts of the shares, shuffled."""
    from gdro_ray.data.toy_task import tier_counts

    counts = tier_counts(num_prompts, tuple(shares))
    order = np.repeat(np.arange(len(shares)), counts)
    return rng.permutation(order)


def measured_start(sim, rng: np.random.Generator) -> dict:
    """Base logits and tiers of the training pool and the held-out set, from `sim.start_from`."""
    from gdro_ray.data.toy_task import TIER_SHARES

    tier_eval, c, n, names = read_start(sim.start_from)
    num_tiers = len(names)
    shares = list(sim.tier_shares) or (list(TIER_SHARES) if num_tiers == len(TIER_SHARES) else [1.0] * num_tiers)
    if len(shares) != num_tiers:
        raise ConfigError(f"sim.tier_shares: {len(shares)} shares for the {num_tiers} tiers of sim.start_from")
    rate = np.asarray(list(sim.tier_choice_rate) or [0.0] * num_tiers, dtype=np.float64)
    if rate.size != num_tiers:
        raise ConfigError(f"sim.tier_choice_rate: {rate.size} values for the {num_tiers} tiers of sim.start_from")
    prior = tier_priors(tier_eval, c, n, num_tiers)
    a, b = prior[tier_eval, 0] + c, prior[tier_eval, 1] + n - c  # each prompt's posterior
    ceil_eval, base_eval = _draw(a, b, rate[tier_eval], rng)
    tier_train = pool_tiers(int(sim.num_prompts), shares, rng)
    members = [np.flatnonzero(tier_eval == t) for t in range(num_tiers)]
    pick = np.empty(tier_train.size, dtype=np.int64)
    for t in range(num_tiers):
        where = np.flatnonzero(tier_train == t)
        if where.size:
            pick[where] = rng.choice(members[t], size=where.size)
    ceil_train, base_train = _draw(a[pick], b[pick], rate[tier_train], rng)
    return {"base_train": base_train + sim.start_shift, "base_eval": base_eval + sim.start_shift,
            "ceil_train": ceil_train, "ceil_eval": ceil_eval, "tier_train": tier_train,
            "tier_eval": tier_eval, "tier_names": names, "shares": shares}
