"""Load on the adversary actor and on the driver from many samplers.

Virtual samplers only sleep and return synthetic rollouts. They are not one process each (an
idle Ray actor costs ~80 MB; 256 of them would not fit this machine): `--hosts` async Ray
actors (`num_cpus=0`) each host `samplers / hosts` virtual samplers as coroutines. A virtual
sampler has its own id, weights version and serial work queue, exactly like a sampler actor,
and each of its calls is a separate Ray call with its own ObjectRef; only the OS process is
shared.

Part A — the adversary actor (`AdversaryService`, one real Ray actor) serving 64+ concurrent
samplers. Protocol per step: every virtual sampler calls `schedule()` on the adversary (it is
idempotent until `observe`, so all get the pending step's schedule), takes its contiguous range
of slots, sleeps `--gen-s` and returns rewards for its slots, each reward a function of (step,
prompt id, slot, rollout). The driver-side aggregator places results by slot, checks that
every slot came back exactly once, for the right step, with its scheduled rollout count and the
expected values, then calls `observe()` and checks the record's step and rollout total. Then a
saturation run: every virtual sampler calls `schedule()` back to back for `--sat-s` seconds.
Reported: adversary calls per second and the latency percentiles seen by the callers.

Part B — one driver step at scale with the real code: `Trainer.run_step()` (schedule → shards →
`SamplerPool.run` → GRPO batch assembly → `observe` → publish to every sampler) on 256 virtual
samplers and B = 4,096 prompts × n̄ = 4 = 16,384 rollouts; only the learner is a stand-in
that returns at once. A virtual shard sleeps `--rollout-ms` per rollout. The driver's
overhead is the step time not covered by generation: step wall − the busiest virtual sampler's
sleep (its critical path), as a share of the step (target ≤ 5 %). The driver thread's CPU time
is reported too.

    python benchmarks/adversary_load.py [--quick]

Prints tables and writes benchmarks/out/adversary_load.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import ray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "adversary_load.json"
TARGET_OVERHEAD = 0.05


def synthetic_reward(step: int, prompt_id: int, slot: int, j: int) -> float:
    """Deterministic 0/1 reward, so the aggregator can check every value it received."""
    return float((step * 7919 + prompt_id * 104729 + slot * 31 + j) % 5 == 0)


@ray.remote(num_cpus=0)
class VirtualSamplerHost:
    """One process hosting many virtual samplers (async: each call is a coroutine)."""

    def __init__(self, adversary=None, rollout_ms: float = 0.0, tokens: int = 16):
        self.adversary, self.rollout_s, self.tokens = adversary, rollout_ms / 1e3, tokens
        self.versions: dict[int, int] = {}
        self.busy_s: dict[int, float] = {}

    # -- the Sampler interface, per virtual sampler id ------------------------------------
    async def ready(self, vid: int, version: int):
        from gdro_ray.protocol import SamplerInfo

        self.versions[vid] = version
        return SamplerInfo(sampler_id=vid, pid=os.getpid(), weights_version=version)

    async def update_weights(self, vid: int, blob: bytes, version: int) -> int:
        self.versions[vid] = version
        return version

    async def generate_shard(self, vid: int, shard):
        from gdro_ray.protocol import ShardResult
        from gdro_ray.transfer.rollout_arrays import prompt_rollouts

        if shard.weights_version not in (None, self.versions[vid]):
            raise RuntimeError(f"virtual sampler {vid} holds v{self.versions[vid]}, shard wants v{shard.weights_version}")
        sleep = self.rollout_s * sum(shard.n)
        await asyncio.sleep(sleep)
        self.busy_s[vid] = self.busy_s.get(vid, 0.0) + sleep
        toks = list(range(3, 3 + self.tokens))
        results = [prompt_rollouts(s, [synthetic_reward(0, 0, s, j) for j in range(n)], toks, [toks] * n,
                                   [[-1.0] * self.tokens] * n) for s, n in zip(shard.slots, shard.n)]
        return ShardResult(shard_id=shard.shard_id, sampler_id=vid, weights_version=self.versions[vid],
                           results=results, generate_s=sleep, tokens=self.tokens * sum(shard.n))

    async def set_rollout_ms(self, rollout_ms: float) -> None:
        self.rollout_s = rollout_ms / 1e3

    async def take_busy(self) -> dict:
        out, self.busy_s = self.busy_s, {}
        return out

    # -- part A: fetch the schedule from the adversary, score a slot range ------------------
    async def fetch_and_score(self, vid: int, lo_frac: float, hi_frac: float, gen_s: float) -> dict:
        t0 = time.time()
        sched = await self.adversary.schedule.remote()
        t1 = time.time()
        B = sched.batch_size
        lo, hi = round(lo_frac * B), round(hi_frac * B)
        await asyncio.sleep(gen_s)
        step = sched.step
        rewards = {s: [synthetic_reward(step, int(sched.prompt_ids[s]), s, j) for j in range(int(sched.rollouts[s]))]
                   for s in range(lo, hi)}
        return {"vid": vid, "step": step, "rewards": rewards, "t_call": t0, "latency_s": t1 - t0}

    async def hammer(self, n_callers: int, seconds: float) -> list[float]:
        """`n_callers` coroutines call schedule() back to back; returns every call's latency."""
        lat: list[float] = []
        stop = time.time() + seconds

        async def caller():
            while time.time() < stop:
                t0 = time.perf_counter()
                await self.adversary.schedule.remote()
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(caller() for _ in range(n_callers)))
        return lat


