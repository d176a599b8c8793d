"""World probe: does plain GRPO improve held-out accuracy on a candidate toy world? (no Ray)

What it measures: starting from a prepared toy model (or a fresh SFT), optionally a *choice
SFT* phase on demonstrations whose chat answers are right only in a fraction c_t of cases per
tier (otherwise the same computation with a systematically wrong last digit, `toy_task.slip`),
then a plain-PyTorch on-policy GRPO loop (HF generate, `integer_reward`, the project's
`grpo_loss` with ratio 1) on prompts drawn from the heavy-tailed training pool, as the real
pipeline's `algorithm=grpo` does. It prints per tier and pooled, before and after RL, on the
held-out split: mean@k (mean correctness of k samples at the eval temperature) and pass@k
(unbiased estimator from n samples), so a candidate world (tier rates c_t, model, SFT length,
temperatures, batch, rollouts, steps, lr, KL) can be judged in a few minutes on one thread.

    python benchmarks/world_probe.py --init v1 --choice-steps 300 --c 0.9,0.6,0.3,0.12,0.06,0.03 \
        --steps 40 --batch 64 --rollouts 8 --lr 1e-4

The measurements that chose the default world are in benchmarks/RESULTS.md and in the
docstring of gdro_ray/models/prepare.py.
"""
from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch

from gdro_ray.algorithms.grpo import group_advantages, grpo_loss
from gdro_ray.algorithms.passk import pass_at_k
from gdro_ray.data import toy_task
from gdro_ray.models import prepare, sft, tiny


def chat_ids(tok, prompts: list[str]) -> list[list[int]]:
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in prompts]
    return tok(texts, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def sample(model, tok, prompts: list[str], k: int, temperature: float, max_new: int = 28,
           top_p: float = 1.0, chunk: int = 64) -> list[list[list[int]]]:
    """k sampled responses (token ids, eos included when produced) per prompt."""
    out = []
    eos, pad = tok.eos_token_id, tok.pad_token_id
    for start in range(0, len(prompts), chunk):
        part = prompts[start:start + chunk]
        enc = tok([tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in part],
                  add_special_tokens=False, padding=True, return_tensors="pt")
        gen = model.generate(**enc, max_new_tokens=max_new, do_sample=True, temperature=temperature, top_k=0,
                             top_p=top_p, num_return_sequences=k, eos_token_id=eos, pad_token_id=pad)
        gen = gen[:, enc["input_ids"].shape[1]:].tolist()
        seqs = []
        for row in gen:
            cut = row.index(eos) + 1 if eos in row else len(row)
            seqs.append(row[:cut])
        out += [seqs[i:i + k] for i in range(0, len(seqs), k)]
    return out


def score(tok, responses: list[list[list[int]]], answers: list[str]) -> np.ndarray:
    return np.array([[toy_task.integer_reward(tok.decode(r, skip_special_tokens=True), a) for r in rs]
                     for rs, a in zip(responses, answers)])


def evaluate(model, tok, split: list[dict], n: int, k: int, temperature: float, top_p: float) -> dict:
    model.eval()
    rewards = score(tok, sample(model, tok, [e["prompt"] for e in split], n, temperature, top_p=top_p),
                    [e["answer"] for e in split])
    tiers = np.array([e["tier"] for e in split])
    table = {}
    for t in sorted(set(tiers.tolist())):
        r = rewards[tiers == t]
        mean_k = float(r[:, :k].mean())
        passk = float(np.mean([pass_at_k(n, int(c), k) for c in r.sum(1)]))
        table[t] = {"mean": mean_k, "pass": passk}
    table["pooled"] = {m: float(np.mean([table[t][m] for t in table])) for m in ("mean", "pass")}
    return table


def seq_logprobs(model, prompt_ids: list[list[int]], resp_ids: list[list[int]], temperature: float, pad: int):
    """Token log-probs of the responses under softmax(logits/T); right padded, [B, R] and mask."""
    width = max(len(p) + len(r) for p, r in zip(prompt_ids, resp_ids))
    rlen = max(len(r) for r in resp_ids)
    ids = torch.full((len(resp_ids), width), pad)
    attn = torch.zeros_like(ids)
    for i, (p, r) in enumerate(zip(prompt_ids, resp_ids)):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        attn[i, :len(p) + len(r)] = 1
    logits = model(input_ids=ids, attention_mask=attn).logits.float() / temperature
    logp_all = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    logp = torch.zeros(len(resp_ids), rlen)
    mask = torch.zeros(len(resp_ids), rlen)
    for i, (p, r) in enumerate(zip(prompt_ids, resp_ids)):
        logp[i, :len(r)] = logp_all[i, len(p) - 1:len(p) - 1 + len(r)]
        mask[i, :len(r)] = 1
    return logp, mask


def choice_sft(model, tok, c: list[float], steps: int, seed: int, lr: float, mix: tuple[float, ...],
               bare_batch: int = 64, batch: int = 32) -> None:
    """Chat demonstrations right with rate c_t (else the slipped answer) + always-right bare practice."""
    rng = random.Random(1000 + seed)
    chat = toy_task.make_sft_set(toy_task.tier_counts(steps * batch, mix), seed=seed, stream="probe-chat")
    for ex in chat:
        if rng.random() >= c[ex["tier"]]:
            ex["answer"] = str(toy_task.slip(int(ex["answer"])))
    bare = toy_task.make_sft_set(toy_task.tier_counts(steps * bare_batch, mix), seed=seed, stream="probe-bare")
    streams = [(sft.encode_sft(tok, chat), batch), (sft.encode_sft(tok, bare, bare=True), bare_batch)]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
        for (ids, mask, labels), b in streams:
            rows = slice(step * b, (step + 1) * b)
            width = int(mask[rows].sum(1).max())
            model(input_ids=ids[rows, :width], attention_mask=mask[rows, :width], labels=labels[rows, :width]).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()


def grpo(model, tok, pool: list[dict], args, log) -> None:
    ref = None
    if args.kl > 0:
        import copy
        ref = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0)
    rng = random.Random(args.seed)
    order = list(range(len(pool)))
    rng.shuffle(order)
    for step in range(args.steps):
        batch = [pool[order[(step * args.batch + i) % len(order)]] for i in range(args.batch)]
        model.eval()
        resp = sample(model, tok, [e["prompt"] for e in batch], args.rollouts, args.train_temp)
        rewards = score(tok, resp, [e["answer"] for e in batch])
        adv = torch.cat(group_advantages([r for r in rewards]))
        p_ids = chat_ids(tok, [e["prompt"] for e in batch])
        flat_p = [p for p in p_ids for _ in range(args.rollouts)]
        flat_r = [r for rs in resp for r in rs]
        model.train()
        logp, mask = seq_logprobs(model, flat_p, flat_r, args.train_temp, tok.pad_token_id)
        ref_logp = None
        if ref is not None:
            with torch.no_grad():
                ref_logp, _ = seq_logprobs(ref, flat_p, flat_r, args.train_temp, tok.pad_token_id)
        loss, stats, _ = grpo_loss(logp, logp.detach(), ref_logp, adv, mask, kl_coef=args.kl)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 0 or step == args.steps - 1:
            tiers = np.array([e["tier"] for e in batch])
            per = " ".join(f"{rewards[tiers == t].mean():.2f}" if (tiers == t).any() else "-" for t in range(6))
            log(f"  rl step {step + 1:3d} reward {rewards.mean():.3f} [{per}] kl {stats['kl']:.4f}")


