"""Elastic samplers and fault tolerance on one local Ray instance.

- the pool: a faster sampler takes more shards; a sampler added after a weight update (or
  built while one was published) holds the current weights before it takes work; killed
  samplers' in-flight shards are re-queued, replacements stop at `max_restarts`, and a pool
  with nobody left fails with a clear error;
- scaling a live run up (CLI) and down (Python API): `samplers` in metrics.jsonl follows, no
  prompt is lost, verifier timeouts are counted, /metrics agrees with the records at every
  step, and a learner that dies ends the job with a one-line `--resume` message;
- chaos on the default vLLM engine: a sampler process killed with a shard in flight every few
  steps (seeded); every step still has all B prompts and B·n̄ rollouts, and the re-queued
  shards and restarts equal the kills (records and /metrics);
- the driver process SIGKILLed after a checkpoint: `--resume` restores the adversary state of
  the checkpoint and the data order continues (same schedules as before the kill, metrics.jsonl
  steps without gaps or repeats).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _service import read_records, start_in_thread, wait_for

from gdro_ray.protocol import Shard
from gdro_ray.service.sampler_actor import Sampler
from gdro_ray.transfer.rollout_arrays import responses_of


def _tokens(result) -> list[list[int]]:
    """The response token ids of a shard result's first prompt."""
    return [r.tolist() for r in responses_of(result.results[0])]

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ADVERSARIAL = r"\boxed{9^{9^{9^{9}}}}"  # sympy never finishes it: the verifier's time limit fires


class ProbeSampler(Sampler):
    """The real sampler plus two test knobs: a per-sampler delay per shard, and a response
    that makes the verifier time out (first rollout of each shard's first prompt)."""

    def __init__(self, sampler_id, *args, delays=None, inject_timeouts=False, **kw):
        super().__init__(sampler_id, *args, **kw)
        self.delay_s = float((delays or {}).get(sampler_id, 0.0))
        if inject_timeouts:
            generate = self.engine.generate

            def poisoned(*a, **k):
                outs = generate(*a, **k)
                outs[0][0].text = ADVERSARIAL
                return outs

            self.engine.generate = poisoned

    def generate_shard(self, shard, separate_arrays=False):
        time.sleep(self.delay_s)
        return super().generate_shard(shard, separate_arrays)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=6, include_dashboard=False, namespace="gdro_ray", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from _tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("elastic") / "model", seed=0)


def _scrape(address: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(address, timeout=5) as r:
        text = r.read().decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels}


def _cfg(tiny, run_dir, *extra):
    from gdro_ray.config import load_config

    return load_config(overrides=[f"model.path={tiny}", "algorithm=both", "batch_size=8", "budget_mean=4",
                                  "learner.world_size=1", "data.eval=dapo-fixture", "sampler.eval_k=1",
                                  "sampler.max_new_tokens=8", "sampler.shard_size=2", f"out={run_dir}", *extra])


def _scrape_every_step(trainer, scrapes: list) -> None:
    """After each step's report_driver, scrape /metrics (an actor answers one caller in order)."""
    import ray

    step = trainer.run_step

    def scraped_step():
        record = step()
        addr = ray.get(trainer.adversary.metrics_address.remote())
        scrapes.append((record.step, _scrape(addr)))
        return record

    trainer.run_step = scraped_step


