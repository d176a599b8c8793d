"""Does GDRO beat GRPO here? The four-way comparison on the toy world, and in the simulator.

Toy world (real pipeline): `gdro-ray train preset=toy algorithm=A seed=S` for A in {grpo,
prompt_gdro, rollout_gdro, both} and each seed, with the preset's steps, batch and rollout
budget (Σ n_i = B·n̄ every step for every method, so every method samples the same number of
rollouts). From each run's base and final held-out evaluations (per prompt: n samples, c
correct) we score every prompt by mean@8 (c/n) and pass@8 (the unbiased estimator, n ≥ 8), and
report for the pooled balanced split, the two hardest tiers and the worst tier (by the base
model's pass@8, the same for every method): the mean over seeds and, for each GDRO variant,
the paired difference to GRPO on the same seeds and prompts with its 95% bootstrap CI over
prompts (within tiers) and seeds (`gdro_ray.eval.stats.paired_bootstrap`); also the fraction of
rollouts in groups with a non-zero advantage, rollouts sampled, and wall time. Finished runs
are kept and reused (`--root`), so the benchmark can be extended seed by seed.

Arms are an algorithm with its own overrides (`both+prompt_gdro.mode=reweight`) or a name from
NAMED_ARMS (the pre-registered arms of benchmarks/RESULTS.md, "GDRO at full strength"). With
`eval.every` the runs also keep every periodic evaluation per prompt (<run>/evals/), and each arm
is compared at its *peak* too: the evaluation step with the best pooled pass@8 on one half of the
held-out prompts (every other prompt of each tier), reported on the other half (`peak`), and by
the rollouts it needs to reach GRPO's final pooled mean@8 (`benchmarks/gdro_curves.py`).

Simulator (`--sim`): the same four-way comparison at DAPO scale (14,100 prompts, B = 256,
n̄ = 4, 1,000 steps) through `gdro-ray simulate`.

Prints tables and writes benchmarks/out/gdro_vs_grpo.json, and the per-seed, arm, tier and prompt
(n, c) of every evaluation to `--results` (a small JSON meant to be committed, so anyone can
recompute the tables and their CIs).

    python benchmarks/gdro_vs_grpo.py [--seeds 0,1,2] [--algorithms grpo,both,both+prompt_gdro.mode=reweight]
                                      [--results benchmarks/results/NAME.json] [--sim] [key=value ...]
    python benchmarks/gdro_vs_grpo.py --list-arms
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gdro_ray.algorithms.adversary import ALGORITHMS
from gdro_ray.algorithms.passk import pass_at_k_array
from gdro_ray.eval.stats import paired_bootstrap

OUT = Path(__file__).resolve().parent / "out"
RESULTS = Path(__file__).resolve().parent / "results"
K = 8

# The arms pre-registered in RESULTS.md ("GDRO at full strength"), by name. The ranges 4 … 24 are
# 0.5×–3× the toy preset's n̄ = 8; every arm samples B·n̄ rollouts a step, like GRPO.
NAMED_ARMS = {
    "paper": "prompt_gdro+profile=paper",
    "reweight_failure_eta1.5": "prompt_gdro+prompt_gdro.mode=reweight+prompt_gdro.signal=failure+prompt_gdro.eta=1.5",
    "reweight_failure_eta3": "prompt_gdro+prompt_gdro.mode=reweight+prompt_gdro.signal=failure+prompt_gdro.eta=3",
    "reweight_failure_eta3_informative": "prompt_gdro+prompt_gdro.mode=reweight+prompt_gdro.signal=failure"
                                         "+prompt_gdro.eta=3+prompt_gdro.informative_norm=true",
    "rollout_wide": "rollout_gdro+rollout_gdro.n_min=4+rollout_gdro.n_max=24",
    "knapsack": "rollout_gdro+rollout_gdro.mode=knapsack+rollout_gdro.n_min=4+rollout_gdro.n_max=24",
    # the follow-up (RESULTS, "knapsack by the latest visit"): p̂ from each prompt's last visit only
    "knapsack_recent": "rollout_gdro+rollout_gdro.mode=knapsack+rollout_gdro.n_min=4+rollout_gdro.n_max=24"
                       "+classifier.window=1",
    "learnability": "prompt_gdro+profile=learnability",
    "learnability_control": "prompt_gdro+profile=learnability+prompt_gdro.signal=learnability+prompt_gdro.worst_eta=0",
}


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", *args], check=True, stdout=subprocess.DEVNULL)


def parse_arm(arm: str) -> tuple[str, list[str]]:
    """`both`, `both+prompt_gdro.mode=reweight` or a NAMED_ARMS name: the algorithm and the arm's own overrides."""
    alg, *over = NAMED_ARMS.get(arm, arm).split("+")
    if alg not in ALGORITHMS or any("=" not in o for o in over):
        raise SystemExit(f"--algorithms: bad arm {arm!r} (want one of {', '.join(ALGORITHMS)}, then +key=value ...)")
    return alg, over


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def stale_keys(run: Path, args: list[str]) -> list[str]:
    """Keys whose value in the finished run's config.yaml differs from what `args` resolve to now
    (a preset or default changed since): such a run is redone, not reused. Keys the run's file
    lacks are new ones whose defaults keep the old behaviour; paths (out, eval.base_from) vary."""
    import yaml

    from gdro_ray.config import dump_config, load_config

    now = _flat(yaml.safe_load(dump_config(load_config(overrides=args))))
    then = _flat(yaml.safe_load((run / "config.yaml").read_text()))
    return sorted(k for k in then.keys() & now.keys() if then[k] != now[k] and k not in ("out", "eval.base_from"))


