"""Paired difference between any two arms of a gdro_vs_grpo.py results file, per slice.

`gdro_vs_grpo.py` compares every arm with GRPO. Some questions set two GDRO arms side by side (η = 3
with and without the normalisation over informative responses only); this reads the committed
per-seed, arm and prompt (n, c) summary and answers them the same way: per slice (pooled, then each
tier) the mean over seeds of `b` and `a`, and b − a paired by seed and prompt with its 95% CI (the
two-level bootstrap of `gdro_ray.eval.stats.paired_bootstrap`, prompts resampled within tiers).
Only the seeds both arms have are used.

    python benchmarks/arm_pairs.py benchmarks/results/issue22-reweight.json \
        --a reweight_failure_eta3 --b reweight_failure_eta3_informative [--eval final] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gdro_ray.eval.stats import paired_bootstrap  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, when imported from elsewhere
from gdro_vs_grpo import scores, tier_label  # noqa: E402


def _stack(summary: dict, arm: str, seeds: list[str], label: str) -> dict[str, np.ndarray]:
    per_seed = []
    for seed in seeds:
        evals = summary["arms"][arm]["seeds"][seed]["evals"]
        if label not in evals:
            raise SystemExit(f"arm {arm!r}, seed {seed}: no evaluation {label!r} (it has {', '.join(evals)})")
        per_seed.append(scores(evals[label]))
    return {m: np.stack([s[m] for s in per_seed]) for m in per_seed[0]}


def compare(summary: dict, arm_a: str, arm_b: str, label: str = "final") -> dict:
    """b − a per slice and metric, paired by seed and prompt."""
    for arm in (arm_a, arm_b):
        if arm not in summary["arms"]:
            raise SystemExit(f"no arm {arm!r} in the results file (it has {', '.join(summary['arms'])})")
    seeds = [s for s in summary["arms"][arm_a]["seeds"] if s in summary["arms"][arm_b]["seeds"]]
    if not seeds:
        raise SystemExit(f"arms {arm_a!r} and {arm_b!r} share no seed")
    tiers = np.array(summary["prompts"]["tier"])
    a, b = _stack(summary, arm_a, seeds, label), _stack(summary, arm_b, seeds, label)
    slices = {"pooled": np.ones(tiers.size, bool),
              **{f"tier {tier_label(t)}": tiers == t for t in sorted(set(tiers.tolist()), key=lambda t: (len(t), t))}}
    out = {"a": arm_a, "b": arm_b, "eval": label, "seeds": seeds, "slices": {}}
    for name, sel in slices.items():
        for metric in a:
            x, y = a[metric][:, sel], b[metric][:, sel]
            out["slices"][f"{name} {metric}"] = {
                "a": float(x.mean()), "b": float(y.mean()),
                "difference": paired_bootstrap(x, y, kind="difference", strata=tiers[sel]).as_dict(),
                "relative": paired_bootstrap(x, y, kind="relative", strata=tiers[sel]).as_dict(),
            }
    return out


def table(result: dict) -> str:
    lines = [f"{result['b']} vs {result['a']} at {result['eval']}, seeds {','.join(result['seeds'])}"]
    for name, cell in result["slices"].items():
        d, r = cell["difference"], cell["relative"]
        lines.append(f"  {name:<28s} {cell['a']:.3f} -> {cell['b']:.3f}   {d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                     f"  ({r['estimate']:+.1%} [{r['low']:+.1%}, {r['high']:+.1%}])")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a gdro_vs_grpo.py --results file")
    ap.add_argument("--a", default="grpo", help="the reference arm (default grpo)")
    ap.add_argument("--b", required=True, help="the arm compared with it")
    ap.add_argument("--eval", default="final", help="which evaluation: final (default) or stepNNNNNN")
    ap.add_argument("--out", default="", help="also write the numbers as JSON here")
    args = ap.parse_args(argv)
    path = Path(args.results)
    if not path.is_file():
        raise SystemExit(f"{path}: no such results file")
    result = compare(json.loads(path.read_text()), args.a, args.b, args.eval)
    print(table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
