"""AdamW step time on a real model's parameters: the per-parameter loop, `foreach` and the fused
kernel (why `gdro_ray.learner.worker._adamw` asks for the fused one).

Builds the model from its config (random weights: only the shapes matter), gives every parameter
a random gradient, and times `optimizer.step()` for each implementation and thread count; the
rounds interleave the implementations and each keeps its median step. Prints a table (ms per step
and the ratio to the loop) and writes benchmarks/out/optimizer_step.json.

    .venv/bin/python benchmarks/optimizer_step.py [--model smollm2] [--threads 1,2] [--steps 5 --rounds 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMPLEMENTATIONS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def build_params(name: str) -> list[torch.nn.Parameter]:
    from transformers import AutoConfig, AutoModelForCausalLM

    from gdro_ray.models.registry import resolve_model_path

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model_path(name)))
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def time_steps(params: list, impl: str, steps: int) -> float:
    opt = torch.optim.AdamW(params, lr=1e-5, **IMPLEMENTATIONS[impl])
    opt.step()  # allocates the moments
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="toy or smollm2 (the prepared models' shapes)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from gdro_ray.utils.threads import set_torch_threads

    params = build_params(args.model)
    n = sum(p.numel() for p in params)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        set_torch_threads(threads)
        best = {impl: [] for impl in IMPLEMENTATIONS}
        for _ in range(args.rounds):
            for impl in IMPLEMENTATIONS:
                best[impl].append(time_steps(params, impl, args.steps))
        loop = min(best["loop"])
        for impl, ts in best.items():
            rows.append({"model": args.model, "params": n, "threads": threads, "optimizer": impl,
                         "step_ms": round(1000 * min(ts), 1), "rounds_ms": [round(1000 * t, 1) for t in ts],
                         "vs_loop": round(min(ts) / loop, 3)})
    print(f"AdamW step, {args.model} ({n / 1e6:.1f}M parameters), median of {args.steps} steps, best of "
          f"{args.rounds} rounds")
    print(f"{'threads':>7}  {'optimizer':<9} {'ms/step':>8}  {'× loop':>7}  rounds (ms)")
    for r in rows:
        print(f"{r['threads']:>7}  {r['optimizer']:<9} {r['step_ms']:>8.1f}  {r['vs_loop']:>7.3f}  {r['rounds_ms']}")
    out = ROOT / "benchmarks" / "out" / "optimizer_step.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "optimizer_step", "command": " ".join(sys.argv), "torch": torch.__version__,
                               "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
