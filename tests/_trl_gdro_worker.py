"""Runs inside TRL's own virtual environment (benchmarks/.venv-trl) for test_integrations_trl.py:
a few GRPO steps of TRL's GRPOTrainer on the toy model with Prompt-GDRO choosing the prompts
(gdro_ray.integrations.trl), then a JSON report of what the curriculum handed out and saw.

    python _trl_gdro_worker.py --model DIR --prompts prompts.jsonl --workdir DIR --out report.json
"""
from __future__ import annotations

import argparse
import json
import os


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--num-generations", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1, help="> 1: each block is generated once, trained in slices")
    ap.add_argument("--async-reward", action="store_true", help="the correctness reward is `async def`")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import trl
    from datasets import Dataset
    from trl import GRPOConfig

    from gdro_ray.integrations.trl import STATE_FILE, GDROGRPOTrainer, add_row_ids
    from gdro_ray.rewards.math_reward import math_reward

    with open(args.prompts) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    dataset = add_row_ids(Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                              "answer": r["answer"]} for r in rows]))
    calls: list[list[int]] = []

    def correct(completions, answer, gdro_row, **_):
        calls.append([int(x) for x in gdro_row])
        return [math_reward(c[0]["content"] if isinstance(c, list) else c, a) for c, a in zip(completions, answer)]

    if args.async_reward:  # TRL awaits it; the observer must too
        sync_correct = correct

        async def correct(completions, answer, gdro_row, **kw):
            return sync_correct(completions, answer, gdro_row, **kw)

    def short(completions, **_):  # a second reward, not observed: shaping does not reach the curriculum
        return [-0.01 * len(c[0]["content"] if isinstance(c, list) else c) for c in completions]

    config = GRPOConfig(
        output_dir=os.path.join(args.workdir, "trl-out"), use_cpu=True, bf16=False, fp16=False,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations // args.grad_accum,
        gradient_accumulation_steps=args.grad_accum,
        num_generations=args.num_generations, max_completion_length=24, temperature=1.0, learning_rate=1e-5,
        beta=0.0, max_steps=args.steps, logging_steps=1, save_strategy="steps", save_steps=2, report_to=[],
        dataloader_num_workers=0, disable_tqdm=True, seed=0, use_vllm=False,
    )
    handed: list[list[int]] = []

    class LoggedTrainer(GDROGRPOTrainer):
        """Logs every block the curriculum hands out (the curriculum itself is built by the trainer)."""

        def _get_train_sampler(self, dataset=None):
            sampler = super()._get_train_sampler(dataset)
            cur = self.curriculum
            if not getattr(cur, "_logged", False):
                inner = cur.next_block

                def next_block():
                    sched = inner()
                    handed.append(sched.prompt_ids.tolist())
                    return sched

                cur.next_block, cur._logged = next_block, True
            return sampler

    trainer = LoggedTrainer(model=args.model, reward_funcs=[correct, short], args=config, train_dataset=dataset,
                            gdro_overrides=["prompt_gdro.eta=0.65", "classifier.k=4"])
    trainer.train()
    cur = trainer.curriculum
    state_file = os.path.join(config.output_dir, "checkpoint-2", STATE_FILE)
    saved = json.load(open(state_file)) if os.path.isfile(state_file) else None
    pending = [p["prompt_ids"] for p in (cur.state_dict()["adversary"].get("pending") or [])]
    out = {
        "trl": trl.__version__, "global_step": trainer.state.global_step, "reward_calls": calls, "handed": handed,
        "records": trainer.gdro_observer.records, "refused": cur.refused,
        "adversary_step": cur.adversary.step, "pending": pending, "saved_state": saved,
        "num_rows": len(dataset), "logged_reward_names": trainer.reward_func_names,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
