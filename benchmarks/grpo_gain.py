"""Does plain GRPO improve the toy world's held-out score through the real pipeline?

For each seed: `gdro-ray train algorithm=grpo seed=S out=benchmarks/out/grpo_gain/grpo-sS`
(preset toy: vLLM samplers, FSDP2 learner), then, from the base and final evaluations'
per-prompt counts (n samples, c correct), per tier and pooled: mean@8 (c/n) and pass@8 (the
unbiased estimator from n ≥ 8 samples). The pooled gain final vs base is reported with a
95% paired bootstrap CI over prompts (resampled within tiers) and seeds
(`gdro_ray.eval.stats.paired_bootstrap`). Finished runs are kept and reused.

    python benchmarks/grpo_gain.py --seeds 0,1,2 [key=value ...]

Writes benchmarks/out/grpo_gain.json and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gdro_ray.algorithms.passk import pass_at_k_array
from gdro_ray.eval.stats import paired_bootstrap

OUT = Path(__file__).resolve().parent / "out"
K = 8


def run(seed: int, root: Path, extra: list[str]) -> Path:
    out = root / f"grpo-s{seed}"
    if not (out / "eval_final.json").is_file():
        if out.exists():
            import shutil

            shutil.rmtree(out)
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "train", "algorithm=grpo", f"seed={seed}",
                        "checkpoint.every=0", f"out={out}", *extra], check=True)
        (out / "wall_s.txt").write_text(f"{time.time() - t0:.1f}")
    return out


def per_prompt(eval_file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tier labels, mean@k, pass@k) per prompt, in prompt-id order."""
    rows = sorted(json.loads(eval_file.read_text())["per_prompt"], key=lambda r: (str(r["tier"]), r["id"]))
    n = np.array([r["n"] for r in rows], dtype=np.int64)
    c = np.array([r["c"] for r in rows], dtype=np.int64)
    return np.array([str(r["tier"]) for r in rows]), c / n, pass_at_k_array(n, c, K)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--root", default=str(OUT / "grpo_gain"))
    ap.add_argument("overrides", nargs="*", help="extra key=value for every run")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [run(s, Path(args.root), args.overrides) for s in seeds]
    data = {}
    for label in ("base", "final"):
        tiers, means, passes = zip(*(per_prompt(r / f"eval_{label}.json") for r in runs))
        data[label] = {"mean@8": np.stack(means), "pass@8": np.stack(passes)}
    strata = tiers[0]
    result = {"seeds": seeds, "wall_s": [float((r / "wall_s.txt").read_text()) for r in runs], "per_tier": {}, "pooled": {}}
    print(f"{'tier':<8}{'mean@8 base':>12}{'final':>8}{'pass@8 base':>12}{'final':>8}")
    for t in sorted(set(strata.tolist()), key=lambda x: (len(x), x)):
        sel = strata == t
        row = {m: (float(data['base'][m][:, sel].mean()), float(data['final'][m][:, sel].mean())) for m in ("mean@8", "pass@8")}
        result["per_tier"][t] = row
        print(f"{t:<8}{row['mean@8'][0]:>12.3f}{row['mean@8'][1]:>8.3f}{row['pass@8'][0]:>12.3f}{row['pass@8'][1]:>8.3f}")
    for m in ("mean@8", "pass@8"):
        rel = paired_bootstrap(data["base"][m], data["final"][m], kind="relative", strata=strata)
        diff = paired_bootstrap(data["base"][m], data["final"][m], kind="difference", strata=strata)
        result["pooled"][m] = {"base": float(data["base"][m].mean()), "final": float(data["final"][m].mean()),
                               "relative": rel.as_dict(), "difference": diff.as_dict()}
        print(f"pooled {m}: {data['base'][m].mean():.3f} -> {data['final'][m].mean():.3f}  "
              f"relative {rel.estimate:+.1%} [95% CI {rel.low:+.1%}, {rel.high:+.1%}]  "
              f"difference {diff.estimate:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]")
    print(f"wall s per run: {', '.join(f'{w:.0f}' for w in result['wall_s'])}")
    OUT.mkdir(exist_ok=True)
    (OUT / "grpo_gain.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
