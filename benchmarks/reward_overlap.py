r"""Rewards beside generation: a SmolLM2 sampling step with symbolic answers, scored
after generation (`sampler.reward_chunk=0`) against scored chunk by chunk while the next chunk
generates (`sampler.reward_chunk=C`).

One `Sampler` (the real actor class, in this process, vLLM engine) runs one shard of `--prompts`
prompts × `--n` rollouts per step (the `smollm2` preset's step: 8 × 4, one shard). The modes
alternate on the same inputs in each repeat (their order flips every repeat); the memo of
definitive comparisons is cleared before every step, so no mode reuses another's work.

Symbolic answers: fractions to reduce, squares to expand, radicals to simplify. SmolLM2-135M
boxes an answer in few of its responses (the run reports how many), where a capable model boxes
nearly all; to give scoring the cost it has with such a model, each response is scored with a
final ``\boxed{}`` appended, alternately an equal form that needs math-verify (e.g. 6/14 for 3/7)
and a wrong one, distinct per rollout (no memo hits). Generation is untouched.

Measured per step: wall time of `generate_shard`, engine time (`generate_s`), the scoring the
step waited for (`reward_s`) and all scoring (`reward_busy_s`); sampler busy fraction = engine
time / wall; speed-up = the off step's wall / the chunked step's wall, paired per repeat. Prints a table
(min and median over repeats), writes benchmarks/out/reward_overlap.json.

    python benchmarks/reward_overlap.py [--repeats 3] [--tokens 128 32] [--chunks 4 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "reward_overlap.json"


def _problem(j: int) -> tuple[str, str, list[str]]:
    """(prompt, gold answer, candidate final answers: equal forms at even k, wrong at odd k)."""
    a, b = 2 + j % 17, 3 + (5 * j) % 23
    kind = j % 3
    if kind == 0:
        cands = [f"\\frac{{{a * m}}}{{{b * m}}}" if m % 2 == 0 else f"\\frac{{{a + m}}}{{{b}}}" for m in range(2, 18)]
        return f"Reduce the fraction {3 * a}/{3 * b} to lowest terms. Put the final answer in \\boxed{{}}.", \
            f"\\frac{{{a}}}{{{b}}}", cands
    if kind == 1:
        cands = [f"x^2+{2 * a}x+{a * a}+{m}-{m}" if m % 2 == 0 else f"x^2+{a * a + m}" for m in range(2, 18)]
        return f"Expand (x+{a})^2. Put the final answer in \\boxed{{}}.", f"(x+{a})^2", cands
    cands = [f"\\sqrt{{{a * a * b * m * m}}}/{m}" if m % 2 == 0 else f"{a + m}\\sqrt{{{b}}}" for m in range(2, 18)]
    return f"Simplify sqrt({a * a * b}). Put the final answer in \\boxed{{}}.", f"{a}\\sqrt{{{b}}}", cands


def _make_sampler(args):
    from gdro_ray.models.registry import resolve_model_path
    from gdro_ray.service.sampler_actor import Sampler

    class BoxedSampler(Sampler):
        """Scores each response with a symbolic final answer appended (see the module docstring)."""

        candidates: dict = {}  # prompt -> its symbolic answers (set per shard by `_shard`)
        texts: list = []  # the model's own texts of the last shard (the result carries token ids only)

        def _score_prompt(self, shard, i, rollouts):
            cands = self.candidates[shard.prompts[i]]
            self.texts += [r.text for r in rollouts]
            boxed = [dataclasses.replace(r, text=f"{r.text}\nSo the answer is \\boxed{{{cands[k % len(cands)]}}}.")
                     for k, r in enumerate(rollouts)]
            return super()._score_prompt(shard, i, boxed)

    return BoxedSampler(0, str(resolve_model_path("smollm2")), engine=args.engine, num_threads=args.threads,
                        reward_timeout_s=2.0, max_model_len=512, reward_chunk=max(args.chunks))


def _shard(sampler, step: int, args, tokens: int):
    from gdro_ray.protocol import Shard

    probs = [_problem(step * args.prompts + j) for j in range(args.prompts)]
    sampler.candidates.update({p: c for p, _, c in probs})
    return Shard(shard_id=step, slots=list(range(args.prompts)), prompts=[p for p, _, _ in probs],
                 answers=[g for _, g, _ in probs], n=[args.n] * args.prompts, max_new_tokens=tokens,
                 temperature=1.0, top_p=1.0, seed=1000 + step)


def _step(sampler, shard, chunk: int) -> dict:
    from gdro_ray.rewards.math_reward import extract_boxed, reset_reward_stats, reward_stats

    reset_reward_stats()
    sampler.reward_chunk = chunk
    sampler.texts = []
    start = time.perf_counter()
    out = sampler.generate_shard(shard)
    wall = time.perf_counter() - start
    texts = sampler.texts
    stats = reward_stats()
    return {"chunk": chunk, "wall_s": wall, "generate_s": out.generate_s, "reward_s": out.reward_s,
            "reward_busy_s": out.reward_busy_s, "busy": out.generate_s / wall, "tokens": out.tokens,
            "rollouts": len(texts), "model_boxed": sum(extract_boxed(t) is not None for t in texts),
            "slow_path": stats["slow_path"], "timeouts": out.reward_timeouts,
            "mean_reward": sum(x for r in out.results for x in r.rewards) / max(1, len(texts))}


def _summary(rows: list[dict]) -> dict:
    out = {}
    for key in ("wall_s", "generate_s", "reward_s", "reward_busy_s", "busy"):
        vals = [r[key] for r in rows]
        out[key] = {"min": min(vals), "median": statistics.median(vals)}
    out["tokens_per_s"] = statistics.median(r["tokens"] / r["wall_s"] for r in rows)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--tokens", type=int, nargs="+", default=[128, 32], help="max_new_tokens per case")
    ap.add_argument("--chunks", type=int, nargs="+", default=[4, 2], help="sampler.reward_chunk values against 0")
    ap.add_argument("--engine", default="vllm")
    ap.add_argument("--threads", type=int, default=1, help="engine threads (torch)")
    ap.add_argument("--machine", default="", help="a note on the machine for the JSON")
    args = ap.parse_args(argv)
    from gdro_ray.utils.env import setup_env

    setup_env()
    sampler = _make_sampler(args)
    modes = [0, *args.chunks]
    for chunk in modes:  # warm-up: engine graphs, the math-verify import and its worker; not measured
        _step(sampler, _shard(sampler, 10_000 + chunk, args, 16), chunk)
    rows = []
    for tokens in args.tokens:
        for rep in range(args.repeats):
            shard = _shard(sampler, rep + 100 * tokens, args, tokens)
            for chunk in (modes if rep % 2 == 0 else modes[::-1]):
                row = dict(_step(sampler, shard, chunk), tokens_cap=tokens, repeat=rep)
                rows.append(row)
                print(f"  tokens {tokens} rep {rep} chunk {chunk}: wall {row['wall_s']:.2f} s, engine "
                      f"{row['generate_s']:.2f} s, waited on scoring {row['reward_s']:.2f} s of {row['reward_busy_s']:.2f} s, "
                      f"busy {row['busy']:.3f}", flush=True)
    table = []
    print(f"\n{'max tok':>7s} {'chunk':>5s} {'step s min/med':>15s} {'busy min/med':>13s} {'waited s med':>12s} "
          f"{'scoring s med':>13s} {'tok/s med':>9s} {'vs off min/med':>14s}")
    for tokens in args.tokens:
        base = None
        for chunk in modes:
            sel = [r for r in rows if r["tokens_cap"] == tokens and r["chunk"] == chunk]
            s = _summary(sel)
            base = base or s
            # paired: each repeat's off step against its chunked step on the same inputs, back to back
            pairs = [off["wall_s"] / r["wall_s"] for r in sel for off in rows
                     if off["tokens_cap"] == tokens and off["chunk"] == 0 and off["repeat"] == r["repeat"]]
            ratio = statistics.median(pairs)
            table.append({"max_new_tokens": tokens, "reward_chunk": chunk, **s, "speedup_vs_off_paired": pairs,
                          "speedup_vs_off_min": min(pairs), "speedup_vs_off_median": ratio})
            print(f"{tokens:7d} {chunk:5d} {s['wall_s']['min']:7.2f}/{s['wall_s']['median']:<7.2f} "
                  f"{s['busy']['min']:6.3f}/{s['busy']['median']:<6.3f} {s['reward_s']['median']:12.2f} "
                  f"{s['reward_busy_s']['median']:13.2f} {s['tokens_per_s']:9.1f} {min(pairs):5.2f}/{ratio:.2f}x")
    boxed = sum(r["model_boxed"] for r in rows), sum(r["rollouts"] for r in rows)
    print(f"\nSmolLM2 boxed an answer itself in {boxed[0]} of {boxed[1]} responses; math-verify comparisons per step: "
          f"{statistics.median(r['slow_path'] for r in rows):.0f} (median), timeouts {sum(r['timeouts'] for r in rows)}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": args.machine or platform.platform(),
        "cpus": os.cpu_count(), "args": vars(args), "model_boxed": boxed, "table": table, "rows": rows}, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
