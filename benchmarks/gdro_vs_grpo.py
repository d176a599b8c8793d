"""Does GDRO beat GRPO here? The four-way comparison on the toy task, and in the simulator.

Toy task (real pipeline): `gdro-ray train preset=toy` for algorithm ∈ {grpo, prompt_gdro,
rollout_gdro, both} × seeds, at the same rollout budget (B·n̄ per step) and the same number of
steps. For each run: held-out pass@8 and mean@8 per tier, pooled, worst tier and the hardest
tiers (the GDRO objective), rollouts spent, the fraction of rollouts in groups with non-zero
advantage, wall time. Means ± standard deviation over seeds; the relative gain is against GRPO
with the same seed set. Overlay plots come from `gdro-ray report` on the seed-0 runs.

Simulator (`--sim`): the same four-way comparison at DAPO scale (14,100 prompts, B = 256,
n̄ = 4, 1,000 steps) through `gdro-ray simulate`.

Prints tables and writes benchmarks/out/gdro_vs_grpo.json.

    python benchmarks/gdro_vs_grpo.py [--seeds 0,1,2] [--steps 30] [--sim] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
ALGORITHMS = ("grpo", "prompt_gdro", "rollout_gdro", "both")


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", *args], check=True, stdout=subprocess.DEVNULL)


def toy_run(alg: str, seed: int, steps: int, extra: list[str], root: Path) -> dict:
    run = root / f"{alg}-s{seed}"
    if not (run / "eval_final.json").is_file():  # resumable benchmark: finished runs are kept
        if run.exists():
            import shutil

            shutil.rmtree(run)
        t0 = time.time()
        _cli("train", "preset=toy", f"algorithm={alg}", f"seed={seed}", f"steps={steps}", "checkpoint.every=0",
             f"out={run}", *extra)
        (run / "wall_s.txt").write_text(f"{time.time() - t0:.1f}")
    records = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("type") != "eval"]
    final = json.loads((run / "eval_final.json").read_text())
    base = json.loads((run / "eval_base.json").read_text())
    tiers = {t: v["pass_at_k"] for t, v in final["per_tier"].items()}
    hardest = sorted(tiers, key=lambda t: base["per_tier"][t]["pass_at_k"])[:2]
    return {
        "alg": alg, "seed": seed, "run_dir": str(run),
        "pass_at_k": final["pooled"]["pass_at_k"], "mean_at_k": final["pooled"]["mean_at_k"],
        "base_pass_at_k": base["pooled"]["pass_at_k"],
        "worst_tier": min(tiers.values()), "hardest_tiers": statistics.mean(tiers[t] for t in hardest),
        "hardest_tier_names": hardest, "per_tier": tiers,
        "rollouts": sum(r["rollouts"] for r in records),
        "useful_fraction": statistics.mean(r["useful_rollout_fraction"] for r in records),
        "wall_s": float((run / "wall_s.txt").read_text()),
    }


def _ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f}±{statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"


def toy_table(rows: list[dict]) -> tuple[str, dict]:
    by = {a: [r for r in rows if r["alg"] == a] for a in ALGORITHMS if any(r["alg"] == a for r in rows)}
    g = by.get("grpo")
    summary, lines = {}, [f"{'algorithm':13s} {'pass@8':>13s} {'rel':>7s} {'mean@8':>13s} {'worst tier':>13s} "
                          f"{'hardest 2':>13s} {'rel':>7s} {'useful':>7s} {'rollouts':>9s} {'wall s':>7s}"]
    for a, rs in by.items():
        s = {k: statistics.mean(r[k] for r in rs) for k in ("pass_at_k", "mean_at_k", "worst_tier", "hardest_tiers",
                                                              "useful_fraction", "rollouts", "wall_s")}
        rel = (s["pass_at_k"] / statistics.mean(r["pass_at_k"] for r in g) - 1) * 100 if g else float("nan")
        relh = (s["hardest_tiers"] / max(statistics.mean(r["hardest_tiers"] for r in g), 1e-9) - 1) * 100 if g \
            else float("nan")
        s.update(rel_pass_at_k_pct=rel, rel_hardest_pct=relh, seeds=[r["seed"] for r in rs])
        summary[a] = s
        lines.append(f"{a:13s} {_ms([r['pass_at_k'] for r in rs]):>13s} {rel:+6.1f}% "
                     f"{_ms([r['mean_at_k'] for r in rs]):>13s} {_ms([r['worst_tier'] for r in rs]):>13s} "
                     f"{_ms([r['hardest_tiers'] for r in rs]):>13s} {relh:+6.1f}% {s['useful_fraction']:7.3f} "
                     f"{s['rollouts']:9.0f} {s['wall_s']:7.0f}")
    return "\n".join(lines), summary


def sim_comparison(extra: list[str]) -> dict:
    out = OUT / "gdro_vs_grpo_sim"
    t0 = time.time()
    _cli("simulate", f"out={out}", "--algorithms", ",".join(ALGORITHMS), *extra)
    summary = json.loads((out / "summary.json").read_text())
    summary["wall_s_total"] = time.time() - t0
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--sim", action="store_true", help="also run the DAPO-scale simulator comparison")
    ap.add_argument("--sim-only", action="store_true")
    ap.add_argument("overrides", nargs="*", help="extra key=value for every toy run")
    args = ap.parse_args(argv)
    result = {"machine": platform.platform(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", "benchmarks/gdro_vs_grpo.py", *(argv or sys.argv[1:])])}
    if not args.sim_only:
        # One folder per setting, so a rerun with other steps/overrides never reuses stale runs.
        tag = "-".join([f"steps{args.steps}", *(o.replace("/", "_").replace("=", "") for o in args.overrides)])
        root = OUT / "gdro_vs_grpo_runs" / tag
        rows = [toy_run(a, int(s), args.steps, args.overrides, root)
                for s in args.seeds.split(",") for a in args.algorithms.split(",")]
        text, summary = toy_table(rows)
        print(f"\ntoy task: held-out pass@8 after {args.steps} steps, seeds {args.seeds} (mean±sd)\n{text}")
        result.update(toy_runs=rows, toy_summary=summary)
        seed0 = [r["run_dir"] for r in rows if r["seed"] == int(args.seeds.split(",")[0])]
        _cli("report", *seed0, "--out", str(OUT / "gdro_vs_grpo_report"))
    if args.sim or args.sim_only:
        sim = sim_comparison([])
        result["sim"] = sim
        print(f"\nsimulator (DAPO scale) in {sim['wall_s_total']:.0f}s: see {OUT / 'gdro_vs_grpo_sim' / 'summary.json'}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gdro_vs_grpo.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {OUT / 'gdro_vs_grpo.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
