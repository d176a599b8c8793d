"""Per-stage breakdown of a training step, synchronous vs one-step off-policy.

Runs `gdro-ray train` (a real Ray job: vLLM samplers, FSDP2 learner, adversary actor) for a
preset in both modes, side by side in one invocation, and reads the per-step records:
schedule, generate, reward, learn, publish, observe seconds, step time and tokens/s over the
steady-state steps (the first `--skip` steps are start-up). Also measures the floor for weight
publication: serialising the learner's state dict to safetensors bytes once plus loading it
into one engine once, outside Ray.

Targets: the adversary ≤ 0.5% of the step; publication ≤ 1.5× serialise+load;
off-policy faster than synchronous. Prints a table and writes benchmarks/out/pipeline.json.

    python benchmarks/pipeline.py [--preset toy] [--steps 8] [--skip 2] [key=value ...]
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

OUT = Path(__file__).resolve().parent / "out"


def run_mode(preset: str, steps: int, off_policy: bool, extra: list[str], workdir: Path) -> list[dict]:
    run = workdir / f"{preset}-{'off' if off_policy else 'sync'}"
    cmd = [sys.executable, "-m", "gdro_ray.cli.main", "train", f"preset={preset}", f"steps={steps}",
           f"cluster.off_policy={str(off_policy).lower()}", "checkpoint.every=0", "sampler.eval_k=1",
           "data.eval=dapo-fixture", f"out={run}", *extra]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"  {preset} {'off-policy' if off_policy else 'sync'}: {time.time() - t0:.0f}s", file=sys.stderr)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("type") != "eval"]  # step records only


def summarize(records: list[dict], skip: int) -> dict:
    rec = records[skip:] or records
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    stages = sorted({k for r in rec for k in r["stage_time_s"]})
    step = med([r["step_time_s"] for r in rec])
    return {
        "steps": len(rec),
        "step_time_s": step,
        "tokens_per_s": sum(r["tokens"] for r in rec) / max(sum(r["step_time_s"] for r in rec), 1e-9),
        "stages_s": {s: med([r["stage_time_s"].get(s, 0.0) for r in rec]) for s in stages},
        "adversary_ms": med([r.get("adversary_ms", 0.0) for r in rec]),
        "adversary_share": med([r.get("adversary_ms", 0.0) / 1e3 / r["step_time_s"] for r in rec]),
        "publish_s": med([r["stage_time_s"].get("publish", 0.0) for r in rec]),
    }


def publication_floor(model_path: str) -> float:
    """Serialise the full state dict once + load it into one (vLLM) engine once."""
    import torch
    from safetensors.torch import save
    from transformers import AutoModelForCausalLM

    from gdro_ray.engines import make_engine

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    engine = make_engine("vllm", model_path, fallback=True)
    t0 = time.perf_counter()
    blob = save({k: v.detach().contiguous() for k, v in model.state_dict().items()})
    engine.update_weights(blob, 1)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="toy")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    from gdro_ray.config import load_config
    from gdro_ray.models.registry import resolve_model_path
    from gdro_ray.utils.env import setup_env

    setup_env()
    cfg = load_config(overrides=[f"preset={args.preset}", *args.overrides])
    work = OUT / "pipeline_runs"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    modes = {m: summarize(run_mode(args.preset, args.steps, m == "off-policy", args.overrides, work), args.skip)
             for m in ("sync", "off-policy")}
    floor = publication_floor(str(resolve_model_path(cfg.model.path)))
    print(f"\n{args.preset}: median seconds per stage over steady-state steps")
    stages = sorted({s for m in modes.values() for s in m["stages_s"]})
    print(f"{'mode':12s} {'step':>7s} {'tok/s':>8s} " + " ".join(f"{s:>9s}" for s in stages) + f" {'adv %':>6s}")
    for name, m in modes.items():
        print(f"{name:12s} {m['step_time_s']:7.3f} {m['tokens_per_s']:8.0f} "
              + " ".join(f"{m['stages_s'].get(s, 0):9.3f}" for s in stages) + f" {100 * m['adversary_share']:6.3f}")
    speedup = modes["sync"]["step_time_s"] / modes["off-policy"]["step_time_s"]
    pub_ratio = modes["sync"]["publish_s"] / max(floor, 1e-9)
    print(f"off-policy speed-up: {speedup:.2f}×  (target > 1)")
    print(f"publication: {modes['sync']['publish_s']:.3f}s vs serialise+load floor {floor:.3f}s = {pub_ratio:.2f}× "
          f"(target ≤ 1.5×)")
    print(f"adversary share of the step: {100 * modes['sync']['adversary_share']:.3f}% (target ≤ 0.5%)")
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"pipeline_{args.preset}.json"
    out.write_text(json.dumps({
        "machine": platform.platform(), "cpus": __import__("os").cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/pipeline.py", *(argv or sys.argv[1:])]),
        "preset": args.preset, "modes": modes, "publication_floor_s": floor,
        "off_policy_speedup": speedup, "publication_ratio": pub_ratio}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