class _Call:
    """`.remote(*args)` of one method of one virtual sampler: the host's method with the id first."""

    def __init__(self, host, method: str, *bound):
        self.host, self.method, self.bound = host, method, bound

    def remote(self, *args):
        return getattr(self.host, self.method).remote(*self.bound, *args)


class VirtualSampler:
    """A handle with a sampler actor's `.remote()` methods, routed to its host process."""

    def __init__(self, host, vid: int, version: int):
        self.ready = _Call(host, "ready", vid, version)
        self.update_weights = _Call(host, "update_weights", vid)
        self.generate_shard = _Call(host, "generate_shard", vid)


def _pct(xs, qs=(50, 90, 99)) -> dict:
    a = np.asarray(xs) * 1e3
    return {f"p{q}_ms": float(np.percentile(a, q)) for q in qs} | {"max_ms": float(a.max()), "n": int(a.size)}


def _adversary(batch: int, samplers: int, shard_size: int = 16):
    from gdro_ray.config import load_config, to_dict
    from gdro_ray.service.adversary_actor import AdversaryService

    cfg = load_config(overrides=[f"batch_size={batch}", "budget_mean=4", f"sampler.num_samplers={samplers}",
                                 f"sampler.max_samplers={samplers}", f"sampler.shard_size={shard_size}",
                                 "metrics.enabled=false"])
    actor = ray.remote(AdversaryService).options(num_cpus=0).remote(to_dict(cfg), 14_100, enable_metrics=False)
    return cfg, actor


