"""Sync vs one-step off-policy with samplers and learner on disjoint cores.

One real training job (`preset=toy`: vLLM samplers, FSDP2 learner ranks on gloo, the adversary
actor; `build_trainer` then the driver's own `run_step`, synchronous or off-policy), started with
`cluster.sampler_cpus=[first CPU]` and `cluster.learner_cpus=[last CPU]`. Four configurations
alternate in blocks inside the one job, so a machine whose load drifts hits them all alike:

    sync   pinned     each phase on its own core (the other core idles)
    off    pinned     sampling on one core while the learner trains on the other
    sync   free       every actor thread may use every core (masks widened in place)
    off    free       today's default: sampling and learning fight for the same cores

"free" widens every thread's mask of the same actors to all CPUs with `pin_process` (so the
thread counts are identical; only the placement differs). Each block's first step is dropped
(off-policy: it has nothing to overlap with). Per block: the steady-state step (mean interval
between completions), the driver's per-stage wall times, and the CPU seconds the sampler and
learner processes consumed per step (utime+stime from /proc), which a loaded machine disturbs
far less than the wall clock. Ratios: sync-pinned / off-pinned and sync-free / off-pinned,
min and median over the repeats.

    python benchmarks/offpolicy_cores.py [--repeats 3] [--steps 4] [key=value ...]

Prints a table and writes benchmarks/out/offpolicy_cores.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "offpolicy_cores.json"
TICK = os.sysconf("SC_CLK_TCK")
CONFIGS = (("sync", "pinned"), ("off", "pinned"), ("sync", "free"), ("off", "free"))


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICK


def set_masks(actors: list, cpus: list[int]) -> None:
    import ray

    from gdro_ray.utils.affinity import pin_process

    got = ray.get([a.__ray_call__.remote(lambda self, c=cpus: pin_process(c, "benchmark")) for a in actors])
    assert all(g == sorted(cpus) for g in got), got


def block(trainer, off_policy: bool, steps: int, s_pids, l_pids) -> dict:
    trainer.cfg.cluster.off_policy = off_policy
    trainer.cfg.steps = trainer.step + steps  # off-policy launches no sampling past the block's end
    ends, stages, cpu = [time.perf_counter()], [], []
    marks = (cpu_seconds(s_pids), cpu_seconds(l_pids))
    for i in range(steps):
        t = trainer.run_step().stage_time_s
        ends.append(time.perf_counter())
        now = (cpu_seconds(s_pids), cpu_seconds(l_pids))
        if i:  # the first step is dropped (start-up of the block)
            stages.append(t)
            cpu.append((now[0] - marks[0], now[1] - marks[1]))
        marks = now
    assert trainer.inflight is None
    med = lambda xs: statistics.median(xs)  # noqa: E731
    return {"step_s": (ends[-1] - ends[1]) / (steps - 1),
            "stages_s": {k: med([s.get(k, 0.0) for s in stages]) for k in ("sample", "learn", "publish", "observe")},
            "sampler_cpu_s": med([c[0] for c in cpu]), "learner_cpu_s": med([c[1] for c in cpu])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="steps per block (the first is dropped)")
    ap.add_argument("overrides", nargs="*", help="config overrides (preset=toy by default)")
    args = ap.parse_args(argv)
    import ray

    from gdro_ray.config import load_config
    from gdro_ray.service.build import build_trainer
    from gdro_ray.utils.env import setup_env

    setup_env()
    cpus = sorted(os.sched_getaffinity(0))
    s_cpu, l_cpu = cpus[0], cpus[-1]
    run = ROOT / ".tmp" / "offpolicy_cores_run"
    cfg = load_config(overrides=["preset=toy", "checkpoint.every=0", "metrics.enabled=false", f"out={run}",
                                 f"cluster.sampler_cpus=[{s_cpu}]", f"cluster.learner_cpus=[{l_cpu}]",
                                 "steps=1000000", *args.overrides])
    trainer = None
    t_all = time.perf_counter()
    blocks = []
    try:
        trainer = build_trainer(cfg, run)
        samplers = [m.actor for m in trainer.pool.members.values()]
        s_pids = [m.info.pid for m in trainer.pool.members.values()]
        l_pids = [i.pid for i in trainer.learner.infos()]
        block(trainer, False, 2, s_pids, l_pids)  # warm up: compile, first publish
        for rep in range(args.repeats):
            for mode, place in CONFIGS:
                if place == "pinned":
                    set_masks(samplers, [s_cpu])
                    set_masks(trainer.learner.workers, [l_cpu])
                else:
                    set_masks(samplers + trainer.learner.workers, cpus)
                b = block(trainer, mode == "off", args.steps, s_pids, l_pids)
                blocks.append(dict(b, mode=mode, placement=place, repeat=rep, load_avg=os.getloadavg()[0]))
                print(f"  rep {rep} {mode:4s} {place:6s} step {b['step_s']:.3f}s  CPU/step sampler "
                      f"{b['sampler_cpu_s']:.2f}s learner {b['learner_cpu_s']:.2f}s  load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr, flush=True)
    finally:
        if trainer is not None:
            trainer.shutdown()
        ray.shutdown()

    def pick(mode, place, rep=None):
        return [b for b in blocks if b["mode"] == mode and b["placement"] == place and rep in (None, b["repeat"])]

    print(f"\npreset=toy, samplers on CPU {s_cpu}, learner on CPU {l_cpu} when pinned; {args.repeats} repeats "
          f"of {args.steps}-step blocks; medians over repeats")
    print(f"{'mode':5s} {'cores':7s} {'step s':>7s} {'sample':>7s} {'learn':>7s} {'publish':>7s} "
          f"{'smp CPU/step':>12s} {'lrn CPU/step':>12s}")
    summary = {}
    for mode, place in CONFIGS:
        bs = pick(mode, place)
        m = {"step_s": statistics.median(b["step_s"] for b in bs),
             **{k: statistics.median(b["stages_s"][k] for b in bs) for k in ("sample", "learn", "publish")},
             "sampler_cpu_s": statistics.median(b["sampler_cpu_s"] for b in bs),
             "learner_cpu_s": statistics.median(b["learner_cpu_s"] for b in bs)}
        summary[f"{mode}-{place}"] = m
        print(f"{mode:5s} {place:7s} {m['step_s']:7.3f} {m['sample']:7.3f} {m['learn']:7.3f} {m['publish']:7.3f} "
              f"{m['sampler_cpu_s']:12.3f} {m['learner_cpu_s']:12.3f}")
    ratios = {}
    for num in ("sync-pinned", "sync-free", "off-free"):
        per = [pick(*num.split("-"), r)[0]["step_s"] / pick("off", "pinned", r)[0]["step_s"] for r in range(args.repeats)]
        ratios[f"{num} / off-pinned"] = {"min": min(per), "median": statistics.median(per), "per_repeat": per}
        print(f"{num:11s} / off-pinned: min {min(per):.2f}×  median {statistics.median(per):.2f}×  (> 1: off-policy "
              f"pinned is faster)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/offpolicy_cores.py", *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": cpus, "load_avg_end": os.getloadavg()},
        "sampler_cpus": [s_cpu], "learner_cpus": [l_cpu], "summary": summary, "ratios": ratios, "blocks": blocks,
        "wall_s": time.perf_counter() - t_all}, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
