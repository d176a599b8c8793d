r"""Verifier reward throughput: how many responses per second a sampler can score.

Cases, each over `--n` responses (the memo is cleared before each, so nothing is reused
unless the case says so):
- fast path: integer answers (the toy task and DAPO), right and wrong mixed;
- symbolic, main thread: distinct fractions/radicals that need math-verify (in process);
- symbolic, 2 threads: the same through the worker subprocesses (start-up excluded);
- repeated answers: a group of 8 rollouts sharing 2 distinct final answers (memo hits);
- adversarial: ``\boxed{9^{9^{9^{9}}}}`` with timeout_s = 0.5 (time per call = the limit).

Target: fast path >= 20k responses/s and symbolic >= 30 responses/s per core, so scoring
stays a small fraction of a CPU sampler's generation time (seconds per response). Prints a table, writes benchmarks/out/reward_throughput.json.

    python benchmarks/reward_throughput.py [--n 2000]
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gdro_ray.rewards.math_reward import batch_math_reward, math_reward, reset_reward_stats, reward_stats
from gdro_ray.rewards.verify import ensure_math_verify

OUT = Path(__file__).resolve().parent / "out" / "reward_throughput.json"


def _cases(n: int, rng: random.Random) -> dict[str, tuple[list[str], list[str]]]:
    ints = [rng.randint(0, 10**6) for _ in range(n)]
    fast = ([f"... so the total is \\boxed{{{v + (i % 2)}}}." for i, v in enumerate(ints)], [str(v) for v in ints])
    nums = [(rng.randint(1, 500), rng.randint(2, 500)) for _ in range(n)]
    symbolic = ([f"thus \\boxed{{\\frac{{{2 * a}}}{{{2 * b}}}}}" for a, b in nums],
                [f"{a}/{b}" if i % 3 else f"\\sqrt{{{a}}}" for i, (a, b) in enumerate(nums)])
    groups = [(rng.randint(1, 99), rng.randint(100, 199)) for _ in range(n // 8)]
    repeated = ([f"\\boxed{{\\frac{{{g[j % 2]}}}{{7}}}}" for g in groups for j in range(8)],
                [f"{g[0]}/7" for g in groups for _ in range(8)])
    return {"fast path": fast, "symbolic, main thread": symbolic, "repeated answers": repeated}


def _timed(fn) -> tuple[float, list[float]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    rng = random.Random(0)
    ensure_math_verify()  # import + warm-up are a one-off, not throughput
    rows = []
    for name, (responses, answers) in _cases(args.n, rng).items():
        reset_reward_stats()
        seconds, rewards = _timed(functools.partial(batch_math_reward, responses, answers))
        rows.append({"case": name, "n": len(responses), "seconds": seconds, "per_s": len(responses) / seconds,
                     "mean_reward": sum(rewards) / len(rewards), **reward_stats()})

    responses, answers = _cases(args.n, random.Random(1))["symbolic, main thread"]
    with ThreadPoolExecutor(2) as ex:
        list(ex.map(lambda _: math_reward("\\boxed{\\sqrt{2}}", "1"), range(2)))  # start the workers
        reset_reward_stats()
        seconds, rewards = _timed(lambda: list(ex.map(lambda p: math_reward(*p), zip(responses, answers))))
    rows.append({"case": "symbolic, 2 threads", "n": len(responses), "seconds": seconds,
                 "per_s": len(responses) / seconds, "mean_reward": sum(rewards) / len(rewards), **reward_stats()})

    reset_reward_stats()
    k = 4
    seconds, rewards = _timed(lambda: [math_reward(r"\boxed{9^{9^{9^{9}}}}", "1", timeout_s=0.5) for _ in range(k)])
    rows.append({"case": "adversarial (0.5 s limit)", "n": k, "seconds": seconds, "per_s": k / seconds,
                 "mean_reward": sum(rewards) / k, **reward_stats()})

    print(f"{'case':28s} {'n':>6s} {'resp/s':>10s} {'mean r':>7s} {'fast':>6s} {'slow':>6s} {'memo':>6s} {'t/o':>4s}")
    for r in rows:
        print(f"{r['case']:28s} {r['n']:6d} {r['per_s']:10.1f} {r['mean_reward']:7.3f} {r['fast_path']:6d} "
              f"{r['slow_path']:6d} {r['memo_hits']:6d} {r['timeouts']:4d}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": platform.platform(), "rows": rows}, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
