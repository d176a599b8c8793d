"""Learning curves from a gdro_vs_grpo.py results file: GRPO's learning check and compute to target.

Reads the committed per-seed, arm and evaluation (n, c) summary that `gdro_vs_grpo.py --results`
writes (runs made with `eval.every`, so each run has evaluations along the way) and reports:
- the learning check: GRPO's held-out pooled mean@8 from the base to the final checkpoint, the
  relative gain with its 95% CI (paired by prompt and seed, prompts resampled within tiers), and
  the share of the final gain reached at each evaluation step (on the mean over seeds);
- compute to target: for each arm and seed, the rollouts sampled until pooled mean@8 first
  reaches GRPO's final pooled mean@8 of the same seed (linear between evaluations, the base at
  step 0), and the ratio to GRPO's own; a run whose curve never gets there is "not reached", and
  counts as infinitely many rollouts in the median ratio over seeds.
  Every arm samples the same rollouts per step, so rollouts are steps × rollouts per step.

    python benchmarks/gdro_curves.py benchmarks/results/issue22-slow.json [--steps 120] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gdro_ray.eval.stats import paired_bootstrap  # noqa: E402


def _mean8(cell: dict) -> np.ndarray:
    c = np.asarray(cell["c"], dtype=np.float64)
    return c / np.broadcast_to(np.asarray(cell["n"], dtype=np.float64), c.shape)


def _step(label: str, steps: int) -> int:
    return steps if label == "final" else int(label.removeprefix("step"))


def curve(summary: dict, arm: str, seed: str, steps: int) -> list[tuple[int, float]]:
    """(step, pooled mean@8) from the base (step 0) through every evaluation to the final one."""
    points = {0: float(_mean8(summary["base"][seed]).mean())}
    for label, cell in summary["arms"][arm]["seeds"][seed]["evals"].items():
        points[_step(label, steps)] = float(_mean8(cell).mean())
    return sorted(points.items())


def first_reach(points: list[tuple[int, float]], target: float) -> float | None:
    """The (interpolated) step at which the curve first reaches `target`; None if it never does."""
    if points[0][1] >= target:
        return float(points[0][0])
    for (s0, m0), (s1, m1) in zip(points, points[1:]):
        if m1 >= target:
            return s0 + (target - m0) / (m1 - m0) * (s1 - s0)
    return None


def learning_check(summary: dict, steps: int) -> dict:
    seeds = list(summary["arms"]["grpo"]["seeds"])
    tiers = np.array(summary["prompts"]["tier"])
    base = np.stack([_mean8(summary["base"][s]) for s in seeds])
    final = np.stack([_mean8(summary["arms"]["grpo"]["seeds"][s]["evals"]["final"]) for s in seeds])
    curves = [curve(summary, "grpo", s, steps) for s in seeds]
    mean_curve = {step: float(np.mean([dict(c)[step] for c in curves])) for step, _ in curves[0]}
    gain = mean_curve[steps] - mean_curve[0]
    return {
        "base": float(base.mean()),
        "final": float(final.mean()),
        "relative_gain": paired_bootstrap(base, final, kind="relative", strata=tiers).as_dict(),
        "mean_curve": mean_curve,
        "share_of_gain": {step: (m - mean_curve[0]) / gain if gain else float("nan") for step, m in mean_curve.items()},
    }


def compute_to_target(summary: dict, steps: int) -> dict:
    out = {}
    for arm, entry in summary["arms"].items():
        per_seed = {}
        for seed, seed_entry in entry["seeds"].items():
            target = curve(summary, "grpo", seed, steps)[-1][1]
            reach = first_reach(curve(summary, arm, seed, steps), target)
            per_step = seed_entry["rollouts"] / steps
            per_seed[seed] = {"target": target, "step": reach, "rollouts": None if reach is None else reach * per_step}
        out[arm] = {"seeds": per_seed}
    for entry in out.values():
        ratios = []
        for seed, cell in entry["seeds"].items():
            own, grpo = cell["rollouts"], out["grpo"]["seeds"][seed]["rollouts"]
            cell["vs_grpo"] = None if own is None or not grpo else own / grpo
            ratios.append(cell["vs_grpo"])
        reached = [r for r in ratios if r is not None]
        entry["reached"] = f"{len(reached)}/{len(ratios)}"
        # the median over seeds with "not reached" as infinitely many rollouts: a mean over the
        # seeds that got there would flatter an arm that mostly does not
        median = float(np.median([np.inf if r is None else r for r in ratios]))
        entry["vs_grpo_median"] = median if np.isfinite(median) else None
    return out


def _steps_of(summary: dict) -> int | None:
    for o in summary.get("overrides") or []:
        if o.startswith("steps="):
            return int(o.split("=", 1)[1])
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a gdro_vs_grpo.py --results file")
    ap.add_argument("--steps", type=int, default=0, help="the runs' steps (default: from the file's overrides)")
    ap.add_argument("--out", default="", help="also write the numbers as JSON here")
    args = ap.parse_args(argv)
    path = Path(args.results)
    if not path.is_file():
        raise SystemExit(f"{path}: no such results file")
    summary = json.loads(path.read_text())
    steps = args.steps or _steps_of(summary)
    if not steps:
        raise SystemExit(f"{path}: the file's overrides name no steps=; pass --steps")
    if not any(len(e["evals"]) > 1 for e in summary["arms"]["grpo"]["seeds"].values()):
        raise SystemExit(f"{path}: the runs have no evaluations along the way (made without eval.every)")
    check, reach = learning_check(summary, steps), compute_to_target(summary, steps)
    g = check["relative_gain"]
    print(f"GRPO pooled mean@8 {check['base']:.3f} -> {check['final']:.3f}: {g['estimate']:+.1%} [{g['low']:+.1%}, {g['high']:+.1%}]")
    print("share of the final gain by step: " + ", ".join(f"{s}: {v:.0%}" for s, v in check["share_of_gain"].items() if s))
    for arm, entry in reach.items():
        cells = ", ".join(
            f"s{s} " + ("not reached" if c["rollouts"] is None else f"{c['rollouts']:,.0f} ({c['vs_grpo']:.2f}×)") for s, c in entry["seeds"].items()
        )
        median = entry["vs_grpo_median"]
        print(
            f"{arm}: rollouts to GRPO's final pooled mean@8, reached {entry['reached']}, median "
            + (f"{median:.2f}× GRPO's" if median is not None else "not reached")
            + f": {cells}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"steps": steps, "learning_check": check, "compute_to_target": reach}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
