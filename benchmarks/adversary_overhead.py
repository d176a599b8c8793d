"""Adversary overhead per training step: classify + schedule + observe, both controllers on.

For pools of 14.1k and 1M prompts at B = 256 and B = 4,096 (n̄ = 4), the classifier is first
brought to a steady state (every prompt observed once, so the bins are populated as in a run
that has gone through an epoch), then the `Adversary` runs warm-up steps and timed steps with
synthetic Bernoulli rewards from a fixed heavy-tailed pool. Only `schedule()` + `observe()` are
timed, not the reward generation. Both ways of applying Prompt-GDRO are measured.

Targets: ≤ 2 ms median at 14.1k/B=256, ≤ 50 ms at 1M/B=4,096, ≤ 200 bytes of state
per prompt. Prints a table and writes benchmarks/out/adversary_overhead.json.

    python benchmarks/adversary_overhead.py [--steps 60] [--warmup 10] [--quick]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from gdro_ray.algorithms.adversary import Adversary

TARGET_MS = {(14_100, 256): 2.0, (1_000_000, 4096): 50.0}
TARGET_BYTES = 200.0
OUT = Path(__file__).resolve().parent / "out" / "adversary_overhead.json"


def _pool_p(num_prompts: int, rng: np.random.Generator) -> np.ndarray:
    """Per-rollout success probabilities: many hard prompts, a long tail of easy ones."""
    p = rng.beta(0.35, 0.9, num_prompts)
    p[rng.random(num_prompts) < 0.05] = 0.0
    return p


def _rewards(prompt_ids, rollouts, p, rng) -> list[np.ndarray]:
    flat = (rng.random(int(rollouts.sum())) < np.repeat(p[prompt_ids], rollouts)).astype(np.float64)
    return np.split(flat, np.cumsum(rollouts)[:-1])


def _warm_classifier(adv: Adversary, p: np.ndarray, rng: np.random.Generator) -> None:
    """One visit of n̄ rollouts for every prompt, in chunks, so every bin is populated."""
    n = adv.budget_mean
    for start in range(0, adv.num_prompts, 65_536):
        ids = np.arange(start, min(start + 65_536, adv.num_prompts), dtype=np.int64)
        c = rng.binomial(n, p[ids])
        adv.classifier.observe(ids, np.full(ids.size, n), c)
        adv.classifier.end_step()


def measure(num_prompts: int, batch: int, mode: str, steps: int, warmup: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    p = _pool_p(num_prompts, rng)
    adv = Adversary(num_prompts=num_prompts, algorithm="both", batch_size=batch, budget_mean=4,
                    signal="learnability", mode=mode, allow_repeats=True, seed=seed)
    _warm_classifier(adv, p, rng)
    sched_ms, obs_ms, total_ms = [], [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        sch = adv.schedule()
        t1 = time.perf_counter()
        rewards = _rewards(sch.prompt_ids, sch.rollouts, p, rng)  # not timed: the samplers' work
        t2 = time.perf_counter()
        adv.observe(sch, rewards)
        t3 = time.perf_counter()
        if i >= warmup:
            sched_ms.append((t1 - t0) * 1e3)
            obs_ms.append((t3 - t2) * 1e3)
            total_ms.append((t1 - t0 + t3 - t2) * 1e3)
    target = TARGET_MS.get((num_prompts, batch))
    median = float(np.median(total_ms))
    return {
        "num_prompts": num_prompts, "batch_size": batch, "mode": mode, "steps": steps,
        "median_ms": median, "p90_ms": float(np.percentile(total_ms, 90)),
        "schedule_median_ms": float(np.median(sched_ms)), "observe_median_ms": float(np.median(obs_ms)),
        "state_bytes_per_prompt": adv.state_bytes_per_prompt(),
        "target_ms": target, "meets_target": None if target is None else median <= target,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="timed steps per case (≥ 50 for the report)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="only the 14.1k pool (a smoke run)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    pools = [14_100] if args.quick else [14_100, 1_000_000]
    rows = []
    for num_prompts in pools:
        for batch in (256, 4096):
            for mode in ("resample", "reweight"):
                rows.append(measure(num_prompts, batch, mode, args.steps, args.warmup))
                r = rows[-1]
                print(f"pool {num_prompts:>9,}  B {batch:>5}  {mode:<8}  median {r['median_ms']:8.2f} ms  "
                      f"(schedule {r['schedule_median_ms']:.2f} + observe {r['observe_median_ms']:.2f})  "
                      f"p90 {r['p90_ms']:8.2f} ms  state {r['state_bytes_per_prompt']:.0f} B/prompt", flush=True)
    print()
    print("| pool | B | mode | median ms | p90 ms | schedule ms | observe ms | bytes/prompt | target |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        target = "" if r["target_ms"] is None else f"≤ {r['target_ms']:g} ms: {'ok' if r['meets_target'] else 'MISSED'}"
        print(f"| {r['num_prompts']:,} | {r['batch_size']} | {r['mode']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
              f"{r['schedule_median_ms']:.2f} | {r['observe_median_ms']:.2f} | {r['state_bytes_per_prompt']:.0f} | {target} |")
    worst_bytes = max(r["state_bytes_per_prompt"] for r in rows)
    print(f"\nstate: {worst_bytes:.0f} bytes/prompt (target ≤ {TARGET_BYTES:g}): "
          f"{'ok' if worst_bytes <= TARGET_BYTES else 'MISSED'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                               "numpy": np.__version__, "rows": rows, "target_bytes_per_prompt": TARGET_BYTES},
                              indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
