"""Checks against verl 0.9.1's real classes, run by test_integrations_verl.py with pytest inside
benchmarks/.venv-verl: verl's own Hydra config, its v1 `PPOTrainerSync` built from it (which
builds our `GDROReplayBuffer` through `trainer.v1.sampler.custom_sampler`), its dataset and
tokenizer path, TransferQueue on a local Ray, and the agent-loop worker's own `generate_sequences`
/ `_run_prompt` (where `__rollout_n__` is read), with the LLM call replaced by a scripted reward.
The GPU side (FSDP workers, vLLM servers, weight sync, the actor update) is not started here."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import ray
import torch
import transfer_queue as tq
from hydra import compose, initialize_config_module
from omegaconf import open_dict
from verl.trainer.ppo.v1 import AgentLoopWorkerTQ, get_trainer_cls
from verl.utils.skip import SkipManager
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

import gdro_ray.integrations.verl_v1 as adapter

B, N = 4, 3
# the GDRO part of the command in docs/integrations.md, verbatim
DOC_OVERRIDES = [
    "trainer.v1.sampler.custom_sampler.path=pkg://gdro_ray.integrations.verl_v1",
    "trainer.v1.sampler.custom_sampler.name=GDROReplayBuffer",
    "+trainer.v1.sampler.sampler_kwargs.algorithm=both",
    '+trainer.v1.sampler.sampler_kwargs.overrides=["prompt_gdro.eta=0.65","classifier.k=8"]',
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import pandas as pd

    from gdro_ray.models import prepare, tiny

    model = prepare.model_dir()
    if not prepare.is_prepared(model):  # the toy architecture, untrained: only its tokenizer is read
        model = tmp_path_factory.mktemp("model")
        tok = tiny.build_tokenizer()
        tiny.save(tiny.build_model("tiny", seed=0, tokenizer=tok), tok, model)
    d = tmp_path_factory.mktemp("data")
    rows = [{"data_source": "toy", "prompt": [{"role": "user", "content": f"what is {i} + 1?"}],
             "reward_model": {"ground_truth": str(i + 1)}, "extra_info": {"index": i}} for i in range(40)]
    pd.DataFrame(rows).to_parquet(d / "train.parquet")
    pd.DataFrame(rows[:4]).to_parquet(d / "val.parquet")
    return {"model": str(model), "train": str(d / "train.parquet"), "val": str(d / "val.parquet")}


@pytest.fixture(scope="module", autouse=True)
def transfer_queue(data):
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    cfg = _config(data)
    with open_dict(cfg):
        cfg.transfer_queue.enable = True
    tq.init(cfg.transfer_queue)
    yield
    tq.close()
    ray.shutdown()


def _config(data, *extra, sampler=DOC_OVERRIDES):
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=[
            "algorithm.adv_estimator=grpo", f"data.train_files={data['train']}", f"data.val_files={data['val']}",
            f"data.train_batch_size={B}", f"actor_rollout_ref.rollout.n={N}", "data.max_prompt_length=64",
            f"actor_rollout_ref.model.path={data['model']}", f"actor_rollout_ref.actor.ppo_mini_batch_size={B}",
            "data.dataloader_num_workers=0", "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
            *sampler, *extra])


def _unwrap(actor_cls):
    """The Python class behind a @ray.remote class (verl's agent-loop worker is one)."""
    return actor_cls.__ray_metadata__.modified_class


class ScriptedAgentLoop:
    """verl's AgentLoopWorkerTQ.generate_sequences / _run_prompt as they are; only the LLM + reward
    call (`_run_agent_loop`) is replaced: it writes one output per session with `rm_scores`, as
    `_agent_loop_postprocess` does."""

    def __init__(self, config, reward):
        worker_cls = _unwrap(AgentLoopWorkerTQ)
        self.worker = type("Worker", (), {"generate_sequences": worker_cls.generate_sequences,
                                          "_run_prompt": worker_cls._run_prompt})()
        self.worker.config, self.worker.background_tasks = config, set()
        self.reward, self.sessions = reward, {}

    def generate_sequences(self, batch):
        async def agent_loop(_self, sampling_params, trajectory, trace, session_id, **prompt):
            uid, row = prompt["uid"], int(prompt["index"])
            self.sessions.setdefault(uid, []).append(session_id)
            r = self.reward(row, session_id)
            scores = torch.zeros(2 + row % 3)
            scores[-1] = r
            await tq.async_kv_batch_put(keys=[f"{uid}_{session_id}_0"], partition_id="train",
                                        fields=list_of_dict_to_tensordict([{"rm_scores": scores}]),
                                        tags=[{"status": "success", "global_steps": prompt["global_steps"]}])

        self.worker._run_agent_loop = agent_loop.__get__(self.worker)

        async def run():
            await self.worker.generate_sequences(batch)
            while self.worker.background_tasks:
                await asyncio.gather(*list(self.worker.background_tasks))

        asyncio.run(run())


class NoWorkers:
    """The FSDP worker group's checkpoint calls (GPU side), as no-ops."""

    def save_checkpoint(self, *a, **k):
        pass

    def load_checkpoint(self, *a, **k):
        pass


def _trainer(cfg, reward):
    trainer = get_trainer_cls(cfg.trainer.v1.trainer_mode)(cfg)  # builds GDROReplayBuffer via verl's loader
    trainer._init_tokenizer()
    trainer._init_dataloader()
    trainer.global_steps = 0
    trainer.agent_loop_manager = ScriptedAgentLoop(cfg, reward)
    trainer.actor_rollout_wg = NoWorkers()
    SkipManager.init(cfg)
    return trainer


def _step(trainer):
    """fit's data path for one step: prepare_step (new prompts -> rollout), sample, clear."""
    trainer.global_steps += 1
    trainer.prepare_step()
    batch, metrics = trainer.replay_buffer.sample(global_steps=trainer.global_steps, partition_id="train",
                                                  batch_size=trainer.config.data.train_batch_size)
    tq.kv_clear(keys=batch.keys, partition_id=batch.partition_id)
    return batch, metrics


def _by_difficulty(row, session):
    """Row r is solved with probability r/40 (a fixed draw per row and session)."""
    return float(np.random.default_rng(row * 101 + session).random() < row / 40)


def test_documented_overrides_parse_and_build_our_replay_buffer(data):
    cfg = _config(data)
    assert cfg.trainer.use_v1 and cfg.trainer.v1.trainer_mode == "sync"
    trainer = get_trainer_cls("sync")(cfg)
    assert type(trainer.replay_buffer).__name__ == "GDROReplayBuffer"
    assert isinstance(trainer.replay_buffer, adapter.GDROReplayBuffer)
    assert trainer.__dict__["_next_train_batch"].__func__ is adapter._next_train_batch
    from pathlib import Path

    doc = (Path(adapter.__file__).parents[2] / "docs" / "integrations.md").read_text()
    assert all(o in doc for o in DOC_OVERRIDES), "docs/integrations.md no longer shows the tested overrides"


def test_next_batch_sets_per_prompt_rollout_n_and_the_agent_loop_uses_it(data):
    trainer = _trainer(_config(data), _by_difficulty)
    varied = False
    for step in range(12):
        batch, metrics = _step(trainer)
        rec = trainer._gdro.records[-1]
        assert rec["step"] == step and rec["prompts"] == B and rec["rollouts"] == B * N  # Σ nᵢ = B·n̄
        assert len(batch.keys) == B * N and metrics["gdro/step"] == step + 1
        sessions = trainer.agent_loop_manager.sessions
        uids = {k.split("_")[0] for k in batch.keys}
        counts = sorted(len(sessions[u]) for u in uids)
        assert sum(counts) == B * N
        varied |= len(set(counts)) > 1
        sessions.clear()
    assert varied, "Rollout-GDRO never moved rollouts between prompts in 12 steps"
    assert not trainer._gdro.curriculum.pending


def test_rows_come_from_the_curriculum(data):
    trainer = _trainer(_config(data), _by_difficulty)
    trainer.global_steps = 1
    batch = trainer._next_train_batch()
    sched = trainer._gdro.curriculum.pending[-1]
    assert [int(i) for i in batch["index"]] == sched.prompt_ids.tolist()
    assert batch["__rollout_n__"].tolist() == sched.rollouts.tolist() and int(batch["__rollout_n__"].sum()) == B * N


def test_dapo_filter_refills_through_the_curriculum(data):
    cfg = _config(data, "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=reward")

    def reward(row, session):  # every third row: all rollouts agree, so DAPO drops its group
        return 1.0 if row % 3 == 0 else float(session % 2)

    trainer = _trainer(cfg, reward)
    assert trainer.replay_buffer.filter_groups_metric == "reward"
    dropped, grown = 0, False
    for _ in range(4):
        batch, metrics = _step(trainer)
        rec = trainer._gdro.records[-1]
        assert len({k.split("_")[0] for k in batch.keys}) == B  # verl trains B groups
        assert rec["prompts"] >= B and rec["rollouts_observed"] == rec["rollouts"]  # and we saw every group
        dropped += int(metrics.get("training/filter_groups/evicted_samples", 0))
        grown |= rec["prompts"] > B  # verl's refill asked the curriculum for more prompts
    assert dropped > 0 and grown


def test_checkpoint_carries_the_curriculum(data, tmp_path):
    cfg = _config(data, f"trainer.default_local_dir={tmp_path}", "trainer.resume_mode=auto")
    t1 = _trainer(cfg, _by_difficulty)
    for _ in range(3):
        _step(t1)
    t1._save_checkpoint()
    saved = json.loads((tmp_path / "global_step_3" / adapter.STATE_FILE).read_text())
    assert saved["curriculum"]["adversary"]["step"] == 3
    t2 = _trainer(cfg, _by_difficulty)
    t2._load_checkpoint()
    assert t2.global_steps == 3 and t2._gdro.curriculum.adversary.step == 3
    t1.global_steps = t2.global_steps = 4
    b1, b2 = t1._next_train_batch(), t2._next_train_batch()  # the resumed run's next block is the same
    assert list(b1["index"]) == list(b2["index"]) and b1["__rollout_n__"].tolist() == b2["__rollout_n__"].tolist()


def test_async_modes_and_other_versions_fail_at_start(data, monkeypatch):
    with pytest.raises(ValueError, match="trainer_mode=sync"):
        get_trainer_cls("colocate_async")(_config(data, "trainer.v1.trainer_mode=colocate_async"))
    with pytest.raises(ValueError, match="unknown GDRO option"):
        get_trainer_cls("sync")(_config(data, "+trainer.v1.sampler.sampler_kwargs.rollout_n=3"))
    monkeypatch.setattr(adapter, "_BUILT", {})
    monkeypatch.setattr(adapter, "SUPPORTED", ("0.10.0", "0.11.0"))
    with pytest.raises(RuntimeError) as e:
        get_trainer_cls("sync")(_config(data))
    assert "\n" not in str(e.value) and "this is verl 0.9.1" in str(e.value)