def toy_run(arm: str, seed: int, extra: list[str], root: Path) -> Path:
    alg, own = parse_arm(arm)
    extra = [*extra, *own]
    run = root / f"{arm.replace('/', '_').replace('=', '')}-s{seed}"
    args = ["preset=toy", f"algorithm={alg}", f"seed={seed}", "checkpoint.every=0", f"out={run}", *extra]
    if (run / "eval_final.json").is_file() and (changed := stale_keys(run, args)):
        print(f"{run.name}: redone, its config differs in {', '.join(changed)}", flush=True)
        (run / "eval_final.json").unlink()
    if not (run / "eval_final.json").is_file():  # resumable benchmark: finished runs are kept
        if run.exists():
            import shutil

            shutil.rmtree(run)
        base = root / f"grpo-s{seed}" / "eval_base.json"
        if arm != "grpo" and base.is_file() and "signature" in json.loads(base.read_text()):
            # the same base model, held-out set and seed: GRPO's base evaluation is this run's too
            args = [*args, f"eval.base_from={base}"]
        t0 = time.time()
        _cli("train", *args)
        (run / "wall_s.txt").write_text(f"{time.time() - t0:.1f}")
    return run


def per_prompt(eval_file: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Tier labels and per-prompt mean@8 / pass@8, in a fixed prompt order."""
    rows = sorted(json.loads(eval_file.read_text())["per_prompt"], key=lambda r: (str(r["tier"]), r["id"]))
    n = np.array([r["n"] for r in rows], dtype=np.int64)
    c = np.array([r["c"] for r in rows], dtype=np.int64)
    return np.array([str(r["tier"]) for r in rows]), {"mean@8": c / n, "pass@8": pass_at_k_array(n, c, K)}


def run_stats(run: Path) -> dict:
    records = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("type") != "eval"]

    def mean_of(key: str) -> float:  # fields runs from before a field existed lack
        values = [r[key] for r in records if r.get(key) is not None]
        return statistics.mean(values) if values else float("nan")

    return {"rollouts": sum(r["rollouts"] for r in records),
            "useful_fraction": statistics.mean(r["useful_rollout_fraction"] for r in records),
            "useful_group_fraction": mean_of("useful_prompt_fraction"),
            "expected_useful_group_fraction": mean_of("expected_useful_fraction"),
            "q_ratio": mean_of("q_ratio"), "adv_weight_ratio": mean_of("adv_weight_ratio"),
            "wall_s": float((run / "wall_s.txt").read_text()) if (run / "wall_s.txt").is_file() else float("nan")}


def _evals(run: Path) -> dict[str, Path]:
    """The run's evaluations by label: `step000010` … from eval.every, and `final`."""
    out = {p.stem: p for p in sorted((run / "evals").glob("step*.json"))} if (run / "evals").is_dir() else {}
    out["final"] = run / "eval_final.json"
    return out


def _rows(eval_file: Path) -> list[dict]:
    return sorted(json.loads(eval_file.read_text())["per_prompt"], key=lambda r: (str(r["tier"]), r["id"]))


def summaries(runs: dict[str, list[Path]], seeds: list[int]) -> dict:
    """Per seed, arm and evaluation the (n, c) of every held-out prompt, in one fixed prompt order
    (ids and tiers listed once): what every table and CI of this benchmark is computed from."""
    first = _rows(runs["grpo"][0] / "eval_base.json")
    ids, tiers = [r["id"] for r in first], [str(r["tier"]) for r in first]
    out = {"prompts": {"id": ids, "tier": tiers}, "k": K, "base": {}, "arms": {}}

    def nc(eval_file: Path) -> dict:
        rows = _rows(eval_file)
        if [r["id"] for r in rows] != ids:
            raise SystemExit(f"{eval_file}: another held-out set than GRPO's base evaluation")
        n = [int(r["n"]) for r in rows]
        return {"n": n[0] if len(set(n)) == 1 else n, "c": [int(r["c"]) for r in rows]}

    for seed, run in zip(seeds, runs["grpo"]):
        out["base"][str(seed)] = nc(run / "eval_base.json")
    for arm, arm_runs in runs.items():
        alg, over = parse_arm(arm)
        entry = {"algorithm": alg, "overrides": over, "seeds": {}}
        for seed, run in zip(seeds, arm_runs):
            entry["seeds"][str(seed)] = {"evals": {label: nc(p) for label, p in _evals(run).items()},
                                         **{k: v for k, v in run_stats(run).items() if k != "wall_s"}}
        out["arms"][arm] = entry
    return out


def scores(cell: dict) -> dict[str, np.ndarray]:
    """mean@8 and pass@8 of every prompt of one evaluation's {n, c} in a results file."""
    c = np.asarray(cell["c"], dtype=np.int64)
    n = np.broadcast_to(np.asarray(cell["n"], dtype=np.int64), c.shape)
    return {"mean@8": c / n, "pass@8": pass_at_k_array(n, c, K)}


def peak_comparison(summary: dict) -> dict:
    """Peak vs peak: per run, the evaluation with the best pooled pass@8 on the selection half
    (even positions within each tier), scored on the other half; each arm's paired difference to
    GRPO's own peak on that half."""
    tiers = np.array(summary["prompts"]["tier"])
    position = np.zeros(tiers.size, dtype=np.int64)
    for t in set(tiers.tolist()):
        position[tiers == t] = np.arange(int((tiers == t).sum()))
    select, report = position % 2 == 0, position % 2 == 1

    peaks, out = {}, {"select": "even positions per tier", "report": "odd positions per tier", "arms": {}}
    for arm, entry in summary["arms"].items():
        chosen = []
        for seed_entry in entry["seeds"].values():
            label = max(seed_entry["evals"], key=lambda lb: scores(seed_entry["evals"][lb])["pass@8"][select].mean())
            chosen.append((label, scores(seed_entry["evals"][label])))
        peaks[arm] = chosen
        out["arms"][arm] = {"peak_evals": [lb for lb, _ in chosen], "slices": {}}
    slices = {"pooled": report, **{f"tier {tier_label(t)}": report & (tiers == t)
                                  for t in sorted(set(tiers.tolist()), key=lambda t: (len(t), t))}}
    for arm in peaks:
        for name, sel in slices.items():
            for m in ("mean@8", "pass@8"):
                b = np.stack([sc[m][sel] for _, sc in peaks[arm]])
                cell = {"peak": float(b.mean())}
                if arm != "grpo":
                    a = np.stack([sc[m][sel] for _, sc in peaks["grpo"]])
                    cell["vs_grpo"] = paired_bootstrap(a, b, kind="difference", strata=tiers[sel]).as_dict()
                    cell["vs_grpo_relative"] = paired_bootstrap(a, b, kind="relative", strata=tiers[sel]).as_dict()
                out["arms"][arm]["slices"][f"{name} {m}"] = cell
    return out


def compute_to_target(summary: dict, grpo_run: Path) -> dict:
    """Rollouts each arm needs to reach GRPO's final pooled mean@8, per seed (benchmarks/gdro_curves.py)."""
    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, when imported from elsewhere
    from gdro_curves import compute_to_target as to_target

    steps = int(yaml.safe_load((grpo_run / "config.yaml").read_text())["steps"])
    out = to_target(summary, steps)
    for arm, entry in out.items():
        median = entry["vs_grpo_median"]
        print(f"rollouts to GRPO's final pooled mean@8, {arm}: reached in {entry['reached']} seeds, median "
              + (f"{median:.2f}× GRPO's" if median is not None else "not reached"))
    return out


def tier_label(tier: str) -> str:
    from gdro_ray.data.toy_task import TIER_NAMES

    return f"{tier} ({TIER_NAMES[int(tier)]})" if tier.isdigit() and int(tier) < len(TIER_NAMES) else tier


def toy_comparison(runs: dict[str, list[Path]], seeds: list[int]) -> dict:
    """Scores per algorithm and slice, and each GDRO variant's paired difference to GRPO."""
    tiers, base = per_prompt(runs["grpo"][0] / "eval_base.json")
    tier_names = sorted(set(tiers.tolist()), key=lambda t: (len(t), t))
    by_base = sorted(tier_names, key=lambda t: base["pass@8"][tiers == t].mean())
    slices = {"pooled": np.ones(tiers.size, bool), "hardest 2 tiers": np.isin(tiers, by_base[:2]),
              f"worst tier {tier_label(by_base[0])}": tiers == by_base[0],
              **{f"tier {tier_label(t)}": tiers == t for t in tier_names}}
    scores = {}
    for alg, alg_runs in runs.items():
        finals = [per_prompt(r / "eval_final.json")[1] for r in alg_runs]
        scores[alg] = {m: np.stack([f[m] for f in finals]) for m in ("mean@8", "pass@8")}
    out = {"seeds": seeds, "hardest_tiers": by_base[:2], "worst_tier": by_base[0], "algorithms": {}}
    for alg in runs:
        stats = [run_stats(r) for r in runs[alg]]
        entry = {"useful_fraction": statistics.mean(s["useful_fraction"] for s in stats),
                 "useful_group_fraction": statistics.mean(s["useful_group_fraction"] for s in stats),
                 "q_ratio": statistics.mean(s["q_ratio"] for s in stats),
                 "rollouts": statistics.mean(s["rollouts"] for s in stats),
                 "wall_s": statistics.mean(s["wall_s"] for s in stats), "slices": {}}
        for name, sel in slices.items():
            for m in ("mean@8", "pass@8"):
                cell = {"base": float(base[m][sel].mean()), "final": float(scores[alg][m][:, sel].mean())}
                if alg != "grpo":
                    a, b = scores["grpo"][m][:, sel], scores[alg][m][:, sel]
                    cell["vs_grpo"] = paired_bootstrap(a, b, kind="difference", strata=tiers[sel]).as_dict()
                    cell["vs_grpo_relative"] = paired_bootstrap(a, b, kind="relative", strata=tiers[sel]).as_dict()
                entry["slices"][f"{name} {m}"] = cell
        out["algorithms"][alg] = entry
    return out


def toy_table(result: dict) -> str:
    lines = []
    for alg, entry in result["algorithms"].items():
        lines.append(f"{alg}: useful rollouts {entry['useful_fraction']:.3f}, useful groups "
                     f"{entry.get('useful_group_fraction', float('nan')):.3f}, q max/min "
                     f"{entry.get('q_ratio', float('nan')):.2f}, rollouts {entry['rollouts']:.0f}, wall {entry['wall_s']:.0f} s")
        for name, cell in entry["slices"].items():
            text = f"  {name:<34s} {cell['base']:.3f} -> {cell['final']:.3f}"
            if "vs_grpo" in cell:
                d, r = cell["vs_grpo"], cell["vs_grpo_relative"]
                text += (f"   vs GRPO {d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                         f"  ({r['estimate']:+.1%} [{r['low']:+.1%}, {r['high']:+.1%}])")
            lines.append(text)
    return "\n".join(lines)


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
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS),
                    help="arms: an algorithm, optionally with its own overrides (both+prompt_gdro.mode=reweight); "
                         "grpo is always included (the baseline)")
    ap.add_argument("--root", default="", help="run folder (default: benchmarks/out/gdro_vs_grpo_runs/<overrides>)")
    ap.add_argument("--out", default=str(OUT / "gdro_vs_grpo.json"), help="result JSON")
    ap.add_argument("--results", default="", help="per-seed/arm/tier/prompt (n, c) summaries to commit "
                                                  "(default: benchmarks/results/gdro_vs_grpo-<tag>.json)")
    ap.add_argument("--list-arms", action="store_true", help="print the named arms and exit")
    ap.add_argument("--sim", action="store_true", help="also run the DAPO-scale simulator comparison")
    ap.add_argument("--sim-only", action="store_true")
    ap.add_argument("overrides", nargs="*", help="extra key=value for every toy run")
    args = ap.parse_args(argv)
    if args.list_arms:
        for name, spec in NAMED_ARMS.items():
            print(f"{name:36s} {spec}")
        return 0
    result = {"machine": platform.platform(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": " ".join(["python", "benchmarks/gdro_vs_grpo.py", *(argv or sys.argv[1:])])}
    if not args.sim_only:
        # One folder per setting, so a rerun with other overrides never reuses stale runs.
        tag = "-".join(["toy", *(o.replace("/", "_").replace("=", "") for o in args.overrides)])
        root = Path(args.root) if args.root else OUT / "gdro_vs_grpo_runs" / tag
        seeds = [int(s) for s in args.seeds.split(",")]
        algs = ["grpo", *(a for a in args.algorithms.split(",") if a != "grpo")]
        # GRPO first (every seed), then seed by seed over the other arms, so that a comparison
        # cut short has the same seeds for every arm
        runs = {"grpo": [toy_run("grpo", s, args.overrides, root) for s in seeds]}
        for s in seeds:
            for a in algs[1:]:
                runs.setdefault(a, []).append(toy_run(a, s, args.overrides, root))
        toy = toy_comparison(runs, seeds)
        print(f"\ntoy world: held-out scores base -> final, seeds {args.seeds}, paired difference to GRPO "
              f"[95% CI]\n{toy_table(toy)}")
        result["toy"] = toy
        summary = summaries(runs, seeds)
        summary.update(command=result["command"], date=result["date"], seeds=seeds, overrides=args.overrides)
        results = Path(args.results) if args.results else RESULTS / f"gdro_vs_grpo-{tag}.json"
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(summary, separators=(",", ":")) + "\n")
        print(f"wrote {results} (per-prompt n, c of every evaluation)")
        if any(len(e["evals"]) > 1 for s in summary["arms"].values() for e in s["seeds"].values()):
            result["toy_peak"] = peak_comparison(summary)
            for arm, entry in result["toy_peak"]["arms"].items():
                cell = entry["slices"]["pooled pass@8"]
                ci = cell.get("vs_grpo_relative")
                print(f"peak (picked on even prompts, scored on odd) {arm}: pooled pass@8 {cell['peak']:.3f}"
                      + (f"  vs GRPO {ci['estimate']:+.1%} [{ci['low']:+.1%}, {ci['high']:+.1%}]" if ci else "")
                      + f"  at {entry['peak_evals']}")
            result["toy_compute_to_target"] = compute_to_target(summary, runs["grpo"][0])
        _cli("report", *(str(runs[a][0]) for a in algs), "--out", str(Path(args.out).with_suffix("")) + "_report")
    if args.sim or args.sim_only:
        sim = sim_comparison([])
        result["sim"] = sim
        print(f"\nsimulator (DAPO scale) in {sim['wall_s_total']:.0f}s: see {OUT / 'gdro_vs_grpo_sim' / 'summary.json'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