def fmt(before: dict, after: dict | None) -> str:
    lines = [f"{'tier':<12}{'mean@k':>8}{'pass@k':>8}" + (f"{'mean@k':>9}{'pass@k':>8}" if after else "")]
    for t in before:
        name = "pooled" if t == "pooled" else f"{t} {toy_task.TIER_NAMES[t]}"
        row = f"{name:<12}{before[t]['mean']:>8.3f}{before[t]['pass']:>8.3f}"
        if after:
            row += f"{after[t]['mean']:>9.3f}{after[t]['pass']:>8.3f}"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", default="v1", help="'v1' (the prepared model under the cache) or a model folder")
    ap.add_argument("--choice-steps", type=int, default=0)
    ap.add_argument("--choice-lr", type=float, default=1e-3)
    ap.add_argument("--c", default="0.9,0.6,0.3,0.12,0.06,0.03", help="per-tier right-answer rate in choice SFT")
    ap.add_argument("--mix", default="0.30,0.24,0.16,0.10,0.08,0.12")
    ap.add_argument("--save", default="", help="save the model after choice SFT here")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--kl", type=float, default=0.0)
    ap.add_argument("--train-temp", type=float, default=1.0)
    ap.add_argument("--eval-temp", type=float, default=1.0)
    ap.add_argument("--eval-top-p", type=float, default=1.0)
    ap.add_argument("--eval-per-tier", type=int, default=50)
    ap.add_argument("--eval-n", type=int, default=8)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--pool", type=int, default=14100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", flush=True)

    path = prepare.prepare_toy_model() if args.init == "v1" else args.init
    model, tok = tiny.load(path)
    if args.choice_steps:
        c = [float(x) for x in args.c.split(",")]
        choice_sft(model, tok, c, args.choice_steps, args.seed, args.choice_lr, tuple(float(x) for x in args.mix.split(",")))
        log(f"choice SFT {args.choice_steps} steps c={c}")
        if args.save:
            tiny.save(model, tok, args.save)
    split = toy_task.make_eval_split(per_tier=args.eval_per_tier, seed=0)
    pool = toy_task.make_train_pool(args.pool, seed=args.seed)
    before = evaluate(model, tok, split, args.eval_n, args.k, args.eval_temp, args.eval_top_p)
    log("base\n" + fmt(before, None))
    after = None
    if args.steps:
        grpo(model, tok, pool, args, log)
        after = evaluate(model, tok, split, args.eval_n, args.k, args.eval_temp, args.eval_top_p)
        gain = after["pooled"]["mean"] / max(before["pooled"]["mean"], 1e-9) - 1
        log(f"base -> after RL (pooled mean@{args.k} {gain:+.1%})\n" + fmt(before, after))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "before": before, "after": after}, fh, indent=1)


if __name__ == "__main__":
    main()
