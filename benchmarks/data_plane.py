"""The driver's data plane at the paper's scale: what one step costs the driver and moves to each rank.

One real driver step (`Trainer.run_step`: the adversary actor schedules, `SamplerPool.run`
hands shards to sampler actors, the driver assembles the GRPO batch, `LearnerGroup.train_step`
hands it to the ranks, the adversary observes, the weights are published) at B = 256 prompts
× 8 rollouts × 4,096 response tokens. Only the model work is synthetic:
- sampler actors are the real `Sampler` with a synthetic engine (random token ids and
  log-probs, 4,096 tokens per rollout, ~128-token prompts; the verifier scores a short text);
- learner ranks are virtual: each takes its batch exactly as a real rank would (the per-row
  scalars plus the references of its own groups, materialised with the worker's own
  `rollout_arrays.materialise`), then returns.
The measurement runs in its own driver process (so peak memory is its own). The list path this
benchmark once compared against (every rank deserialising the whole batch) is gone from the
code; its numbers stay in benchmarks/RESULTS.md.

Per step, for the driver process: CPU seconds (all its threads, Ray's included) and the peak
resident memory above the resident memory before the step (`VmHWM`, reset per step through
`/proc/self/clear_refs`). Per rank: bytes moved to it (the serialised scalars plus the arrays of
the groups it fetched) against its slice (the arrays of its own rows). Targets: driver ≤ 0.5 s
and ≤ 256 MiB extra per step; bytes per rank ≈ its slice.

    python benchmarks/data_plane.py [--ranks 4 8] [--steps 2] [--prompts 256] [--tokens 4096]

Prints a table and writes benchmarks/out/data_plane.json.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET_CPU_S, TARGET_EXTRA_MIB = 0.5, 256.0


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


# ------------------------------------------------------------------------- synthetic actors
class SyntheticEngine:
    """`generate` like an engine: fixed-length random rollouts, every other one `\\boxed{1}`."""

    def __init__(self, seed: int, tokens: int, prompt_tokens: int, vocab: int = 49_152):
        import numpy as np

        self.rng = np.random.default_rng(seed)
        self.tokens, self.prompt_tokens = tokens, prompt_tokens
        self.pool = self.rng.integers(3, vocab, size=4 * tokens, dtype=np.int64)  # sliced per rollout
        self.logp = -self.rng.exponential(1.0, size=4 * tokens)

    def generate(self, prompts, n, max_new_tokens, temperature, top_p, seed=None):
        from gdro_ray.engines.base import Rollout

        out = []
        for i, k in enumerate(n):
            rolls = []
            for j in range(k):
                a = int(self.rng.integers(0, 3 * self.tokens))
                # lists, as an engine hands them over (vLLM's token_ids and log-probs are Python lists)
                rolls.append(Rollout(i, self.pool[a:a + self.tokens].tolist(), "\\boxed{1}" if j % 2 else "no",
                                     self.logp[a:a + self.tokens].tolist(), "length"))
            out.append(rolls)
        return out

    def prompt_token_ids(self, prompts):
        return [self.pool[:self.prompt_tokens].tolist() for _ in prompts]

    def update_weights(self, blob, version):
        pass


def _sampler_class():
    from gdro_ray.service.sampler_actor import Sampler

    class SyntheticSampler(Sampler):
        def __init__(self, sampler_id, tokens=4096, prompt_tokens=128, weights_version=0, **_):
            self.sampler_id, self.reward_scale, self.reward_timeout_s = sampler_id, "01", 2.0
            self.custom_reward, self.version, self.pid = None, weights_version, os.getpid()
            self.engine = SyntheticEngine(sampler_id, tokens, prompt_tokens)

    return SyntheticSampler


class VirtualRank:
    """Takes a rank's batch as `LearnerWorker.train_step` does (`materialise` fetches its own
    groups), then answers."""

    def __init__(self, rank: int, world: int, mini_batches: int):
        self.rank, self.world, self.mini_batches = rank, world, mini_batches

    def train_step(self, batch: dict, groups: dict):
        from gdro_ray.protocol import RankStats
        from gdro_ray.transfer.rollout_arrays import materialise, rank_rows

        own = rank_rows(batch["prompt_index"], self.mini_batches, self.rank, self.world)
        batch, fetched = materialise(batch, groups, own)
        return RankStats(fetched_bytes=fetched)

    def state_dict_bytes(self):
        return b"\0" * 4096 if self.rank == 0 else None

    def shutdown(self):
        pass


def _bytes_per_rank(batch, stats, world: int, mini_batches: int) -> tuple[list[int], list[int]]:
    """(bytes moved to each rank, bytes of each rank's own rows as int32 ids, plus float32
    log-probs when it trains against them)."""
    from gdro_ray.transfer.rollout_arrays import rank_rows

    plens, rlens = batch.prompt_lengths, batch.response_lengths
    per_token = 8 if batch.sampler_logprobs else 4  # + float32 log-probs
    slices = [sum(4 * plens[i] + per_token * rlens[i]
                  for i in rank_rows(batch.prompt_index, mini_batches, r, world)) for r in range(world)]
    scalars = len(pickle.dumps(batch.rows(), protocol=5))
    return [scalars + b for b in stats.fetched_bytes_per_rank], slices


# ------------------------------------------------------------------------- one path, one process
def run_path(ranks: list[int], steps: int, prompts: int, tokens: int) -> dict:
    import ray

    from gdro_ray.config import load_config, to_dict
    from gdro_ray.service.adversary_actor import AdversaryService
    from gdro_ray.service.driver import Trainer
    from gdro_ray.service.learner_group import LearnerGroup
    from gdro_ray.service.run_parts import RunParts
    from gdro_ray.service.sampler_pool import SamplerPool
    from gdro_ray.service.weight_transport import ObjectStoreTransport

    ray.init(address="local", num_cpus=16, include_dashboard=False, object_store_memory=3 * 2**30,
             log_to_driver=False, runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})
    cfg = load_config(overrides=[f"batch_size={prompts}", "budget_mean=8", "algorithm=grpo", "metrics.enabled=false",
                                 f"sampler.max_new_tokens={tokens}", "sampler.num_samplers=2", "steps=100"])
    adv = ray.remote(AdversaryService).options(num_cpus=0).remote(to_dict(cfg), 10 * prompts, enable_metrics=False)
    sampler_cls = _sampler_class()
    kw = dict(sampler_cls=sampler_cls, sampler_kwargs={"tokens": tokens}, num_cpus=0.5)
    pool = SamplerPool("synthetic", "synthetic", "float32", 0, "01", 2.0, max_samplers=2, **kw)
    pool.resize(2)
    assert pool.wait_ready(2, timeout_s=300) == 2

    class RecordingGroup(LearnerGroup):  # the real train_step; keeps the batch to size it afterwards
        def train_step(self, batch):
            self.last_batch = batch
            self.last_stats = super().train_step(batch)
            return self.last_stats

    rows = []
    for world in ranks:
        group = RecordingGroup.__new__(RecordingGroup)
        group._calls, group.mini_batches = 0, cfg.grpo.mini_batches
        group.workers = [ray.remote(VirtualRank).options(num_cpus=0).remote(r, world, cfg.grpo.mini_batches)
                         for r in range(world)]
        trainer = Trainer(cfg, ROOT / ".tmp" / "data_plane_run", RunParts(
            adversary=adv, pool=pool, learner=group, weights=ObjectStoreTransport(group, pool),
            train=[{"id": i, "prompt": f"synthetic prompt {i}", "answer": "1"} for i in range(10 * prompts)]))
        for s in range(steps):
            base = _status_kib("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
            c0, t0 = time.process_time(), time.perf_counter()
            step = trainer.run_step()
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            record, t = step.to_json(), step.stage_time_s
            peak = _status_kib("VmHWM")
            # sampling and the stages around it are waits here; what the driver itself spends:
            busy = {k: round(v, 3) for k, v in t.items()}
            batch, stats = group.last_batch, group.last_stats
            per_rank, slices = _bytes_per_rank(batch, stats, world, cfg.grpo.mini_batches)
            rows.append({"ranks": world, "step": s, "driver_cpu_s": cpu, "step_wall_s": wall,
                         "driver_extra_mib": (peak - base) / 1024, "stages_s": busy,
                         "bytes_per_rank_mib": [b / 2**20 for b in per_rank],
                         "slice_per_rank_mib": [b / 2**20 for b in slices],
                         "moved_over_slice_max": max(b / max(s_, 1) for b, s_ in zip(per_rank, slices)),
                         "tokens": record["tokens"], "rollouts": record["rollouts"]})
            del batch, group.last_batch
        for w in group.workers:
            ray.kill(w)
    pool.shutdown()
    ray.shutdown()
    return {"rows": rows}


# ------------------------------------------------------------------------- the two paths
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--steps", type=int, default=2, help="steps per (path, ranks); the table shows the last")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=4096, help="response tokens per rollout")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the measuring process
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "data_plane.json"))
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(run_path(a.ranks, a.steps, a.prompts, a.tokens)))
        return 0
    cmd = [sys.executable, __file__, "--child", "--steps", str(a.steps), "--prompts", str(a.prompts),
           "--tokens", str(a.tokens), "--ranks", *map(str, a.ranks)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    results = json.loads(out.stdout.strip().splitlines()[-1])["rows"]
    last = {r["ranks"]: r for r in results}
    print(f"B={a.prompts} prompts × 8 rollouts × {a.tokens} tokens; last of {a.steps} steps per row")
    print(f"{'ranks':>5} {'driver CPU s':>12} {'extra MiB':>10} {'MiB/rank':>9} {'slice MiB':>9} "
          f"{'moved/slice':>11} {'step s':>7}")
    for world, r in sorted(last.items()):
        print(f"{world:5d} {r['driver_cpu_s']:12.2f} {r['driver_extra_mib']:10.0f} "
              f"{max(r['bytes_per_rank_mib']):9.1f} {max(r['slice_per_rank_mib']):9.1f} "
              f"{r['moved_over_slice_max']:11.2f} {r['step_wall_s']:7.1f}")
    meets = all(r["driver_cpu_s"] <= TARGET_CPU_S and r["driver_extra_mib"] <= TARGET_EXTRA_MIB for r in last.values())
    print(f"targets (driver ≤ {TARGET_CPU_S} s CPU, ≤ {TARGET_EXTRA_MIB:.0f} MiB extra per step): "
          f"{'met' if meets else 'NOT met'}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"args": vars(a), "rows": results, "meets_targets": meets}, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
