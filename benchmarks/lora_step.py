"""Learner step and weight publication with LoRA (`learner.lora`) against full fine-tuning.

For each model (`toy`, `smollm2`: the prepared ones) the two arms run side by side, alternated
round by round (full, lora, full, lora, ...), each in a fresh spawned process: a one-rank FSDP2
`LearnerWorker` with the service's GRPO defaults (two mini-batches, KL to the reference) on a
batch of random responses, `--steps` train steps each followed by a publication. Per arm:
- step: `train_step`'s wall time (median of the steps after the first);
- publish: `publishable_state()` (full: gather the whole state dict; LoRA: gather the adapters
  and merge them into rank 0's base copy) plus its safetensors serialisation (`state_dict_bytes`,
  what the bytes transport sends); median over the steps;
- trainable parameters and the process's peak RSS.
Each arm keeps its best round (the least disturbed one on a shared machine). Prints a table and
writes JSON to benchmarks/results/lora_step.json (`--out`).

    .venv/bin/python benchmarks/lora_step.py [--models toy,smollm2] [--rounds 2] [--steps 3] [--rank 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learner_step import _free_port, make_batch  # noqa: E402  (the same random batch as learner_step.py)


def run_arm(rank: int, model_dir: str, batch: dict, steps: int, micro: int, threads: int, grpo: dict, lora: dict | None, out: str) -> None:
    from gdro_ray.learner import LearnerWorker

    w = LearnerWorker(0, 1, "127.0.0.1", _free_port(), model_dir, lr=1e-5, micro_batch=micro, grpo=grpo, num_threads=threads, lora=lora)
    trainable = sum(p.numel() for p in w.model.parameters() if p.requires_grad)
    step_s, gather_s, publish_s, nbytes = [], [], [], 0
    for _ in range(steps):
        step_s.append(w.train_step(batch).time_s)
        t0 = time.perf_counter()
        w.publishable_state()
        gather_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        blob = w.state_dict_bytes()
        publish_s.append(time.perf_counter() - t0)
        nbytes = len(blob)
    w.shutdown()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out).write_text(
        json.dumps({"step_s": step_s, "gather_merge_s": gather_s, "publish_s": publish_s, "trainable": trainable, "bytes": nbytes, "peak_rss_mb": peak_mb})
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="toy,smollm2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=40)
    ap.add_argument("--resp-len", type=int, default=24)
    ap.add_argument("--micro-batch", type=int, default=64)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--out", default="lora_step.json", help="file name under benchmarks/results/")
    args = ap.parse_args()

    from transformers import AutoConfig

    from gdro_ray.config import load_config
    from gdro_ray.models.registry import resolve_model_path

    g = load_config(None, []).grpo  # the service's GRPO defaults
    grpo = {"clip_low": g.clip_low, "clip_high": g.clip_high, "kl_coef": g.kl_coef, "mini_batches": g.mini_batches, "epochs": g.epochs, "loss_agg": g.loss_agg}
    arms = {"full": None, "lora": {"rank": args.rank, "alpha": args.alpha, "target_modules": ["all-linear"]}}
    results = []
    (ROOT / ".tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".tmp") as tmp:
        for name in args.models.split(","):
            model_dir = str(resolve_model_path(name))
            vocab = int(AutoConfig.from_pretrained(model_dir).vocab_size)
            batch = make_batch(args.prompts, args.rollouts, args.prompt_len, args.resp_len, vocab)
            runs: dict[str, list[dict]] = {arm: [] for arm in arms}
            for rnd in range(args.rounds):
                order = list(arms) if rnd % 2 == 0 else list(arms)[::-1]  # alternate who goes first
                for arm in order:
                    out = Path(tmp) / f"{name}_{arm}_{rnd}.json"
                    mp.spawn(run_arm, args=(model_dir, batch, args.steps, args.micro_batch, args.threads, grpo, arms[arm], str(out)), nprocs=1, join=True)
                    res = json.loads(out.read_text())
                    runs[arm].append(res)
                    print(
                        f"round {rnd} {name} {arm}: step {statistics.median(res['step_s'][1:] or res['step_s']):.3f} s, "
                        f"publish {statistics.median(res['publish_s']):.3f} s",
                        flush=True,
                    )
            for arm, rs in runs.items():
                steps = [statistics.median(r["step_s"][1:] or r["step_s"]) for r in rs]
                best = rs[steps.index(min(steps))]
                results.append(
                    {
                        "model": name,
                        "arm": arm,
                        "lora": arms[arm],
                        "trainable_params": best["trainable"],
                        "step_s_best_round": min(steps),
                        "step_s_rounds": steps,
                        "gather_merge_s": min(statistics.median(r["gather_merge_s"]) for r in rs),
                        "publish_bytes_s": min(statistics.median(r["publish_s"]) for r in rs),
                        "publish_mb": best["bytes"] / 2**20,
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                    }
                )
    hdr = f"{'model':8} {'arm':5} {'trainable':>11} {'step s':>8} {'gather+merge s':>15} {'publish (bytes) s':>18} {'peak RSS MB':>12}"
    print(hdr)
    for r in results:
        print(
            f"{r['model']:8} {r['arm']:5} {r['trainable_params']:>11,} {r['step_s_best_round']:>8.3f} "
            f"{r['gather_merge_s']:>15.3f} {r['publish_bytes_s']:>18.3f} {r['peak_rss_mb']:>12.0f}"
        )
    meta = {"args": vars(args), "threads": args.threads, "machine": "2-core shared CPU box, gloo, 1 rank", "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = ROOT / "benchmarks" / "results" / args.out
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