# ------------------------------------------------------------------------------------------ A
def part_a(samplers: int, hosts: int, batch: int, steps: int, gen_s: float, sat_s: float) -> dict:
    cfg, adv = _adversary(batch, samplers)
    hs = [VirtualSamplerHost.options(max_concurrency=samplers + 8).remote(adv) for _ in range(hosts)]
    ray.get([h.take_busy.remote() for h in hs])
    lat, step_s, observe_s, checks = [], [], [], 0
    bad = {"wrong_step": 0, "answered_twice": 0, "slot_twice": 0, "slot_dropped": 0, "wrong_value": 0}
    for step in range(steps):
        t0 = time.perf_counter()
        refs = [hs[v % hosts].fetch_and_score.remote(v, v / samplers, (v + 1) / samplers, gen_s)
                for v in range(samplers)]
        by_slot: dict[int, list[float]] = {}
        pending, seen = list(refs), set()
        while pending:  # take results in arrival order, place them by slot
            done, pending = ray.wait(pending, num_returns=1)
            out = ray.get(done[0])
            bad["wrong_step"] += out["step"] != step
            bad["answered_twice"] += out["vid"] in seen
            seen.add(out["vid"])
            lat.append(out["latency_s"])
            for s, r in out["rewards"].items():
                bad["slot_twice"] += s in by_slot
                by_slot[s] = r
        sched = ray.get(adv.schedule.remote())
        B = sched.batch_size
        bad["slot_dropped"] += len(set(range(B)) - set(by_slot))
        rewards = [by_slot.get(s, []) for s in range(B)]
        for s in range(B):  # every value where it belongs, in slot order
            bad["wrong_value"] += rewards[s] != [synthetic_reward(step, int(sched.prompt_ids[s]), s, j)
                                                 for j in range(int(sched.rollouts[s]))]
            checks += len(rewards[s])
        if any(bad.values()):
            raise AssertionError(f"step {step}: results lost, repeated or misplaced: {bad}")
        t1 = time.perf_counter()
        rec = ray.get(adv.observe.remote(sched.step, rewards, None, step + 1))  # validates counts per slot too
        observe_s.append(time.perf_counter() - t1)
        assert rec["step"] == step and rec["rollouts"] == B * cfg.budget_mean, "the adversary's steps went out of order"
        step_s.append(time.perf_counter() - t0)
    per_host = max(1, samplers // hosts)
    t0 = time.perf_counter()
    sat = ray.get([h.hammer.remote(per_host, sat_s) for h in hs])
    wall = time.perf_counter() - t0
    calls = sum(len(x) for x in sat)
    for h in hs:
        ray.kill(h)
    ray.kill(adv)
    return {
        "samplers": samplers, "hosts": hosts, "batch": batch, "rollouts": batch * 4, "steps": steps,
        "gen_s": gen_s, "rewards_checked": checks, "problems": bad,
        "step_s_median": float(np.median(step_s)), "step_overhead_s_median": float(np.median(step_s)) - gen_s,
        "schedule_latency_protocol": _pct(lat), "observe_ms_median": float(np.median(observe_s)) * 1e3,
        "saturation": {"callers": per_host * hosts, "seconds": wall, "calls": calls, "calls_per_s": calls / wall,
                       "latency": _pct([x for xs in sat for x in xs])},
    }


# ------------------------------------------------------------------------------------------ B
class _InstantLearner:
    def train_step(self, batch):
        from gdro_ray.protocol import LearnStats

        return LearnStats(loss=0.0)

    def state_dict_bytes(self) -> bytes:
        return b"\0" * 4096


def part_b(samplers: int, hosts: int, batch: int, shard_size: int, rollout_ms: list[float], steps: int,
           warmup: int) -> list[dict]:
    """One pool of virtual samplers, a real Trainer step loop; one row per virtual rollout time."""
    from gdro_ray.service.driver import Trainer
    from gdro_ray.service.run_parts import RunParts
    from gdro_ray.service.sampler_pool import SamplerPool
    from gdro_ray.service.weight_transport import ObjectStoreTransport

    cfg, adv = _adversary(batch, samplers, shard_size)
    hs = [VirtualSamplerHost.options(max_concurrency=samplers + 8).remote(None) for _ in range(hosts)]
    pool = SamplerPool("virtual", "virtual", "float32", 0, "01", 1.0, max_samplers=samplers,
                       actor_factory=lambda sid, blob, version: VirtualSampler(hs[sid % hosts], sid, version))
    pool.resize(samplers)
    assert pool.wait_ready(samplers, timeout_s=120) == samplers
    learner = _InstantLearner()
    trainer = Trainer(cfg, ROOT / ".tmp" / "adversary_load_run", RunParts(
        adversary=adv, pool=pool, learner=learner, weights=ObjectStoreTransport(learner, pool),
        train=[{"id": i, "prompt": f"virtual prompt {i}", "answer": "1"} for i in range(14_100)]))
    out = []
    for ms in rollout_ms:
        ray.get([h.set_rollout_ms.remote(ms) for h in hs])
        rows = []
        for i in range(warmup + steps):
            ray.get([h.take_busy.remote() for h in hs])
            c0, t0 = time.thread_time(), time.perf_counter()
            step = trainer.run_step()
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            record, t = step.to_json(), step.stage_time_s
            busy = {k: v for h in ray.get([h.take_busy.remote() for h in hs]) for k, v in h.items()}
            assert record["rollouts"] == batch * cfg.budget_mean and record["prompts"] == batch
            assert record["staleness"] == 0
            crit = max(busy.values())
            if i >= warmup:
                rows.append({"step_s": wall, "critical_path_s": crit, "balanced_s": sum(busy.values()) / samplers,
                             "overhead_s": wall - crit, "overhead_frac": (wall - crit) / wall,
                             "driver_cpu_s": cpu, "driver_cpu_frac": cpu / wall,
                             "stages_s": {k: round(v, 4) for k, v in t.items()}, "samplers_used": len(busy)})
        med = {k: float(np.median([r[k] for r in rows])) for k in
               ("step_s", "critical_path_s", "balanced_s", "overhead_s", "overhead_frac", "driver_cpu_s",
                "driver_cpu_frac")}
        stages = {k: float(np.median([r["stages_s"][k] for r in rows])) for k in rows[0]["stages_s"]}
        out.append({"samplers": samplers, "hosts": hosts, "batch": batch, "rollouts": batch * cfg.budget_mean,
                    "shards": -(-batch // shard_size), "shard_size": shard_size, "rollout_ms": ms, "steps": steps,
                    "median": med, "stages_median_s": stages, "rows": rows, "target_overhead_frac": TARGET_OVERHEAD,
                    "meets_target": med["overhead_frac"] <= TARGET_OVERHEAD})
        warmup = 0  # the pool, hosts and code paths are warm now
    pool.shutdown()
    for h in hs:
        ray.kill(h)
    ray.kill(adv)
    return out


# ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=4, help="processes hosting the virtual samplers")
    ap.add_argument("--a-samplers", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--a-batch", type=int, default=1024)
    ap.add_argument("--a-steps", type=int, default=8)
    ap.add_argument("--gen-s", type=float, default=0.2, help="part A: virtual generation time per shard")
    ap.add_argument("--sat-s", type=float, default=3.0)
    ap.add_argument("--b-samplers", type=int, default=256)
    ap.add_argument("--b-batch", type=int, default=4096)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--rollout-ms", type=float, nargs="+", default=[40.0, 250.0],
                    help="part B: virtual generation time per rollout (one row each)")
    ap.add_argument("--b-steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.a_steps, args.b_steps, args.sat_s, args.a_samplers, args.rollout_ms = 3, 2, 1.5, [64], [40.0]

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="gdro_ray_bench")
    t_all = time.perf_counter()
    a = [part_a(v, args.hosts, args.a_batch, args.a_steps, args.gen_s, args.sat_s) for v in args.a_samplers]
    b = part_b(args.b_samplers, args.hosts, args.b_batch, args.shard_size, args.rollout_ms, args.b_steps, args.warmup)
    ray.shutdown()

    print("\nPart A: adversary actor under concurrent virtual samplers "
          f"(B={args.a_batch}, n̄=4, {args.hosts} host processes)")
    print(f"{'samplers':>8} {'step s':>7} {'sched p50/p99 ms':>17} {'observe ms':>10} {'checked':>8} "
          f"{'sat calls/s':>11} {'sat p50/p99/max ms':>19}")
    for r in a:
        s, sat = r["schedule_latency_protocol"], r["saturation"]
        print(f"{r['samplers']:>8} {r['step_s_median']:>7.3f} {s['p50_ms']:>8.1f}/{s['p99_ms']:<8.1f} "
              f"{r['observe_ms_median']:>10.1f} {r['rewards_checked']:>8} {sat['calls_per_s']:>11.0f} "
              f"{sat['latency']['p50_ms']:>6.1f}/{sat['latency']['p99_ms']:.1f}/{sat['latency']['max_ms']:.1f}")
    print(f"\nPart B: Trainer.run_step on {b[0]['samplers']} virtual samplers ({args.hosts} host processes), "
          f"{b[0]['rollouts']} rollouts/step in {b[0]['shards']} shards of {b[0]['shard_size']} prompts; "
          f"median of {b[0]['steps']} steps; the learner is instant")
    print(f"{'ms/rollout':>10} {'step s':>7} {'crit. path s':>12} {'overhead s':>10} {'overhead':>9} {'driver CPU':>10}"
          "  stages (s)")
    for r in b:
        m = r["median"]
        print(f"{r['rollout_ms']:>10.0f} {m['step_s']:>7.3f} {m['critical_path_s']:>12.3f} {m['overhead_s']:>10.3f} "
              f"{m['overhead_frac']:>8.1%} {m['driver_cpu_frac']:>9.1%}   "
              + " ".join(f"{k}={v:.3f}" for k, v in r["stages_median_s"].items()))
        print(f"{'':>10} target: overhead ≤ {TARGET_OVERHEAD:.0%} of the step → {'MET' if r['meets_target'] else 'NOT MET'}")
    out = {"part_a": a, "part_b": b, "wall_s": time.perf_counter() - t_all,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                       "load_avg": os.getloadavg()}, "args": vars(args)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