# ---------------------------------------------------------------------------------------------
def test_pool_shards_weights_and_restart_limit(ray_session, tiny):
    ray = ray_session
    from collections import Counter

    from _tiny import state_dict_bytes, tiny_model

    from gdro_ray.service.sampler_pool import SamplerPool, SamplerPoolError

    pool = SamplerPool(str(tiny), "hf", "float32", 0, "01", 2.0, num_cpus=1, max_samplers=4, max_restarts=1,
                       sampler_cls=ProbeSampler, sampler_kwargs={"delays": {1: 1.0}})
    try:
        pool.resize(2)
        assert pool.wait_ready(2) == 2

        def shard(i, temperature=1.0):
            return Shard(shard_id=i, slots=[i], prompts=[f"What is {i} + 1?"], answers=[str(i + 1)],
                         n=[2], max_new_tokens=4, temperature=temperature, top_p=1.0, seed=i)

        # 1. a queue of shards: sampler 1 sleeps 1 s per shard, so sampler 0 takes most of them
        out = pool.run([shard(i) for i in range(12)])
        assert sorted(o.shard_id for o in out) == list(range(12))
        by = Counter(o.sampler_id for o in out)
        assert by[0] >= 2 * by[1] and by[0] + by[1] == 12, by

        # 2. weights: a sampler built during an update catches up before it takes work; one
        #    added after an update is built with it
        greedy = shard(0, temperature=0.0)
        v0 = _tokens(ray.get(pool.members[0].actor.generate_shard.remote(greedy)))
        pool.resize(3)                                         # sampler 2 is built with v0 ...
        pool.publish(state_dict_bytes(tiny_model(1)), 1)       # ... while v1 is published
        pool.resize(4)                                         # sampler 3 is built with v1
        assert pool.wait_ready(4) == 4
        assert [m.info.weights_version for m in pool.members.values()] == [1, 1, 1, 1]
        outs = [ray.get(m.actor.generate_shard.remote(greedy.for_version(1))) for m in pool.members.values()]
        v1 = [_tokens(o) for o in outs]
        assert v1[0] == v1[1] == v1[2] == v1[3] != v0

        # 3. faults: kill the sampler that just got a shard; max_restarts=1
        pool.resize(2)
        assert sorted(pool.members) == [0, 1]
        kills = []
        dispatch = pool._dispatch

        def killing(m, s):
            ref = dispatch(m, s)
            if s.shard_id in plan and s.shard_id not in [k[1] for k in kills]:
                os.kill(m.info.pid, signal.SIGKILL)
                kills.append((m.sampler_id, s.shard_id))
            return ref

        pool._dispatch = killing
        plan = {1}
        queue_reports: list[int] = []
        pool.on_queue = queue_reports.append  # what feeds the gdro_queue_shards gauge
        out = pool.run([shard(i) for i in range(6)])
        assert sorted(o.shard_id for o in out) == list(range(6))  # none lost, none twice
        # 2 idle samplers take 2 of 6 shards, the queue drains (a re-queue may raise it) to 0
        assert queue_reports[0] == 4 and queue_reports[-1] == 0 and max(queue_reports) <= 5
        assert all(a != b for a, b in zip(queue_reports, queue_reports[1:]))  # reported on change only
        pool.on_queue = None
        assert (pool.stats.requeued, pool.stats.restarts, len(kills)) == (1, 1, 1)
        assert pool.wait_ready(2) == 2 and kills[0][0] not in pool.members
        plan = {7}                     # the restart limit is spent: go on with one sampler
        out = pool.run([shard(i) for i in range(6, 12)])
        assert sorted(o.shard_id for o in out) == list(range(6, 12))
        assert (pool.stats.requeued, pool.stats.restarts, pool.size()) == (2, 1, 1)
        plan = {12}                    # and the last one dies: a clear error, not a hang
        with pytest.raises(SamplerPoolError, match="max_restarts=1"):
            pool.run([shard(i) for i in range(12, 14)])
    finally:
        pool.shutdown()


