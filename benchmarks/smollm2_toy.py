"""A real pretrained LLM that gets a reward: SmolLM2-135M on the toy world.

Zero-shot, SmolLM2-135M-Instruct almost never answers a toy prompt right (it writes prose and
no box), so every GRPO advantage is 0. `preset=smollm2-toy` starts from it after a short SFT on
the toy answer format (`gdro_ray/models/smollm2_toy.py`, built and cached on first use), whose
arithmetic is right only part of the time. This runs that preset through the real pipeline
(one vLLM sampler, one FSDP2 rank, both GDRO controllers) and reports per step the mean reward,
the fraction of groups with a non-zero advantage and of rollouts in them, and the held-out
per-tier mean@k / pass@k before and after. No improvement is claimed: the point is that a
real pretrained model gets rewards and advantages through every stage.

`--zero-shot` instead evaluates SmolLM2 before the SFT (`model.path=smollm2`) on the same
held-out split with the same sampling and writes benchmarks/out/smollm2_toy_zero_shot.json; a
later run adds it to its table as the "zero-shot" column (when split size and k match).

Prints tables and writes benchmarks/out/smollm2_toy[_TAG].json.

    python benchmarks/smollm2_toy.py --zero-shot            # once, optional (a few minutes)
    python benchmarks/smollm2_toy.py [--steps 20] [--tag NAME] [key=value ...]
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
TIERS = ("add3", "add_carry", "sub3", "sub_borrow", "carry_out", "sub_neg")


def _override(overrides: list[str], key: str, default):
    found = [o.split("=", 1)[1] for o in overrides if o.startswith(key + "=")]
    return type(default)(found[-1]) if found else default


def zero_shot(per_tier: int, k: int, max_new_tokens: int) -> dict:
    """The converted SmolLM2 before any SFT, on the run's held-out split and sampling (T = 1)."""
    from gdro_ray.data.toy_task import make_eval_split
    from gdro_ray.eval.evaluate import evaluate

    return evaluate("smollm2", make_eval_split(per_tier), k=k, engine="vllm", max_new_tokens=max_new_tokens,
                    temperature=1.0, top_p=1.0, progress=False)


def tier_rows(res: dict | None) -> dict:
    return {t: (res["per_tier"][t]["mean_at_k"], res["per_tier"][t]["pass_at_k"]) for t in sorted(res["per_tier"])} if res else {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--zero-shot", action="store_true", help="only evaluate SmolLM2 before the format SFT")
    ap.add_argument("--tag", default="", help="suffix for the run folder and the JSON file")
    ap.add_argument("overrides", nargs="*", help="extra key=value for the run")
    args = ap.parse_args(argv)
    name = "smollm2_toy" + (f"_{args.tag}" if args.tag else "")
    run = OUT / f"{name}_run"
    shutil.rmtree(run, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)

    from gdro_ray.config.loader import load_config

    cfg = load_config(preset="smollm2-toy", overrides=[f"steps={args.steps}", *args.overrides])
    zs_file = OUT / "smollm2_toy_zero_shot.json"
    if args.zero_shot:
        t0 = time.time()
        zs = zero_shot(cfg.data.toy_eval_per_tier, cfg.eval.k, cfg.sampler.max_new_tokens)
        zs.update({"wall_s": time.time() - t0, "per_tier_prompts": cfg.data.toy_eval_per_tier,
                   "date": datetime.now(UTC).isoformat(timespec="seconds")})
        zs_file.write_text(json.dumps({k_: zs[k_] for k_ in ("k", "pooled", "per_tier", "meta", "wall_s",
                                                              "per_tier_prompts", "date")}, indent=2))
        print("zero-shot SmolLM2-135M-Instruct on the toy split: mean@k / pass@k")
        for t, (m, p) in tier_rows(zs).items():
            print(f"  {t} {TIERS[int(t)] if t.isdigit() else ''}: {m:.3f} / {p:.3f}")
        print(f"  pooled: {zs['pooled']['mean_at_k']:.3f} / {zs['pooled']['pass_at_k']:.3f}   wrote {zs_file}")
        return 0
    zs = json.loads(zs_file.read_text()) if zs_file.is_file() else None
    if zs and (zs.get("per_tier_prompts") != cfg.data.toy_eval_per_tier or zs.get("k") != cfg.eval.k):
        zs = None  # another split or k: not comparable

    t0 = time.time()
    subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "train", "preset=smollm2-toy", f"steps={args.steps}",
                    "checkpoint.every=0", f"out={run}", *args.overrides], check=True)
    wall = time.time() - t0
    records = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("type") != "eval"]
    base, final = (json.loads((run / f"eval_{x}.json").read_text()) for x in ("base", "final"))
    k = final["k"]
    sft = None
    from gdro_ray.models.registry import resolve_model_path

    prep = Path(resolve_model_path(cfg.model.path)) / "prepare.json"
    if prep.is_file():
        meta = json.loads(prep.read_text())
        sft = {k_: meta.get(k_) for k_ in ("recipe", "first_loss", "final_loss", "train_seconds", "threads")}

    print(f"\nsmollm2-toy: {len(records)} steps, wall {wall:.0f} s (run incl. base/final eval)")
    print(f"{'step':>4s} {'reward':>7s} {'groups!=0':>9s} {'rollouts!=0':>11s} {'rollouts':>8s} {'step s':>7s}")
    for r in records:
        print(f"{r['step']:4d} {r['reward_mean']:7.3f} {r.get('useful_prompt_fraction', float('nan')):9.3f} "
              f"{r['useful_rollout_fraction']:11.3f} {r['rollouts']:8d} {r['step_time_s']:7.1f}")
    n = base["per_tier"][sorted(base["per_tier"])[0]]["n_prompts"]
    print(f"\nheld-out toy split ({n} prompts per tier, k={k}, T=1): mean@{k} / pass@{k}")
    cols = [("zero-shot", tier_rows(zs)), ("SFT (base)", tier_rows(base)), ("after RL", tier_rows(final))]
    print(f"{'tier':<14s}" + "".join(f"{c:>18s}" for c, rows in cols if rows))
    for t in sorted(base["per_tier"]):
        label = f"{t} {TIERS[int(t)]}" if t.isdigit() and int(t) < len(TIERS) else t
        print(f"{label:<14s}" + "".join(f"{rows[t][0]:>10.3f} / {rows[t][1]:.3f}" for c, rows in cols if rows))
    pooled = [("zero-shot", zs), ("SFT (base)", base), ("after RL", final)]
    print(f"{'pooled':<14s}" + "".join(f"{r['pooled']['mean_at_k']:>10.3f} / {r['pooled']['pass_at_k']:.3f}"
                                       for _, r in pooled if r))
    result = {
        "machine": platform.platform(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/smollm2_toy.py", *(argv if argv is not None else sys.argv[1:])]),
        "steps": len(records), "wall_s": wall, "k": k, "sft": sft,
        "per_step": [{key: r.get(key) for key in ("step", "reward_mean", "useful_prompt_fraction",
                                                  "useful_rollout_fraction", "rollouts", "step_time_s")} for r in records],
        "zero_shot": zs and {"pooled": zs["pooled"], "per_tier": zs["per_tier"]},
        "before": base["pooled"], "after": final["pooled"],
        "before_per_tier": base["per_tier"], "after_per_tier": final["per_tier"],
    }
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {OUT / f'{name}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
