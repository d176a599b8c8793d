"""The simulator's comparison: the config rule of `gdro-ray simulate` and its table.

Steps, batch size and rollout budget: `sim.steps` / `sim.batch_size` / `sim.budget_mean`
(1,000 × 256 × 4, the DAPO scale) unless the top-level `steps` / `batch_size` / `budget_mean` is
given explicitly on the command line or in the user's YAML file (`explicit_top_keys`); a preset's
training value (e.g. the toy preset's batch_size 64 and n̄ 8) does not count as explicit.
`comparison_table` shows each algorithm's final scores with gains relative to GRPO.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import yaml

from gdro_ray.config.loader import ConfigError
from gdro_ray.config.schema import ALGORITHMS, Config


def explicit_top_keys(args) -> set[str]:
    keys = {item.split("=", 1)[0].strip() for item in (getattr(args, "overrides", None) or []) if "=" in item}
    if getattr(args, "config", None):
        try:
            data = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError):
            data = {}  # load_config has already validated the file; nothing more to learn here
        if isinstance(data, dict):
            keys |= set(data)
    return keys


def resolve_sim_config(cfg: Config, explicit: set[str]) -> Config:
    """Apply the simulate rule for steps/batch_size/budget_mean and check the sim section."""
    sim = cfg.sim
    cfg = dataclasses.replace(
        cfg,
        steps=cfg.steps if "steps" in explicit else sim.steps,
        batch_size=cfg.batch_size if "batch_size" in explicit else sim.batch_size,
        budget_mean=cfg.budget_mean if "budget_mean" in explicit else sim.budget_mean,
    )
    bs_key = "batch_size" if "batch_size" in explicit else "sim.batch_size"

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    need(cfg.steps >= 1, "steps" if "steps" in explicit else "sim.steps", f"must be ≥ 1, got {cfg.steps}")
    need(cfg.batch_size >= 1, bs_key, f"must be ≥ 1, got {cfg.batch_size}")
    r = cfg.rollout_gdro
    need(r.n_min <= cfg.budget_mean <= r.n_max, "budget_mean" if "budget_mean" in explicit else "sim.budget_mean",
         f"must lie in [rollout_gdro.n_min={r.n_min}, rollout_gdro.n_max={r.n_max}], got {cfg.budget_mean}")
    need(sim.num_prompts >= 1, "sim.num_prompts", f"must be ≥ 1, got {sim.num_prompts}")
    need(sim.num_tiers >= 1, "sim.num_tiers", f"must be ≥ 1, got {sim.num_tiers}")
    need(sim.eval_prompts >= sim.num_tiers, "sim.eval_prompts",
         f"must be ≥ sim.num_tiers={sim.num_tiers}, got {sim.eval_prompts}")
    need(sim.num_skills >= 1, "sim.num_skills", f"must be ≥ 1, got {sim.num_skills}")
    need(sim.tail_shape > 0, "sim.tail_shape", f"must be > 0, got {sim.tail_shape}")
    need(sim.logit_spread >= 0, "sim.logit_spread", f"must be ≥ 0, got {sim.logit_spread}")
    need(sim.learning_rate >= 0, "sim.learning_rate", f"must be ≥ 0, got {sim.learning_rate}")
    need(0.0 <= sim.transfer <= 1.0, "sim.transfer", f"must be in [0,1], got {sim.transfer}")
    need(sim.revisit_scale >= 0, "sim.revisit_scale", f"must be ≥ 0, got {sim.revisit_scale}")
    need(sim.transfer_width > 0, "sim.transfer_width", f"must be > 0, got {sim.transfer_width}")
    need(0.0 <= sim.unsolvable_fraction < 1.0, "sim.unsolvable_fraction",
         f"must be in [0,1), got {sim.unsolvable_fraction}")
    need(sim.rollout_exponent >= 0, "sim.rollout_exponent", f"must be ≥ 0, got {sim.rollout_exponent}")
    need(sim.eval_every >= 0, "sim.eval_every", f"must be ≥ 0, got {sim.eval_every}")
    need(sim.eval_k >= 1, "sim.eval_k", f"must be ≥ 1, got {sim.eval_k}")
    for part in [x.strip() for x in sim.start_from.split(",") if x.strip()]:
        need(Path(part).is_file(), "sim.start_from", f"{part}: not a file")
    need(all(s >= 0 for s in sim.tier_shares) and (not sim.tier_shares or sum(sim.tier_shares) > 0),
         "sim.tier_shares", f"must be ≥ 0 with a positive sum, got {list(sim.tier_shares)}")
    need(sim.ceiling_lr >= 0, "sim.ceiling_lr", f"must be ≥ 0, got {sim.ceiling_lr}")
    need(sim.interference >= 0, "sim.interference", f"must be ≥ 0, got {sim.interference}")
    need(all(0.0 < r < 1.0 for r in sim.tier_choice_rate), "sim.tier_choice_rate",
         f"every value must be in (0, 1), got {list(sim.tier_choice_rate)}")
    resample_no_repeats = cfg.prompt_gdro.mode == "resample" and not cfg.prompt_gdro.allow_repeats
    need(not resample_no_repeats or cfg.batch_size <= sim.num_prompts, bs_key,
         f"{cfg.batch_size} > sim.num_prompts={sim.num_prompts} needs prompt_gdro.allow_repeats=true")
    return cfg


def parse_algorithms(flag: str | None, default: str) -> list[str]:
    if not flag:
        return [default]
    names = [a.strip() for a in flag.split(",") if a.strip()]
    for a in names:
        if a not in ALGORITHMS:
            raise ConfigError(f"--algorithms: unknown algorithm '{a}' (known: {', '.join(ALGORITHMS)})")
    if not names:
        raise ConfigError("--algorithms: empty list")
    return list(dict.fromkeys(names))


def _rel(value: float, base: float) -> str:
    if base <= 0 or math.isnan(base):
        return "n/a"
    return f"{100.0 * (value / base - 1.0):+.1f}%"


def comparison_table(summaries: dict[str, dict]) -> str:
    base = summaries.get("grpo")
    k = next(iter(summaries.values()))["k"]
    head = ["algorithm", f"pass@{k}", "vs grpo", "worst tier", "vs grpo", "hardest 20%", "vs grpo",
            f"train pass@{k}", "useful", "hopeless", "wall s"]
    rows = []

    def col(s: dict, key: str) -> tuple[str, str]:
        return f"{s[key]:.4f}", (_rel(s[key], base[key]) if base else "")

    for name, s in summaries.items():
        p, pr = col(s, "final_pass_at_k_mean")
        w, wr = col(s, "final_worst_bin_pass_at_k")
        h, hr = col(s, "final_hardest20_pass_at_k")
        rows.append([name, p, pr, w, wr, h, hr, f"{s['final_train_pass_at_k_mean']:.4f}",
                     f"{s['useful_rollout_fraction']:.3f}", f"{s['hopeless_rollout_fraction']:.3f}",
                     f"{s['wall_s']:.1f}"])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
