"""TRL side of `benchmarks/vs_trl.py`: GRPO steps with TRL's `GRPOTrainer`, timed per step.

Runs inside TRL's own virtual environment (made by `vs_trl.py`), never in the project's.
The project root is on PYTHONPATH only so that the reward is the very same function
(`gdro_ray.rewards.math_reward`, stdlib + math-verify), not a look-alike.

Batch geometry (TRL 1.16, read from `trl/trainer/grpo_config.py` and `grpo_trainer.py`):
`per_device_train_batch_size` counts *completions*, not prompts. With one process,
`gradient_accumulation_steps=1` and `steps_per_generation` left unset (= 1), one optimizer
step generates `per_device_train_batch_size` completions, i.e.
`per_device_train_batch_size / num_generations` distinct prompts (TRL's `RepeatSampler`
repeats each prompt `num_generations` times). So B prompts × n̄ rollouts is
`per_device_train_batch_size = B·n̄, num_generations = n̄`.

Timing: a callback stamps the end of every optimizer step; a step's time is the interval
since the previous step's end (the first since `on_train_begin`), so it covers the data
fetch, generation, reward, reference log-probs, forward/backward, optimizer and TRL's own
logging. A subclass times generation (`_generate_single_turn`), reward
(`_calculate_rewards`) and the whole rollout phase (`_generate_and_score_completions`,
which also computes the reference log-probs); "train" is the rest of the step.

    python vs_trl_worker.py --model DIR --prompts prompts.jsonl --steps 8 --prompts-per-step 8 \
        --num-generations 4 --max-completion-length 24 --threads 2 --out trl.json
"""
from __future__ import annotations

import argparse
import json
import os
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help="jsonl with `prompt` (the user message) and `answer`")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--prompts-per-step", type=int, required=True)
    ap.add_argument("--num-generations", type=int, required=True)
    ap.add_argument("--max-completion-length", type=int, required=True)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--beta", type=float, default=0.001)
    ap.add_argument("--epsilon", type=float, default=0.2)
    ap.add_argument("--epsilon-high", type=float, default=0.28)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import transformers
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from gdro_ray.rewards.math_reward import math_reward

    with open(args.prompts) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]}
                                 for r in rows])
    tokens_this_step = [0]

    def verifier_reward(completions, answer, completion_ids, **_):
        tokens_this_step[0] += sum(len(ids) for ids in completion_ids)
        return [math_reward(c[0]["content"] if isinstance(c, list) else c, a) for c, a in zip(completions, answer)]

    stages: dict[str, float] = {}

    class TimedGRPOTrainer(GRPOTrainer):
        def _timed(self, key, fn, *a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                stages[key] = stages.get(key, 0.0) + time.perf_counter() - t0

        def _generate_single_turn(self, *a, **kw):
            return self._timed("generate", super()._generate_single_turn, *a, **kw)

        def _calculate_rewards(self, *a, **kw):
            return self._timed("reward", super()._calculate_rewards, *a, **kw)

        def _generate_and_score_completions(self, *a, **kw):
            return self._timed("rollout_phase", super()._generate_and_score_completions, *a, **kw)

    records: list[dict] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, *_a, **_k):
            self.last = time.perf_counter()

        def on_step_end(self, *_a, **_k):
            now = time.perf_counter()
            step_time = now - self.last
            self.last = now
            st = {k: round(v, 4) for k, v in stages.items()}
            st["train"] = round(step_time - stages.get("rollout_phase", 0.0), 4)
            records.append({"step": len(records) + 1, "step_time_s": round(step_time, 4),
                            "tokens": tokens_this_step[0], "stage_time_s": st})
            tokens_this_step[0] = 0
            stages.clear()

    config = GRPOConfig(
        output_dir=os.path.join(args.workdir, "trl-out"),
        use_cpu=True, bf16=False, fp16=False,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        gradient_accumulation_steps=1,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature, top_p=1.0, top_k=0,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, beta=args.beta, epsilon=args.epsilon, epsilon_high=args.epsilon_high,
        loss_type="dapo", scale_rewards="group", num_iterations=1,
        max_steps=args.steps, logging_steps=1, save_strategy="no", report_to=[],
        dataloader_num_workers=0, disable_tqdm=True, seed=args.seed, use_vllm=False,
    )
    t0 = time.perf_counter()
    trainer = TimedGRPOTrainer(model=args.model, reward_funcs=verifier_reward, args=config,
                               train_dataset=dataset, callbacks=[StepClock()])
    setup_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t1
    out = {
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "torch_threads": torch.get_num_threads(),
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "num_generations": config.num_generations,
        "generation_batch_size": config.generation_batch_size,
        "steps_per_generation": config.steps_per_generation,
        "setup_s": round(setup_s, 3), "train_s": round(train_s, 3),
        "steps": records,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
