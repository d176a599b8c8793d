"""Where one-step off-policy beats synchronous training: the crossover.

The real driver schedules every step: `Trainer.run_step` (sync) and `Trainer.run_step_off_policy`
(the next step's sampling launched on the driver's thread pool while the learner trains), with
the real adversary actor, the real `SamplerPool` and the real object-store weight publication.
Only the work is virtual, with set durations: a virtual sampler (a Ray actor behind the pool)
spends S seconds per step in shards, a virtual learner spends L seconds in `train_step` and P
seconds gathering the weights for publication. The work runs on virtual *devices*:

- `disjoint`  sampler and learner each have their own device (GPU-like: two cards, or a sampler
              node and a learner node); work is a sleep, so overlapping work does not stretch.
- `shared`    one device time-sliced between them (processor sharing: k jobs at once each run at
              1/k speed), as sampler and learner colocated on one card or the same cores.
- `cpu-disjoint` / `cpu-shared`  real CPU work (a busy loop until the thread has received the
              CPU seconds), each device a process pinned with `pin_process` to its own core or to
              the same core. Real contention, so on a loaded machine the wall clock stretches.

The driver's step structure predicts (o = driver overhead per step):
    sync        = S + L + P + o_sync
    off-policy  = P + max(S, L) + o_off     (publication stays serial: the next step's sampling
                                              must start with the new weights)
so on disjoint devices off-policy wins when min(S, L) > o_off − o_sync, by up to 2× at S = L.
On one shared device the overlapped work stretches to its sum, off-policy = P + S + L + o_off,
and the most it can gain is the driver time it hides (the adversary's observe and the next
schedule run while the samplers work).

Each point alternates sync and off-policy blocks `--repeats` times (the first and last step of
every block dropped: not steady state) and reports the steady-state step (mean interval between
completions), the overhead against the model, the driver's CPU time per step, and min / median
of the per-repeat ratio sync/off.

    python benchmarks/offpolicy_crossover.py [--learn-s 0.4] [--publish-s 0.04] [--ratios ...]

Prints a table and writes benchmarks/out/offpolicy_crossover.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "offpolicy_crossover.json"


# ---- devices ---------------------------------------------------------------------------------
@ray.remote(num_cpus=0)
class SleepDevice:
    """A device whose work is waiting: alone (`shared=False`) or processor-shared between its
    concurrent jobs (`shared=True`: with k jobs running each advances at 1/k of real time)."""

    def __init__(self, shared: bool):
        self.shared = shared
        self.jobs: dict[int, list] = {}  # id -> [remaining work s, future]
        self.next_id = 0
        self.last = time.perf_counter()  # when the remaining work was last brought up to date
        self.timer = None  # fires when the job with the least work left ends (as many hops as a sleep)

    def _advance(self) -> None:
        """Charge the real time since the last update to the running jobs, 1/k each; finish the
        done ones (1 ms tolerance: a timer may fire a little early)."""
        now = time.perf_counter()
        if self.jobs:
            share = (now - self.last) / len(self.jobs)
            for jid in list(self.jobs):
                self.jobs[jid][0] -= share
                if self.jobs[jid][0] <= 1e-3:
                    self.jobs.pop(jid)[1].set_result(None)
        self.last = now

    def _reschedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.jobs:
            horizon = min(r for r, _ in self.jobs.values()) * len(self.jobs)
            self.timer = asyncio.get_running_loop().call_later(horizon, self._tick)

    def _tick(self) -> None:
        self.timer = None
        self._advance()
        self._reschedule()

    async def take_stretch(self) -> None:
        return None

    async def run(self, seconds: float) -> float:
        if not self.shared:
            await asyncio.sleep(seconds)
            return seconds
        self._advance()  # before the newcomer joins: the time so far was shared by the others only
        fut = asyncio.get_running_loop().create_future()
        self.jobs[self.next_id] = [seconds, fut]
        self.next_id += 1
        self._reschedule()
        await fut
        return seconds


@ray.remote(num_cpus=0)
class BurnDevice:
    """A device whose work is CPU time on pinned cores: `run(s)` spins until this thread has
    received s CPU seconds; returns the wall seconds it took (stretched by whoever shares the core)."""

    def __init__(self, cpus: list[int]):
        from gdro_ray.utils.affinity import pin_process

        self.cpus = pin_process(cpus, "benchmark device")
        self.wall = self.cpu = 0.0

    def run(self, seconds: float) -> float:
        t0, c0 = time.perf_counter(), time.thread_time()
        x = 0
        while time.thread_time() - c0 < seconds:
            for _ in range(2000):
                x += 1
        self.wall += time.perf_counter() - t0
        self.cpu += time.thread_time() - c0
        return time.perf_counter() - t0

    def take_stretch(self) -> float | None:
        """Wall seconds per CPU second received since the last call (1 = the core was ours alone)."""
        out = self.wall / self.cpu if self.cpu else None
        self.wall = self.cpu = 0.0
        return out


# ---- the virtual sampler and learner -----------------------------------------------------------
@ray.remote(num_cpus=0)
class VirtualSampler:
    """The sampler actor's interface; a shard costs its share of S on the sampler device."""

    def __init__(self, device, sample_s: float, shards: int, version: int):
        self.device, self.per_shard, self.version = device, sample_s / shards, version

    async def ready(self):
        from gdro_ray.protocol import SamplerInfo

        return SamplerInfo(sampler_id=0, pid=os.getpid(), weights_version=self.version)

    async def update_weights(self, blob, version: int) -> int:
        self.version = version
        return version

    async def set_sample_s(self, sample_s: float, shards: int) -> None:
        self.per_shard = sample_s / shards

    async def generate_shard(self, shard):
        from gdro_ray.protocol import ShardResult
        from gdro_ray.transfer.rollout_arrays import prompt_rollouts

        if shard.weights_version not in (None, self.version):
            raise RuntimeError(f"virtual sampler holds v{self.version}, shard wants v{shard.weights_version}")
        await self.device.run.remote(self.per_shard)
        toks = [3, 4, 5, 6]
        results = [prompt_rollouts(s, [float((s + j) % 3 == 0) for j in range(n)], toks, [toks] * n,
                                   [[-1.0] * len(toks)] * n) for s, n in zip(shard.slots, shard.n)]
        return ShardResult(shard_id=shard.shard_id, sampler_id=0, weights_version=self.version, results=results,
                           generate_s=self.per_shard, tokens=len(toks) * sum(shard.n))


