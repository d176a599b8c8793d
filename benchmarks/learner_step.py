"""Learner step time: FSDP2 GRPO `train_step` and weight publication on CPU/gloo.

Builds random untied Qwen3 models of a few sizes, runs `steps` train steps on a batch of
`prompts × rollouts` responses (the toy task's shape by default), with world size 1 and 2
(torch.multiprocessing, one thread per rank), and prints a table of median step time,
tokens/s and `state_dict_bytes` time. JSON goes to benchmarks/out/learner_step.json.

    .venv/bin/python benchmarks/learner_step.py [--steps 5] [--sizes 128,256] [--worlds 1,2]
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {  # hidden -> (intermediate, layers, heads, kv heads, head_dim)
    64: (128, 2, 4, 2, 16),
    128: (256, 2, 4, 2, 32),
    256: (512, 4, 4, 2, 64),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(path: Path, hidden: int, vocab: int) -> int:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    inter, layers, heads, kv, head_dim = SIZES[hidden]
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg)
    model.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def make_batch(prompts: int, rollouts: int, prompt_len: int, resp_len: int, vocab: int) -> dict:
    rng = random.Random(0)
    batch = {k: [] for k in ("prompt_token_ids", "response_token_ids", "advantages", "signal_advantages",
                             "prompt_index")}
    for p in range(prompts):
        prompt = [rng.randrange(3, vocab) for _ in range(prompt_len)]
        for _ in range(rollouts):
            batch["prompt_token_ids"].append(prompt)
            batch["response_token_ids"].append([rng.randrange(3, vocab) for _ in range(rng.randint(1, resp_len))])
            a = rng.choice([-1.0, 1.0])
            batch["advantages"].append(a)
            batch["signal_advantages"].append(a)
            batch["prompt_index"].append(p)
    batch["old_logprobs"] = None
    return batch


def run_rank(rank: int, world: int, port: int, model_dir: str, batch: dict, steps: int, micro: int, out: str):
    from gdro_ray.learner import LearnerWorker

    w = LearnerWorker(rank, world, "127.0.0.1", port, model_dir, lr=1e-5, micro_batch=micro,
                      grpo={"kl_coef": 0.001})
    times, publish = [], []
    for _ in range(steps):
        times.append(w.train_step(batch)["time_s"])
        t0 = time.perf_counter()
        w.state_dict_bytes()
        publish.append(time.perf_counter() - t0)
    w.shutdown()
    if rank == 0:
        Path(out).write_text(json.dumps({"step_s": times, "publish_s": publish}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--worlds", default="1,2")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=40)
    ap.add_argument("--resp-len", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=128)
    ap.add_argument("--micro-batch", type=int, default=64)
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / ".tmp") as tmp:
        batch = make_batch(args.prompts, args.rollouts, args.prompt_len, args.resp_len, args.vocab)
        tokens = sum(len(r) for r in batch["response_token_ids"])
        for hidden in map(int, args.sizes.split(",")):
            model_dir = Path(tmp) / f"h{hidden}"
            params = make_model(model_dir, hidden, args.vocab)
            for world in map(int, args.worlds.split(",")):
                out = Path(tmp) / f"h{hidden}_w{world}.json"
                mp.spawn(run_rank, args=(world, _free_port(), str(model_dir), batch, args.steps,
                                         args.micro_batch, str(out)), nprocs=world, join=True)
                res = json.loads(out.read_text())
                later = res["step_s"][1:] or res["step_s"]
                rows.append({
                    "hidden": hidden, "params": params, "world_size": world, "responses": len(batch["advantages"]),
                    "response_tokens": tokens, "first_step_s": res["step_s"][0],
                    "median_step_s": statistics.median(later), "tokens_per_s": tokens / statistics.median(later),
                    "median_publish_s": statistics.median(res["publish_s"]),
                })
                r = rows[-1]
                print(f"hidden={hidden:4d} params={params/1e6:5.2f}M world={world} first={r['first_step_s']:.3f}s "
                      f"median={r['median_step_s']:.3f}s tok/s={r['tokens_per_s']:.0f} "
                      f"publish={r['median_publish_s']*1e3:.1f}ms", flush=True)
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "learner_step.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
