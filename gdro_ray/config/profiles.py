"""Profiles: named bundles of GDRO settings (`profile=project|paper|learnability`).

A profile is applied *under* everything the user chose: schema defaults < profile < preset <
config file < overrides, so any key a preset, file or override sets wins over the profile, key
by key. The resolved config records the profile and, in `profile_values`, the key=value pairs of
the profile it holds (each one a valid override, so a run can be reproduced without the profile).

- `project`: nothing; the schema defaults are the project's choices (docs/algorithms.md).
- `paper`: the paper's modes kept exact (arXiv 2601.19280, App. A and its released code;
  docs/algorithms.md says where we depart from it): reweight mode, the clipped-surrogate loss signal, the raw batch
  share with floor 0.02, no score clip, the reward-variance proxy, rollouts n̄/2 … 3n̄ (2 … 12 at
  the paper's n̄ = 4), token-mean loss, 10 equal-width pass@8 bins.
- `learnability`: Prompt-GDRO that follows measured learning progress (linear weights on
  worst-group weight × progress over equal-count bins, tilting the pool's own mix), with the
  knapsack rollout allocator for runs that also use Rollout-GDRO.

Every departure of each profile from the paper, and why: docs/algorithms.md, "Profiles".
"""
from __future__ import annotations

from typing import Any

PROFILES = ("project", "paper", "learnability")
DEFAULT_BUDGET_MEAN = 4  # the schema's budget_mean, for a config that sets none

PAPER_EDGES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def _rollout_range(budget_mean: int) -> dict[str, int]:
    # the paper's arms 2 … 12 at n̄ = 4 are n̄/2 … 3n̄; a group needs 2 rollouts for a baseline
    return {"rollout_gdro.n_min": max(2, budget_mean // 2), "rollout_gdro.n_max": 3 * budget_mean}


def profile_bundle(name: str, budget_mean: int) -> dict[str, Any]:
    """The dotted key → value pairs a profile sets, for a run with mean rollout budget n̄."""
    if name == "project":
        return {}
    if name == "paper":
        return {
            # Prompt-GDRO (App. A.2.1 and the code's ClassDroExp3p)
            "prompt_gdro.mode": "reweight", "prompt_gdro.signal": "surrogate",
            "prompt_gdro.share_normalization": "batch_raw", "prompt_gdro.share_floor": 0.02,
            "prompt_gdro.score_clip": 0.0, "prompt_gdro.eta": 0.65, "prompt_gdro.gamma": 0.01,
            "prompt_gdro.beta": 0.12, "prompt_gdro.omega_max": 15.0, "prompt_gdro.weights": "exp",
            "prompt_gdro.informative_norm": False,
            # Rollout-GDRO (App. A.2.2): arms n̄/2 … 3n̄, α_μ 0.05, EMA 0.4, p̂(1 − p̂) per visit
            "rollout_gdro.mode": "shadow_price", "rollout_gdro.proxy": "reward_variance",
            **_rollout_range(budget_mean), "rollout_gdro.dual_lr": 0.05, "rollout_gdro.v_min": 0.01,
            "rollout_gdro.variance_beta": 0.4,
            # GRPO (App. A.1.1; verl's default token-mean aggregation behind Table 1)
            "grpo.loss_agg": "token_mean", "grpo.clip_low": 0.2, "grpo.clip_high": 0.28, "grpo.kl_coef": 0.001,
            "grpo.adv_clip": 5.0, "grpo.mini_batches": 2, "grpo.epochs": 1,
            # the classifier: 10 bins, edges 0.1 … 0.9 on pass@8, δ 0.03, H 50 visits
            "classifier.binning": "equal_width", "classifier.edges": list(PAPER_EDGES), "classifier.k": 8,
            "classifier.hysteresis": 0.03, "classifier.window": 50,
        }
    if name == "learnability":
        return {
            "prompt_gdro.mode": "resample", "prompt_gdro.resample_base": "pool",
            "prompt_gdro.signal": "progress", "prompt_gdro.weights": "linear",
            # worst-group weight e^(−2.5 p̄): 7.4× between a bin at p̄ 0.05 and one at 0.85, the
            # 4–10× concentration the paper's figures show; the floor keeps every equal-count bin at
            # ≥ 3% of the batch (≈ 2 prompts a step at B = 64), so each bin's progress keeps being measured
            "prompt_gdro.worst_eta": 2.5, "prompt_gdro.gamma": 0.3, "prompt_gdro.beta": 0.12,
            "prompt_gdro.share_normalization": "auto", "prompt_gdro.allow_repeats": True,
            "prompt_gdro.max_repeats": 2,
            "classifier.binning": "equal_count", "classifier.refresh_every": 10,
            "rollout_gdro.mode": "knapsack", **_rollout_range(budget_mean),
        }
    raise ValueError(f"unknown profile {name!r}")


def _nest(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        *sections, leaf = key.split(".")
        node = tree
        for sec in sections:
            node = node.setdefault(sec, {})
        node[leaf] = list(value) if isinstance(value, list) else value
    return tree


def deep_merge(base: dict, top: dict) -> dict:
    """`base` with `top` laid over it, key by key into nested sections (the loader's layers too)."""
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_profile(merged: dict, error) -> tuple[dict, dict[str, Any]]:
    """(the merged layers with the profile under them, the profile's bundle); `error(msg)` raises
    the loader's one-line ConfigError."""
    name = merged.get("profile", "project")
    if not isinstance(name, str) or name not in PROFILES:
        error(f"profile: must be one of {', '.join(PROFILES)}, got {name!r}")
    budget = merged.get("budget_mean", DEFAULT_BUDGET_MEAN)
    if isinstance(budget, bool) or not isinstance(budget, int):
        budget = DEFAULT_BUDGET_MEAN  # not an integer: the key's own check says so when the config is built
    bundle = profile_bundle(name, budget)
    out = deep_merge(_nest(bundle), {k: v for k, v in merged.items() if k != "profile_values"})
    return out, bundle


def format_value(value: Any) -> str:
    """A value as it would be typed in an override (key=value reads it back the same)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def recorded_values(cfg, bundle: dict[str, Any]) -> list[str]:
    """key=value for every pair of the bundle that the resolved `cfg` holds."""
    out = []
    for key, value in bundle.items():
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if node == value:
            out.append(f"{key}={format_value(value)}")
    return out
