"""Run one algorithm against the synthetic learner and summarise it.

One step is the service's round trip without the model: the adversary schedules prompts,
rollout counts and advantage weights; the learner samples Bernoulli rewards for every
rollout; the adversary observes them; the learner learns from the step's GRPO signal. Every
algorithm of one comparison starts from the same synthetic pool (it depends only on the seed).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gdro_ray.algorithms.adversary import Adversary
from gdro_ray.algorithms.prompt_gdro import informative_mean_one
from gdro_ray.config.loader import ConfigError
from gdro_ray.config.schema import Config
from gdro_ray.sim.learner import SyntheticLearner

HOPELESS_PASS_AT_K = 0.05  # findings §4: rollouts spent on prompts with true pass@8 below this


def _synthetic_surrogate(rewards: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Stand-in for the learner's per-prompt clipped-surrogate loss (no real policy here).

    The paper's surrogate is a noisy residual of policy drift, zero for groups without an
    advantage (the paper's loss signal, docs/algorithms.md); model it as the group's reward std times |noise|.
    """
    std = np.fromiter((r.std() for r in rewards), dtype=np.float64, count=len(rewards))
    return std * np.abs(rng.standard_normal(len(rewards)))


def run_algorithm(cfg: Config, algorithm: str, out_dir: Path,
                  log: Callable[[str], None] = print) -> dict:
    """Simulate `cfg.steps` steps of `algorithm`; write `out_dir/metrics.jsonl`; return its summary."""
    cfg = dataclasses.replace(cfg, algorithm=algorithm)
    sim, k = cfg.sim, cfg.sim.eval_k
    t_start = time.perf_counter()
    learner = SyntheticLearner(sim, cfg.seed)
    try:
        adversary = Adversary.from_config(cfg, sim.num_prompts)
    except ValueError as e:  # a setting the controllers refuse: report it as a config error
        raise ConfigError(f"{algorithm}: {e}") from None
    rng = np.random.default_rng([cfg.seed, 3])
    base_eval = learner.evaluate(k)
    curve_keys = ("pass_at_k_mean", "worst_tier_pass_at_k", "hardest20_pass_at_k", "mean_at_k",
                  "tier_pass_at_k", "tier_mean_at_k")
    curve = [{"step": 0, **{key: base_eval[key] for key in curve_keys}}]
    reward_curve: list[float] = []  # mean training reward per step
    totals = {"rollouts": 0, "useful": 0, "hopeless": 0, "slots": 0, "repeated": 0, "adversary_ms": 0.0}

    out_dir.mkdir(parents=True, exist_ok=True)
    final_path, partial = out_dir / "metrics.jsonl", out_dir / "metrics.jsonl.partial"
    with open(partial, "w") as fh:
        for step in range(cfg.steps):
            sch = adversary.schedule()
            ids, n = sch.prompt_ids, sch.rollouts
            hopeless = learner.true_pass_at_k(ids, k) < HOPELESS_PASS_AT_K
            flat = learner.sample(ids, n, rng)
            starts = np.concatenate([[0], np.cumsum(n)[:-1]])
            correct = np.add.reduceat(flat, starts).astype(np.int64)
            rewards = np.split(flat, starts[1:])
            surrogate = _synthetic_surrogate(rewards, rng) if cfg.prompt_gdro.signal == "surrogate" else None
            record = adversary.observe(sch, rewards, surrogate)
            reward_curve.append(float(flat.mean()) if flat.size else 0.0)
            useful = (correct > 0) & (correct < n)
            weights = sch.adv_weights
            if cfg.prompt_gdro.informative_norm:  # as the driver does (prompt_gdro.informative_mean_one)
                weights = informative_mean_one(weights, n, useful, cfg.prompt_gdro.omega_max)
            learner.learn(ids, n, correct, weights)

            totals["rollouts"] += int(n.sum())
            totals["useful"] += int(n[useful].sum())
            totals["hopeless"] += int(n[hopeless].sum())
            totals["slots"] += int(ids.size)
            totals["repeated"] += record["repeated_slots"]
            totals["adversary_ms"] += record["adversary_ms"]
            record["hopeless_rollout_fraction"] = float(n[hopeless].sum() / max(int(n.sum()), 1))
            last = step + 1 == cfg.steps
            if last or (sim.eval_every > 0 and (step + 1) % sim.eval_every == 0):
                ev = learner.evaluate(k)
                record["eval_pass_at_k"] = ev["pass_at_k_mean"]
                record["eval_worst_tier_pass_at_k"] = ev["worst_tier_pass_at_k"]
                record["eval_hardest20_pass_at_k"] = ev["hardest20_pass_at_k"]
                curve.append({"step": step + 1, **{key: ev[key] for key in curve_keys}})
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
    os.replace(partial, final_path)  # a crash leaves a .partial file, never a half metrics.jsonl

    final = learner.evaluate(k)
    wall = time.perf_counter() - t_start
    rollouts = max(totals["rollouts"], 1)
    summary = {
        "algorithm": algorithm,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "budget_mean": cfg.budget_mean,
        "k": k,
        "final_pass_at_k_mean": final["pass_at_k_mean"],
        "final_worst_bin_pass_at_k": final["worst_tier_pass_at_k"],
        "final_hardest20_pass_at_k": final["hardest20_pass_at_k"],
        "final_tier_pass_at_k": final["tier_pass_at_k"],
        "final_tier_mean_at_k": final["tier_mean_at_k"],
        "tier_names": learner.tier_names,
        "final_train_pass_at_k_mean": final["train_pass_at_k_mean"],
        "final_mean_at_k": final["mean_at_k"],
        "base_pass_at_k_mean": base_eval["pass_at_k_mean"],
        "base_worst_bin_pass_at_k": base_eval["worst_tier_pass_at_k"],
        "base_hardest20_pass_at_k": base_eval["hardest20_pass_at_k"],
        "base_tier_pass_at_k": base_eval["tier_pass_at_k"],
        "base_tier_mean_at_k": base_eval["tier_mean_at_k"],
        "base_mean_at_k": base_eval["mean_at_k"],
        "rollouts_total": totals["rollouts"],
        "useful_rollout_fraction": totals["useful"] / rollouts,
        "hopeless_rollout_fraction": totals["hopeless"] / rollouts,
        "repeated_slot_fraction": totals["repeated"] / max(totals["slots"], 1),
        "max_visits_per_prompt": int(learner.visits.max()),
        "distinct_prompts_trained": int(np.count_nonzero(learner.visits)),
        "adversary_ms_mean": totals["adversary_ms"] / max(cfg.steps, 1),
        "wall_s": wall,
        "eval_curve": curve,
        "train_reward_curve": reward_curve,
    }
    log(f"  {algorithm:<13} pass@{k} {summary['final_pass_at_k_mean']:.4f}  worst tier "
        f"{summary['final_worst_bin_pass_at_k']:.4f}  hardest20 {summary['final_hardest20_pass_at_k']:.4f}  "
        f"({wall:.1f} s)")
    return summary
