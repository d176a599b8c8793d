"""Scoring beside generation: a sampler's shard is generated in chunks of prompts, and each
finished chunk is scored on a background thread while the engine generates the next one.

Why a thread is enough: the expensive part of scoring runs outside this process. Math-verify
comparisons off the main thread go to the worker subprocesses of `_worker_pool` (math-verify's
SIGALRM time limit needs a main thread, which those workers have), and a custom
`reward.function` always runs in its own subprocess (`custom.py`). The thread mostly waits on a
pipe with the GIL released, so the engine keeps generating; only the string work of the fast
path (box extraction, integer compare) takes the GIL, microseconds per response.

Rules kept identical to scoring after generation:
- order: scores come back per prompt in shard order, whatever the chunking;
- limits: each call keeps its own time limit (`sampler.reward_timeout_s`), and timeouts and
  errors are counted by the same counters (math-verify's `reward_stats`, the runner's stats);
- `reward.on_error=stop`: the first failing call (in shard order) raises from `results()`; jobs
  behind it are skipped, like the calls a serial loop never reaches, and `raise_if_failed()`
  lets the sampler stop generating further chunks at once.

One thread per sampler: jobs run in submission order, so a custom reward function sees its calls
in shard order, and a sampler takes one extra core at most (its Ray reservation is
`sampler.num_cpus`). With `reward.concurrency` > 1 the calls of one job are in flight together,
each in its own worker subprocess (a served judge answers them in parallel); their scores still
come back in shard order.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

ScoreFn = Callable[..., list[float]]


def chunk_spans(n_prompts: int, chunk: int) -> list[tuple[int, int]]:
    """[start, end) prompt ranges of at most `chunk` prompts; one span when chunk <= 0."""
    if chunk <= 0 or chunk >= n_prompts:
        return [(0, n_prompts)]
    return [(a, min(a + chunk, n_prompts)) for a in range(0, n_prompts, chunk)]


def chunk_seed(seed: int | None, index: int) -> int | None:
    """The generation seed of chunk `index`: the shard's own seed for the first chunk (so a shard
    that fits one chunk samples exactly as without chunking), a distinct fixed one after it."""
    if seed is None or index == 0:
        return seed
    return (int(seed) * 1_000_003 + index * 7_919) % (2**31)


class ShardScoring:
    """The scoring jobs of one shard.

    With `executor` None every job runs at once on the caller's thread (scoring after
    generation, as before); with a single-thread executor jobs run in the background in order.
    """

    def __init__(self, score: ScoreFn, executor: ThreadPoolExecutor | None = None,
                 score_many: Callable[[list[tuple[Any, ...]]], list[list[float]]] | None = None):
        # `score_many` scores a job's calls together (a custom reward with `reward.concurrency` > 1
        # keeps several in flight); it returns them in order, as the loop over `score` does
        self._score, self._executor, self._score_many = score, executor, score_many
        self._futures: list[Future] = []
        self._failed = threading.Event()
        self.busy_s = 0.0  # seconds spent scoring (in the background it overlaps generation)

    def submit(self, calls: list[tuple[Any, ...]]) -> None:
        """Score `calls` (argument tuples of `score`, one per prompt) after the jobs before them."""
        if self._executor is None:
            fut: Future = Future()
            try:
                fut.set_result(self._run(calls))
            except BaseException as e:  # noqa: BLE001 - re-raised by results(), like a background job
                fut.set_exception(e)
            self._futures.append(fut)
        else:
            self._futures.append(self._executor.submit(self._run, calls))

    def _run(self, calls: list[tuple[Any, ...]]) -> list[list[float]] | None:
        if self._failed.is_set():
            return None  # an earlier call stopped the shard: a serial loop never gets here
        start = time.perf_counter()
        try:
            if self._score_many is not None:
                return self._score_many(calls)
            return [self._score(*args) for args in calls]
        except BaseException:
            self._failed.set()
            raise
        finally:
            self.busy_s += time.perf_counter() - start  # jobs run one at a time: no lock needed

    def raise_if_failed(self) -> None:
        """Raise the first error now if a job already failed (no point generating further chunks)."""
        if self._failed.is_set():
            self.results()

    def drain(self) -> None:
        """Wait for every job, ignoring their errors: a shard that fails mid-generation must not
        leave scoring running into the next shard's counters."""
        for fut in self._futures:
            fut.exception()

    def results(self) -> list[list[float]]:
        """Every prompt's scores in submission order; waits for the jobs, raises the first error."""
        out: list[list[float]] = []
        for fut in self._futures:
            part = fut.result()  # jobs after a failed one return None, but the failed one raises first
            out.extend(part or [])
        return out
