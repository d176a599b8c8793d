"""Pin a whole actor process to a set of CPUs (`cluster.sampler_cpus`, `cluster.learner_cpus`).

Ray's logical CPUs are bookkeeping only: on one node every actor still runs on every core, so
samplers and learner ranks that overlap in time (one-step off-policy) fight for the same cores
(benchmarks/RESULTS.md, "Off-policy where it can pay"). Pinning them to disjoint cores is what makes the overlap
pay on a single node. On several nodes the placement keys (`sampler.ray_resource`,
`learner.ray_resource`) already separate them.

`os.sched_setaffinity(0, ...)` moves only the calling thread on Linux, and by the time an actor's
constructor runs Ray has started its own threads; so every thread in /proc/self/task is moved.
Threads and child processes started afterwards (torch's OpenMP pool, vLLM's CPU worker, the
reward subprocesses) inherit the mask; vLLM's CPU backend reads it to choose its cores.
"""
from __future__ import annotations

import os


def pin_process(cpus: list[int] | None, key: str) -> list[int]:
    """Restrict every thread of this process to `cpus` (None or empty: leave it); returns the
    resulting mask. Raises ValueError naming `key` for CPUs this process may not use.

    The check is what the kernel grants, not the current mask, so a pinned process can be
    widened again (benchmarks/offpolicy_cores.py does)."""
    if cpus:
        want = {int(c) for c in cpus}
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), want)
            except ProcessLookupError:  # the thread ended meanwhile
                pass
            except OSError as e:  # none of them is usable here (offline, outside the cgroup's cpuset)
                raise ValueError(f"{key}: cannot pin to CPUs {sorted(want)} ({e.strerror}); "
                                 f"this node has CPUs 0-{(os.cpu_count() or 1) - 1}") from None
        got = os.sched_getaffinity(0)
        if got != want:  # the kernel silently drops the unusable ones
            raise ValueError(f"{key}: CPUs {sorted(want - got)} are not available on this node (usable of "
                             f"those asked: {sorted(got)})")
    return sorted(os.sched_getaffinity(0))


def thread_affinities() -> list[list[int]]:
    """Every thread's CPU mask in this process (tests check that no thread was left out)."""
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            out.append(sorted(os.sched_getaffinity(int(tid))))
        except ProcessLookupError:
            pass
    return out
