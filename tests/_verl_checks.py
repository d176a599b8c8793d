"""Checks against verl's real classes (verl 0.7.1), run by test_integrations_verl.py with pytest
inside benchmarks/.venv-verl: verl's own create_rl_sampler, collate_fn, StatefulDataLoader and
DataProto, driven the way RayPPOTrainer.fit drives them (its GPU workers are not started)."""
from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader
from verl import DataProto
from verl.experimental.dataset.sampler import AbstractCurriculumSampler
from verl.trainer.main_ppo import create_rl_sampler
from verl.utils.dataset.rl_dataset import collate_fn

from gdro_ray.integrations.verl import GDROCurriculumSampler, rollout_gdro_repeats, rollout_gdro_trainer_class

B, N = 4, 3


class Rows(Dataset):
    """What RLHFDataset returns per row, reduced: token ids and the row's extra_info with its index."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"input_ids": torch.full((5,), i), "extra_info": {"index": i}, "data_source": "toy"}


def _config(algorithm="prompt_gdro", **gdro):
    return OmegaConf.create({
        "train_batch_size": B, "dataloader_num_workers": 0, "shuffle": True, "seed": 3,
        "sampler": {"class_path": "pkg://gdro_ray.integrations.verl", "class_name": "GDROCurriculumSampler",
                    "gdro": {"rollout_n": N, "algorithm": algorithm, "overrides": ["classifier.k=2"], **gdro}},
    })


def _loader(cfg, data):
    sampler = create_rl_sampler(cfg, data)  # verl's own construction path
    return sampler, StatefulDataLoader(dataset=data, batch_size=B, num_workers=0, drop_last=True,
                                       collate_fn=collate_fn, sampler=sampler)


def _step(batch_dict, rng, sampler=None):
    """fit's data path: uid per prompt, repeat by rollout.n, score, rebalance rows; returns the batch."""
    batch = DataProto.from_single_dict(batch_dict)
    batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(batch))], dtype=object)
    batch = batch.repeat(repeat_times=N, interleave=True)
    rows = len(batch)
    batch.batch["token_level_scores"] = torch.zeros(rows, 6)
    batch.batch["token_level_scores"][:, -1] = torch.as_tensor(rng.integers(0, 2, rows), dtype=torch.float32)
    return batch[torch.as_tensor(rng.permutation(rows))]  # balance_batch reorders rows


def test_create_rl_sampler_builds_ours_and_batches_follow_the_curriculum():
    data = Rows(24)
    sampler, dl = _loader(_config(), data)
    assert isinstance(sampler, GDROCurriculumSampler) and isinstance(sampler, AbstractCurriculumSampler)
    rng = np.random.default_rng(0)
    for i, batch_dict in enumerate(dl):
        block = sampler.curriculum.pending[-1].prompt_ids.tolist()
        assert [d["index"] for d in batch_dict["extra_info"]] == block
        sampler.update(_step(batch_dict, rng))
        assert sampler.records[-1]["step"] == i and sampler.records[-1]["rollouts"] == B * N
        if i == 3:
            break
    assert sampler.curriculum.adversary.step == 4 and not sampler.curriculum.pending


def test_state_rides_in_the_dataloader_state_and_resume_continues():
    data, rng = Rows(24), np.random.default_rng(1)
    s1, dl1 = _loader(_config(), data)
    it = iter(dl1)
    for _ in range(2):
        s1.update(_step(next(it), rng))
    state = dl1.state_dict()  # what verl writes to data.pt
    s2, dl2 = _loader(_config(), data)
    dl2.load_state_dict(state)
    it2 = iter(dl2)
    a, b = next(it), next(it2)
    assert [d["index"] for d in a["extra_info"]] == [d["index"] for d in b["extra_info"]]
    assert s2.curriculum.adversary.step == 2


def test_a_block_saved_before_update_is_not_replayed():
    """verl saves the checkpoint before it calls update(): that block is already trained."""
    data, rng = Rows(24), np.random.default_rng(2)
    s1, dl1 = _loader(_config(), data)
    it = iter(dl1)
    s1.update(_step(next(it), rng))
    next(it)  # step 2 trained, checkpoint written now, then the process dies
    state = dl1.state_dict()
    s2, dl2 = _loader(_config(), data)
    dl2.load_state_dict(state)
    it2 = iter(dl2)  # the dataloader applies a loaded state when its iterator starts
    assert s2.curriculum.adversary.step == 1 and not s2.curriculum.pending
    next(it2)
    assert s2.curriculum.pending[-1].step == 1  # the next block is a new one, numbered after the observed step


def test_update_refuses_a_batch_that_is_not_the_block():
    data, rng = Rows(24), np.random.default_rng(3)
    sampler, dl = _loader(_config(), data)
    batch = _step(next(iter(dl)), rng)
    with pytest.raises(ValueError, match="not the outstanding block"):
        sampler.update(batch[torch.arange(len(batch) - 1)])  # one rollout lost
    sampler.update(batch)


