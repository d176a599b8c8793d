"""The collective weight transport in a live run on CPU (gloo): the real broadcast path.

One trainer (1 FSDP2 learner rank, 2 transformers samplers, `weight_sync.transport=collective
backend=gloo`) is driven step by step. After every publish each sampler's weights checksum
equals the learner's published weights; a sampler added mid-run catches up through its own
group before it takes work; a sampler killed just before a publish makes that publish fall
back to the object store (logged) and the run goes on, with a new group at the next publish.
A second test receives a broadcast inside vLLM's worker and checks greedy output.
"""
from __future__ import annotations

import logging

import pytest

pytestmark = pytest.mark.slow


def _learner_checksum(trainer) -> float:
    from safetensors.torch import load

    return sum(t.double().sum().item() for t in load(trainer.learner.state_dict_bytes()).values())


def _check_samplers(trainer) -> list[float]:
    """Every live sampler holds the trainer's version with the learner's weights."""
    import ray

    live = [m for m in trainer.pool.members.values() if m.ready]
    assert live
    want = _learner_checksum(trainer)
    versions = ray.get([m.actor.ready.remote() for m in live])
    assert {v.weights_version for v in versions} == {trainer.version}
    sums = ray.get([m.actor.weights_checksum.remote() for m in live])
    assert sums == pytest.approx([want] * len(live), rel=1e-9)
    return sums


def _step(trainer) -> dict:
    return trainer.run_step().to_json()


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    import ray

    from gdro_ray.config import load_config
    from gdro_ray.service.build import build_trainer

    run = tmp_path_factory.mktemp("wt") / "run"
    cfg = load_config(overrides=[
        "model.path=toy", "steps=20", "batch_size=4", "budget_mean=2", "rollout_gdro.n_min=2",
        "sampler.engine=hf", "sampler.num_samplers=2", "sampler.max_new_tokens=8", "sampler.shard_size=2",
        "learner.world_size=1", "learner.lr=1e-3",
        "learner.weight_decay=0.1",  # the weights move every step even when all rewards of a batch agree
        "data.eval=dapo-fixture", "metrics.enabled=false",
        "weight_sync.transport=collective", "weight_sync.backend=gloo", "weight_sync.timeout_s=20",
        "cluster.num_cpus=6", f"out={run}"])
    tr = build_trainer(cfg, run)
    yield tr
    tr.shutdown()
    ray.shutdown()


def test_collective_publish_scale_up_and_fallback(trainer, caplog):
    import ray

    assert trainer.weights.name == "collective" and "gloo" in trainer.weights.description
    # steady state: every publish is a broadcast, every sampler ends with the learner's weights
    previous = None
    for _ in range(2):
        rec = _step(trainer)
        assert rec["weight_sync"]["transport"] == "collective" and rec["weight_sync"]["samplers"] == 2
        assert rec["weight_sync"]["version"] == trainer.version and rec["stage_time_s"]["publish"] > 0
        sums = _check_samplers(trainer)
        assert sums[0] != previous  # the weights really moved
        previous = sums[0]
    assert trainer.weights.stats["groups"] == 1  # same members: the group is kept

    # scale up mid-run: the joiner starts from the base weights and catches up through its own group
    ray.get(trainer.adversary.request_samplers.remote(3))
    _step(trainer)
    assert trainer.pool.wait_ready(3, timeout_s=120) == 3
    joiner = max(trainer.pool.members)
    # it took work only once it held a trained version (it was built with the base weights, v0)
    assert next(v for sid, v, _ in trainer.pool.stats.joins if sid == joiner) >= 1
    assert trainer.weights.stats["catch_ups"] >= 1 and trainer.weights.stats["catch_ups_object_store"] == 0
    _check_samplers(trainer)
    rec = _step(trainer)  # the next publish forms a new group with all three
    assert rec["weight_sync"]["transport"] == "collective" and rec["weight_sync"]["samplers"] == 3
    assert trainer.weights.stats["groups"] == 2
    _check_samplers(trainer)

    # a sampler dies between learning and publishing: that version goes through the object store
    victim = trainer.pool.members[min(trainer.pool.members)]
    train_step = trainer.learner.train_step

    def learn_then_kill(batch):
        out = train_step(batch)
        ray.kill(victim.actor, no_restart=True)
        return out

    trainer.learner.train_step = learn_then_kill
    with caplog.at_level(logging.WARNING, logger="gdro_ray.weights"):
        rec = _step(trainer)
    del trainer.learner.train_step
    assert rec["weight_sync"]["transport"] == "object_store" and rec["weight_sync"]["fallback"]
    assert any("published through the object store" in r.getMessage() for r in caplog.records)
    assert trainer.weights.stats["fallbacks"] == 1
    assert victim.sampler_id not in trainer.pool.members and trainer.pool.stats.deaths >= 1
    _check_samplers(trainer)
    # the run goes on, and the next publish is a broadcast again (a new group)
    trainer.pool.wait_ready(3, timeout_s=120)
    rec = _step(trainer)
    assert rec["weight_sync"]["transport"] == "collective"
    _check_samplers(trainer)


def test_vllm_worker_receives_the_broadcast(tmp_path):
    """The vLLM path: the receive runs in vLLM's worker; greedy output then equals transformers'."""
    import shutil
    import threading

    from _tiny import hf_greedy, save_tiny, tiny_model
    from safetensors.torch import save_file

    from gdro_ray.engines.vllm_engine import VLLMEngine
    from gdro_ray.transfer.weight_group import WeightSender

    base = save_tiny(tmp_path / "base", seed=0)
    new = {k: v.detach().contiguous().clone() for k, v in tiny_model(seed=1).state_dict().items()}
    target = tmp_path / "target"
    shutil.copytree(base, target)
    save_file(new, str(target / "model.safetensors"))
    prompts = ["12+30=", "hello", "abc"]
    want = hf_greedy(target, prompts, max_new_tokens=12)

    engine = VLLMEngine(str(base))
    before = engine.generate(prompts, [1] * len(prompts), max_new_tokens=12, temperature=0.0, top_p=1.0)
    assert [o[0].token_ids for o in before] != want  # the test can tell the weights apart
    sender = WeightSender("cpu")
    host, port = sender.host("127.0.0.1")
    layout = sender.stage(new, version=7, bucket_bytes=1 << 16)
    spec = {"host": host, "port": port, "prefix": "v/", "world_size": 2, "backend": "gloo", "timeout_s": 30}
    errors = []

    def rank0():
        try:
            sender.open(dict(spec, rank=0))
            sender.broadcast()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    th = threading.Thread(target=rank0)
    th.start()
    engine.join_weight_group(dict(spec, rank=1))
    engine.receive_weights(layout, 7)
    th.join(60)
    assert not errors and engine.weights_version == 7
    outs = engine.generate(prompts, [1] * len(prompts), max_new_tokens=12, temperature=0.0, top_p=1.0)
    assert [o[0].token_ids for o in outs] == want
    engine.leave_weight_group()
    engine.close()
    sender.shutdown()