def test_scale_up_and_down_while_training(ray_session, tiny, tmp_path, monkeypatch):
    """Scale 2 → 3 with the CLI and 3 → 1 with the Python API while `Trainer.run` trains in a
    thread; then a learner rank dies and the job ends with a one-line `--resume` message."""
    import functools

    ray = ray_session
    from gdro_ray.errors import UserError
    from gdro_ray.service import sampler_pool
    from gdro_ray.service.build import build_trainer
    from gdro_ray.service.scale import request_scale

    monkeypatch.setattr(sampler_pool, "SamplerPool", functools.partial(
        sampler_pool.SamplerPool, sampler_cls=ProbeSampler, sampler_kwargs={"inject_timeouts": True}))
    run_dir = tmp_path / "run"
    cfg = _cfg(tiny, run_dir, "steps=200", "sampler.engine=hf", "sampler.num_samplers=2",
               "sampler.max_samplers=4", "sampler.shard_size=4", "sampler.reward_timeout_s=0.2",
               "checkpoint.every=2")
    trainer = build_trainer(cfg, run_dir)
    scrapes: list = []
    _scrape_every_step(trainer, scrapes)
    th, box = start_in_thread(trainer)

    wait_for(lambda: len(read_records(run_dir)) >= 2, 180, "two steps", alive=th.is_alive)
    gcs = ray.get_runtime_context().gcs_address
    p = subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "scale", "--samplers", "3", "--address", gcs],
                       check=False, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0 and "requested 3 samplers" in p.stdout, p.stderr
    up = wait_for(lambda: next((r for r in read_records(run_dir) if r["samplers"] == 3), None),
                  120, "3 samplers", alive=th.is_alive)
    # the added sampler (id 2) took work with the weights current when it joined, not v0
    # (it joined after step up-1 was sampled: the version then was up-1 or, after that step's
    # publish, up)
    [(_, version, _)] = [j for j in trainer.pool.stats.joins if j[0] == 2]
    assert version in (up["step"] - 1, up["step"]) and version > 0, (version, up["step"])

    assert request_scale(1) == 1
    down = wait_for(lambda: next((r for r in read_records(run_dir) if r["samplers"] == 1), None),
                    60, "1 sampler", alive=th.is_alive)
    wait_for(lambda: len(read_records(run_dir)) >= down["step"] + 2, 60, "a step on one sampler", alive=th.is_alive)
    ray.kill(trainer.learner.workers[0])  # the learner dies: the job must end, clearly
    th.join(120)
    assert not th.is_alive()
    err = box.get("error")
    assert isinstance(err, UserError), box
    assert f"--resume {run_dir}" in str(err) and "\n" not in str(err)

    recs = read_records(run_dir)
    assert [r["step"] for r in recs] == list(range(len(recs)))
    counts = [r["samplers"] for r in recs]
    first3, first1 = counts.index(3), counts.index(1)
    assert counts[0] == 2 and 0 < first3 < first1, counts
    assert set(counts[first3:first1]) <= {3, 1} and set(counts[first1:]) == {1}, counts
    for r in recs:  # every step: all prompts, all rollouts, on-policy, nothing lost in the resizes
        assert (r["prompts"], r["rollouts"], r["staleness"]) == (8, 32, 0)
        assert (r["shards_requeued"], r["sampler_restarts"]) == (0, 0)
        assert r["reward_timeouts"] == 2  # two shards per step, one poisoned rollout each
    assert len(scrapes) == len(recs)
    total = 0
    for (step, m), r in zip(scrapes, recs):
        total += r["reward_timeouts"]
        assert step == r["step"] and m["gdro_samplers_live"] == r["samplers"]
        assert m["gdro_reward_timeouts_total"] == total
        assert m["gdro_shards_requeued_total"] == 0 and m["gdro_sampler_restarts_total"] == 0


def test_chaos_sampler_kills_on_vllm(ray_session, tiny, tmp_path, monkeypatch):
    """20 steps on the default vLLM engine; at three seeded steps the sampler that was just
    handed a (seeded) shard is SIGKILLed, so every kill lands with a shard in flight."""
    from gdro_ray.service.build import build_trainer
    from gdro_ray.service.sampler_pool import SamplerPool

    rng = random.Random(6)
    plan = {rng.randint(lo, hi): rng.randrange(4) for lo, hi in ((2, 5), (8, 11), (14, 17))}  # step -> shard
    kills: dict[int, int] = {}
    run_dir = tmp_path / "run"
    steps = 20
    cfg = _cfg(tiny, run_dir, f"steps={steps}", "sampler.num_samplers=2", "sampler.max_restarts=3",
               "checkpoint.every=0")
    trainer = build_trainer(cfg, run_dir)
    scrapes: list = []
    _scrape_every_step(trainer, scrapes)
    dispatch = SamplerPool._dispatch

    def killing(pool, m, shard):
        ref = dispatch(pool, m, shard)
        step = trainer.step
        if plan.get(step) == shard.shard_id and step not in kills:
            os.kill(m.info.pid, signal.SIGKILL)
            kills[step] = m.sampler_id
        return ref

    monkeypatch.setattr(SamplerPool, "_dispatch", killing)
    trainer.run()

    assert sorted(kills) == sorted(plan)
    recs = read_records(run_dir)
    assert [r["step"] for r in recs] == list(range(steps))
    for r in recs:  # every step: all B prompts with exactly B·n̄ rollouts, on-policy
        assert (r["prompts"], r["rollouts"], sum(r["bin_rollouts"]), r["staleness"]) == (8, 32, 32, 0), r["step"]
        done = sum(1 for s in kills if s <= r["step"])
        assert (r["shards_requeued"], r["sampler_restarts"]) == (done, done), r["step"]
    assert {s: m["gdro_shards_requeued_total"] for s, m in scrapes} == {r["step"]: r["shards_requeued"] for r in recs}
    last = scrapes[-1][1]
    assert last["gdro_sampler_restarts_total"] == len(plan) and last["gdro_samplers_live"] == recs[-1]["samplers"]
    # the replacements took work once they were up (ids 2.. are replacements)
    assert sum(n for sid, n in trainer.pool.stats.shards_by_sampler.items() if sid >= 2) > 0
