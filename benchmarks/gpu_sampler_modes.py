"""The sampler's engine modes on a GPU: eager vs CUDA graphs, and tensor parallel.

`sampler.enforce_eager=false` (the default on CUDA) captures CUDA graphs when the engine starts;
`sampler.tensor_parallel_size` > 1 spreads one engine over several cards (vLLM's `mp` executor).
This script measures what each costs and gives: per mode a `VLLMEngine` in its own child process
(the same class the sampler actors use) on the model of `gpu_check.py` (a Qwen3-0.6B-sized
untied model with random weights), its start time and its generation throughput on one batch
(after a warm-up call). Modes: eager and CUDA graphs on one card, and CUDA graphs with tensor
parallel 2 where two cards are visible. Random weights generate until `max_new_tokens`, so every
mode decodes the same number of tokens.

Prints a table and writes benchmarks/out/gpu_sampler_modes.json; `gpu_setup_and_check.sh` runs it
after `gpu_check.py` and adds its rows to the first-run table.

    python benchmarks/gpu_sampler_modes.py                # needs a CUDA GPU
    python benchmarks/gpu_sampler_modes.py --cpu-smoke    # the code path on CPU (eager only; TP refused)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_check import QWEN3_06B, TINY, build_model, measure_generation, prepare_tmpdir  # noqa: E402 - after the path set-up


def engine_process(model_dir: str, device: str, mode: dict, gen: dict, conn) -> None:
    """Child: one engine in `mode`; sends its start time and throughput, or the error's one line."""
    try:
        from gdro_ray.engines.vllm_engine import VLLMEngine

        t0 = time.perf_counter()
        engine = VLLMEngine(model_dir, dtype="bfloat16" if device == "cuda" else "float32", seed=0,
                            enforce_eager=mode["enforce_eager"], tensor_parallel_size=mode["tensor_parallel_size"],
                            weight_updates=False)
        start_s = time.perf_counter() - t0
        _, measured = measure_generation(engine, gen)
        engine.close()
        conn.send(("ok", {"start_s": start_s, **measured}))
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("error", f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"))


def run_mode(model_dir: str, device: str, mode: dict, gen: dict, timeout_s: float) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=engine_process, args=(model_dir, device, mode, gen, child))
    proc.start()
    out = {"status": "timed out"}
    if parent.poll(timeout_s):
        kind, value = parent.recv()
        out = dict(value, status="ok") if kind == "ok" else {"status": "error", "error": value}
    proc.join(30)
    if proc.is_alive():
        proc.kill()
    return dict(mode, **out)


def modes_for(cuda_cards: int) -> list[dict]:
    """The modes worth measuring: on CPU the engine is always eager and TP is refused."""
    if cuda_cards == 0:
        return [{"name": "eager (CPU)", "enforce_eager": True, "tensor_parallel_size": 1},
                {"name": "TP 2 (CPU: refused)", "enforce_eager": True, "tensor_parallel_size": 2}]
    modes = [{"name": "eager, 1 card", "enforce_eager": True, "tensor_parallel_size": 1},
             {"name": "CUDA graphs, 1 card", "enforce_eager": False, "tensor_parallel_size": 1}]
    if cuda_cards >= 2:
        modes.append({"name": "CUDA graphs, TP 2", "enforce_eager": False, "tensor_parallel_size": 2})
    return modes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU: the code path, eager only")
    ap.add_argument("--timeout-s", type=float, default=240.0, help="per mode")
    ap.add_argument("--out", default="", help="JSON path (default benchmarks/out/gpu_sampler_modes[_cpu_smoke].json)")
    args = ap.parse_args(argv)
    import torch

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("gpu_sampler_modes: no CUDA GPU is visible; use --cpu-smoke to check the code path on CPU",
              file=sys.stderr)
        return 2
    cards = 0 if smoke else torch.cuda.device_count()
    gen = dict(prompts=2, n=2, max_new_tokens=8) if smoke else dict(prompts=64, n=8, max_new_tokens=256)
    prepare_tmpdir(os.environ, ROOT)
    tempfile.tempdir = None
    result: dict = {"device": "cpu (smoke)" if smoke else torch.cuda.get_device_name(0), "cards": cards,
                    "generation": gen, "modes": []}
    with tempfile.TemporaryDirectory(dir=os.environ["TMPDIR"]) as tmp:
        model_dir = Path(tmp) / "model"
        build_model(model_dir, TINY if smoke else QWEN3_06B, "cpu")
        for mode in modes_for(cards):
            result["modes"].append(run_mode(str(model_dir), "cpu" if smoke else "cuda", mode, gen, args.timeout_s))
    eager = next((m for m in result["modes"] if m["name"].startswith("eager") and m["status"] == "ok"), None)
    for m in result["modes"]:
        if eager and m["status"] == "ok":
            m["speed_vs_eager"] = m["tokens_per_s"] / eager["tokens_per_s"]
    print_table(result)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "out" / (
        "gpu_sampler_modes_cpu_smoke.json" if smoke else "gpu_sampler_modes.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    expected_refusal = [m for m in result["modes"] if "refused" in m["name"]]
    ran = [m for m in result["modes"] if m not in expected_refusal]
    return 0 if all(m["status"] == "ok" for m in ran) and all(m["status"] == "error" for m in expected_refusal) else 1


def print_table(result: dict) -> None:
    print(f"| sampler mode ({result['device']}) | start | generate tokens/s | vs eager |\n|---|---|---|---|")
    for m in result["modes"]:
        if m["status"] == "ok":
            ratio = f"{m['speed_vs_eager']:.2f}×" if "speed_vs_eager" in m else "–"
            print(f"| {m['name']} | {m['start_s']:.1f} s | {m['tokens_per_s']:,.0f} | {ratio} |")
        else:
            print(f"| {m['name']} | {m['status']}: {m.get('error', '')} | – | – |")


if __name__ == "__main__":
    sys.exit(main())