def test_rollout_gdro_recipe_repeats_each_row_by_its_count():
    data, rng = Rows(80), np.random.default_rng(4)
    sampler, dl = _loader(_config("both", overrides=["classifier.k=2", "rollout_gdro.n_min=2",
                                                     "rollout_gdro.n_max=6"]), data)
    original = DataProto.repeat
    varied = False
    with rollout_gdro_repeats(sampler):
        for i, batch_dict in enumerate(dl):
            sched = sampler.curriculum.pending[-1]
            batch = DataProto.from_single_dict(batch_dict)
            batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(B)], dtype=object)
            rep = batch.repeat(repeat_times=N, interleave=True)
            counts = sched.rollouts.tolist()
            assert len(rep) == sum(counts) == B * N  # the mean budget holds every step
            assert [d["index"] for d in rep.non_tensor_batch["extra_info"]] == \
                [r for r, n in zip(sched.prompt_ids.tolist(), counts) for _ in range(n)]
            varied |= len(set(counts)) > 1
            rows = len(rep)
            # difficulty by row (row r solved with probability r/80): bins with different variances form
            solved = rng.random(rows) < np.array([d["index"] / 80 for d in rep.non_tensor_batch["extra_info"]])
            rep.batch["token_level_scores"] = torch.as_tensor(solved[:, None], dtype=torch.float32)
            sampler.update(rep[torch.as_tensor(rng.permutation(rows))])
            val = DataProto.from_single_dict({"input_ids": torch.zeros(3, 2), "extra_info": np.array(
                [{"index": 0}] * 3, dtype=object)})
            assert len(val.repeat(repeat_times=5, interleave=True)) == 15  # validation: verl's uniform repeat
            if i == 14:
                break
    assert DataProto.repeat is original
    assert varied, "Rollout-GDRO never moved rollouts between prompts in 15 steps"
    with pytest.raises(ValueError, match="rollout_n"):
        with rollout_gdro_repeats(sampler):
            nxt = next(iter(dl))
            DataProto.from_single_dict(nxt).repeat(repeat_times=N + 1, interleave=True)


def test_missing_rollout_n_is_one_line():
    cfg = _config()
    del cfg.sampler.gdro["rollout_n"]
    with pytest.raises(ValueError, match=r"^data.sampler.gdro.rollout_n: required"):
        create_rl_sampler(cfg, Rows(8))


def test_recipe_trainer_is_verls_trainer():
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    cls = rollout_gdro_trainer_class()
    assert issubclass(cls, RayPPOTrainer) and cls.fit is not RayPPOTrainer.fit


def test_task_runner_builds_the_recipe_trainer(monkeypatch):
    """run_ppo's TaskRunner.run constructs main_ppo.RayPPOTrainer; ours swaps it in its own process."""
    from verl.trainer import main_ppo

    from gdro_ray.integrations.verl import rollout_gdro_task_runner_class

    seen = {}
    monkeypatch.setattr(main_ppo, "RayPPOTrainer", main_ppo.RayPPOTrainer)  # restored after the test
    monkeypatch.setattr(main_ppo.TaskRunner, "run", lambda self, config: seen.setdefault("cls", main_ppo.RayPPOTrainer))
    runner = rollout_gdro_task_runner_class()
    assert issubclass(runner, main_ppo.TaskRunner)
    runner.__new__(runner).run(None)
    assert seen["cls"].__name__ == "RolloutGDROTrainer"


def test_verls_own_dataset_carries_the_row_index(tmp_path):
    """verl's RLHFDataset (parquet → chat template → tokens) puts the row's extra_info in the batch."""
    import pandas as pd
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from gdro_ray.models import prepare

    model = prepare.model_dir()
    if not prepare.is_prepared(model):
        pytest.skip("the toy model (its tokenizer and chat template) is not prepared: `gdro-ray prepare`")
    rows = [{"data_source": "toy", "prompt": [{"role": "user", "content": f"what is {i} + 1?"}],
             "reward_model": {"ground_truth": str(i + 1)}, "extra_info": {"index": i}} for i in range(12)]
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    cfg = _config()
    cfg.update({"max_prompt_length": 64, "filter_overlong_prompts": False, "prompt_key": "prompt",
                "return_raw_chat": False, "truncation": "error"})
    data = RLHFDataset(data_files=[str(tmp_path / "train.parquet")], tokenizer=AutoTokenizer.from_pretrained(model),
                       config=cfg)
    sampler, dl = _loader(cfg, data)
    batch_dict = next(iter(dl))
    assert list(batch_dict["index"]) == sampler.curriculum.pending[-1].prompt_ids.tolist()
    sampler.update(_step(batch_dict, np.random.default_rng(5)))
    assert sampler.records[-1]["prompts"] == B