class VirtualLearner:
    """The driver's LearnerGroup interface: train_step costs L, the publication gather P, on the learner device."""

    def __init__(self, device, learn_s: float, publish_s: float):
        self.device, self.learn_s, self.publish_s = device, learn_s, publish_s

    def train_step(self, batch):
        from gdro_ray.protocol import LearnStats

        ray.get(self.device.run.remote(self.learn_s))
        return LearnStats(loss=0.0)

    def state_dict_bytes(self) -> bytes:
        ray.get(self.device.run.remote(self.publish_s))
        return b"\0" * 4096


# ---- one point -----------------------------------------------------------------------------------
def build(kind: str, batch: int, shard_size: int, tmp: Path):
    from gdro_ray.config import load_config, to_dict
    from gdro_ray.service.adversary_actor import AdversaryService
    from gdro_ray.service.driver import Trainer
    from gdro_ray.service.run_parts import RunParts
    from gdro_ray.service.sampler_pool import SamplerPool
    from gdro_ray.service.weight_transport import ObjectStoreTransport

    cfg = load_config(overrides=[f"batch_size={batch}", "budget_mean=4", "sampler.num_samplers=1",
                                 f"sampler.shard_size={shard_size}", "metrics.enabled=false", "steps=1000000"])
    adv = ray.remote(AdversaryService).options(num_cpus=0).remote(to_dict(cfg), 14_100, enable_metrics=False)
    cpus = sorted(os.sched_getaffinity(0))
    if kind == "disjoint":
        s_dev = SleepDevice.remote(False)
        l_dev = SleepDevice.remote(False)
    elif kind == "shared":
        s_dev = l_dev = SleepDevice.remote(True)
    else:  # cpu-disjoint: sampler on the first CPU, learner on the last; cpu-shared: both on the first
        s_dev = BurnDevice.remote([cpus[0]])
        l_dev = BurnDevice.remote([cpus[-1]] if kind == "cpu-disjoint" else [cpus[0]])
    shards = -(-batch // shard_size)
    sampler = VirtualSampler.remote(s_dev, 0.0, shards, 0)
    pool = SamplerPool("virtual", "virtual", "float32", 0, "01", 1.0, max_samplers=1,
                       actor_factory=lambda sid, blob, version: sampler)
    pool.resize(1)
    assert pool.wait_ready(1, timeout_s=120) == 1
    learner = VirtualLearner(l_dev, 0.0, 0.0)
    trainer = Trainer(cfg, tmp, RunParts(
        adversary=adv, pool=pool, learner=learner, weights=ObjectStoreTransport(learner, pool),
        train=[{"id": i, "prompt": f"virtual prompt {i}", "answer": "1"} for i in range(14_100)]))
    return trainer, sampler, learner, shards, [adv, sampler, s_dev, l_dev], (s_dev, l_dev)


def block(trainer, off_policy: bool, steps: int) -> tuple[float, float]:
    """`steps` steps in one mode; the steady-state step time: the mean interval between
    completions (one interval alone can undercut the floor when the driver was descheduled at
    its start), leaving out the first step (nothing to overlap with) and the last (off-policy
    launches no next sampling there, so on a shared device its learning runs alone)."""
    trainer.cfg.cluster.off_policy = off_policy
    trainer.cfg.steps = trainer.step + steps  # off-policy launches no sampling past the block's end
    ends, cpu = [time.perf_counter()], [time.process_time()]
    for _ in range(steps):
        trainer.run_step()
        ends.append(time.perf_counter())
        cpu.append(time.process_time())
    assert trainer.inflight is None
    # driver CPU s per step: what its overhead would be on an idle machine
    return (ends[-2] - ends[1]) / (steps - 2), (cpu[-2] - cpu[1]) / (steps - 2)


def point(trainer, sampler, learner, shards, devices, S, L, P, steps, repeats, shared: bool) -> dict:
    ray.get(sampler.set_sample_s.remote(S, shards))
    learner.learn_s, learner.publish_s = L, P
    sync, off, ratios, stretch, dcpu = [], [], [], {"sync": [], "off": []}, {"sync": [], "off": []}
    for _ in range(repeats):
        for mode, off_policy, times in (("sync", False, sync), ("off", True, off)):
            ray.get([d.take_stretch.remote() for d in devices])
            wall, cpu = block(trainer, off_policy, steps)
            times.append(wall)
            dcpu[mode].append(cpu)
            stretch[mode].append(ray.get([d.take_stretch.remote() for d in devices]))
        ratios.append(sync[-1] / off[-1])
    s_med, o_med = statistics.median(sync), statistics.median(off)
    off_model = P + (S + L if shared else max(S, L))  # one device: the overlapped work takes its sum
    return {"S": S, "L": L, "P": P, "S_over_L": S / L, "sync_step_s": s_med, "off_step_s": o_med,
            "sync_model_s": S + L + P, "off_model_s": off_model,
            "sync_overhead_s": s_med - (S + L + P), "off_overhead_s": o_med - off_model,
            "ratio_min": min(ratios), "ratio_median": statistics.median(ratios), "ratios": ratios,
            "sync_steps_s": sync, "off_steps_s": off,
            "driver_cpu_s": {m: statistics.median(v) for m, v in dcpu.items()},
            # cpu-* kinds: wall s per CPU s received, [sampler device, learner device] per block
            "stretch": stretch if stretch["sync"][0][0] is not None else None}


def _stretch(row: dict) -> str:
    """Median wall/CPU of the busiest device in sync and off-policy blocks (cpu-* kinds)."""
    if not row["stretch"]:
        return ""
    med = {m: statistics.median(max(x for x in v if x is not None) for v in row["stretch"][m]) for m in ("sync", "off")}
    return f"{med['sync']:.2f}/{med['off']:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=["disjoint", "shared", "cpu-disjoint", "cpu-shared"],
                    choices=["disjoint", "shared", "cpu-disjoint", "cpu-shared"])
    ap.add_argument("--learn-s", type=float, default=0.4, help="L: learner seconds per step")
    ap.add_argument("--publish-s", type=float, default=0.04, help="P: weight gather seconds per publish")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.05, 0.25, 0.5, 1.0, 2.0, 4.0], help="S/L values")
    ap.add_argument("--cpu-ratios", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="S/L for the cpu-* kinds")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6, help="steps per block (≥ 3: the first and last are dropped)")
    ap.add_argument("--repeats", type=int, default=3, help="sync/off-policy block pairs per point")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.steps < 3:
        ap.error("--steps: at least 3 (the first and last step of a block are not steady state)")

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="gdro_ray_bench")
    t_all, rows = time.perf_counter(), []
    for kind in args.kinds:
        trainer, sampler, learner, shards, actors, devices = build(kind, args.batch, args.shard_size,
                                                           ROOT / ".tmp" / "offpolicy_crossover_run")
        block(trainer, False, 3)  # warm the code paths and actors
        for r in (args.cpu_ratios if kind.startswith("cpu") else args.ratios):
            row = point(trainer, sampler, learner, shards, devices, r * args.learn_s, args.learn_s,
                        args.publish_s, args.steps, args.repeats, shared=kind.endswith("shared"))
            rows.append(dict(row, kind=kind))
            print(f"  {kind:12s} S/L={r:<5g} sync {row['sync_step_s']:.3f}s off {row['off_step_s']:.3f}s "
                  f"ratio min/med {row['ratio_min']:.2f}/{row['ratio_median']:.2f}", file=sys.stderr, flush=True)
        trainer.log.close()
        trainer.pool.shutdown()
        for a in actors:
            ray.kill(a)
    if own_ray:
        ray.shutdown()

    print(f"\nL = {args.learn_s}s, P = {args.publish_s}s, B = {args.batch} in {-(-args.batch // args.shard_size)} shards; "
          f"{args.repeats} alternating sync/off-policy block pairs of {args.steps} steps per row")
    print(f"{'devices':12s} {'S/L':>5s} {'sync s':>7s} {'model':>6s} {'off s':>7s} {'model':>6s} "
          f"{'o_sync':>7s} {'o_off':>7s} {'sync/off min':>12s} {'median':>7s} {'drv CPU ms s/o':>14s}  stretch s/o")
    for r in rows:
        print(f"{r['kind']:12s} {r['S_over_L']:5.2f} {r['sync_step_s']:7.3f} {r['sync_model_s']:6.3f} "
              f"{r['off_step_s']:7.3f} {r['off_model_s']:6.3f} {r['sync_overhead_s']:7.3f} {r['off_overhead_s']:7.3f} "
              f"{r['ratio_min']:12.2f} {r['ratio_median']:7.2f} "
              f"{r['driver_cpu_s']['sync'] * 1e3:6.0f}/{r['driver_cpu_s']['off'] * 1e3:<7.0f}  {_stretch(r)}")
    disjoint = [r for r in rows if r["kind"] == "disjoint"]
    if disjoint:  # the overhead off-policy adds over sync: the smaller of S and L must exceed it
        extra = statistics.median(r["off_overhead_s"] - r["sync_overhead_s"] for r in disjoint)
        print(f"\ndisjoint devices: off-policy adds {extra * 1e3:.0f} ms per step over sync's overhead, so it wins "
              f"when min(S, L) > {max(extra, 0) * 1e3:.0f} ms (gain = min(S, L) − that, up to 2× at S = L)")
        cpu = {m: statistics.median(r["driver_cpu_s"][m] for r in disjoint) for m in ("sync", "off")}
        print(f"driver CPU per step: sync {cpu['sync'] * 1e3:.0f} ms, off-policy {cpu['off'] * 1e3:.0f} ms "
              "(the overhead's floor; the rest of o is waiting for the CPU on a loaded machine)")
    out = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
           "command": " ".join(["python", "benchmarks/offpolicy_crossover.py", *(argv or sys.argv[1:])]),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                       "ray": ray.__version__},
           "args": vars(args), "rows": rows, "wall_s": time.perf_counter() - t_all}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(out, args=dict(vars(args), out=str(args.out))), indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
