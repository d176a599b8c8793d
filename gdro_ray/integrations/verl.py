"""GDRO inside verl: a curriculum sampler (Prompt-GDRO) and a per-row repeat (Rollout-GDRO).

Read against verl 0.7.1 (`verl/experimental/dataset/sampler.py`, `verl/trainer/main_ppo.py`
`create_rl_sampler`, `verl/trainer/ppo/ray_trainer.py` `fit`, `verl/protocol.py`):

- **Prompt-GDRO as configuration.** verl builds `data.sampler.class_path` / `class_name` with
  `(data_source, data_config)`, requires `data.dataloader_num_workers=0`, and calls the
  sampler's `update(batch)` after every step with the step's `DataProto`.
  `GDROCurriculumSampler` yields each batch's rows from the Adversary, and in `update` groups the
  batch's rows by `uid` (one group per prompt, in whatever order verl's balancing left them),
  finds each group's dataset row in `extra_info["index"]` (`data.sampler.gdro.row_key`), scores
  it by `acc` if the reward manager wrote one, else by the summed `token_level_scores`, and
  reports it. Its `state_dict` rides in verl's `data.pt` (torchdata's StatefulDataLoader saves
  a stateful sampler with the dataloader).
- **Rollout-GDRO as a recipe.** verl repeats every prompt `rollout.n` times
  (`DataProto.repeat(interleave=True)`, twice per step in `fit`); `DataProto.sample_level_repeat`
  takes one count per row. `rollout_gdro_trainer_class()` is a `RayPPOTrainer` whose `fit` runs
  with the training block's `repeat` replaced by `sample_level_repeat(n_i)` (Σ n_i = B·n̄, so
  verl's `ppo_mini_batch_size × rollout.n` arithmetic holds with `rollout.n = n̄`; GRPO's
  advantage already groups by `uid`, any group size). Other batches (validation) keep the
  uniform repeat.

verl ≥ 0.8 removed `data.sampler.class_path` and the `update` hook (verified in the 0.8.0 and
0.9.1 wheels); there the sampler can still be passed as `RayPPOTrainer(train_sampler=...)`,
but something must call its `update(batch)` each step. No Ray is used here.

Options under `data.sampler.gdro` (add them with `+data.sampler.gdro.<key>=...`):
`rollout_n` (required: `${actor_rollout_ref.rollout.n}`), `algorithm` (`prompt_gdro` default,
`both` or `rollout_gdro` with the recipe trainer, `grpo`), `overrides` (a list of our config
keys; quoted on a Hydra command line: `'+data.sampler.gdro.overrides=["prompt_gdro.eta=0.5"]'`), `success_threshold` (0.5), `row_key` (`extra_info.index`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sized

import numpy as np

from gdro_ray.integrations.curriculum import PromptCurriculum

try:  # verl 0.7.x: the base class create_rl_sampler's isinstance check and fit's update hook look for
    from verl.experimental.dataset.sampler import AbstractCurriculumSampler as _SamplerBase
except ImportError:  # verl ≥ 0.8 or no verl: a plain torch sampler with the same methods
    from torch.utils.data import Sampler as _SamplerBase

__all__ = ["GDROCurriculumSampler", "per_row_repeat", "rollout_gdro_repeats", "rollout_gdro_trainer_class",
           "rollout_gdro_task_runner_class", "run_rollout_gdro"]


def _opt(node, key: str, default=None):
    if node is None:
        return default
    value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    return default if value is None else value


def _plain(value):
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:
        pass
    return value


class GDROCurriculumSampler(_SamplerBase):
    """verl's `data.sampler.class_path` sampler: Prompt-GDRO chooses each training batch's rows."""

    def __init__(self, data_source: Sized, data_config):
        opts = _plain(_opt(_opt(data_config, "sampler"), "gdro", {})) or {}
        if "rollout_n" not in opts:
            raise ValueError("data.sampler.gdro.rollout_n: required; add "
                             "+data.sampler.gdro.rollout_n=${actor_rollout_ref.rollout.n}")
        # the dataloader's batch: verl uses gen_batch_size when set (DAPO-style oversampling), else train_batch_size
        self.batch_size = int(_opt(data_config, "gen_batch_size") or _opt(data_config, "train_batch_size"))
        self.rollout_n = int(opts["rollout_n"])
        self.row_key = str(opts.get("row_key", "extra_info.index"))
        self.num_rows = len(data_source)
        overrides = opts.get("overrides") or []
        self.curriculum = PromptCurriculum.create(
            self.num_rows, self.batch_size, self.rollout_n, [str(o) for o in overrides],
            str(opts.get("algorithm", "prompt_gdro")), int(_opt(data_config, "seed", 0)),
            float(opts.get("success_threshold", 0.5)))
        self.blocks_in_epoch = 0  # blocks yielded in the current pass (resume continues the pass)
        self.records: list[dict] = []

    # ---- verl's sampler interface ------------------------------------------------------------
    def __len__(self) -> int:
        return (self.num_rows // self.batch_size) * self.batch_size

    def __iter__(self):
        while self.blocks_in_epoch < self.num_rows // self.batch_size:
            sched = self.curriculum.next_block()  # drawn when the dataloader asks for the batch
            self.blocks_in_epoch += 1
            yield from (int(r) for r in sched.prompt_ids.tolist())
        self.blocks_in_epoch = 0

    def update(self, batch) -> None:
        """The step's DataProto: rollout groups by `uid`, each group's row and scores."""
        groups: dict[str, tuple[int, list[float]]] = {}
        rows, scores = self._rows(batch), self._scores(batch)
        for uid, row, score in zip(batch.non_tensor_batch["uid"], rows, scores):
            groups.setdefault(str(uid), (int(row), []))[1].append(float(score))
        record = self.curriculum.observe_groups(list(groups.values()), strict=True)
        self.records.append(record)

    def _rows(self, batch) -> list[int]:
        nt = batch.non_tensor_batch
        if "." in self.row_key:
            col, field = self.row_key.split(".", 1)
            if col not in nt:
                raise ValueError(f"GDRO sampler: the batch has no {col!r} column for row_key={self.row_key}")
            return [int((d or {}).get(field, -1)) for d in nt[col]]
        if self.row_key not in nt:
            raise ValueError(f"GDRO sampler: the batch has no {self.row_key!r} column (data.sampler.gdro.row_key)")
        return [int(v) for v in nt[self.row_key]]

    @staticmethod
    def _scores(batch) -> np.ndarray:
        if "acc" in batch.non_tensor_batch:  # reward managers that report correctness (dapo)
            return np.asarray(batch.non_tensor_batch["acc"], dtype=np.float64)
        if batch.batch is not None and "acc" in batch.batch.keys():  # batch / prime managers
            return batch.batch["acc"].detach().cpu().double().numpy()
        return batch.batch["token_level_scores"].sum(-1).detach().cpu().double().numpy()

    # ---- saved with the dataloader (data.pt) --------------------------------------------------
    def state_dict(self) -> dict:
        return {"curriculum": self.curriculum.state_dict(), "blocks_in_epoch": self.blocks_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        # verl saves before it calls update(): the block outstanding then is already trained
        self.curriculum.load_state_dict(state["curriculum"], drop_pending=True)
        self.blocks_in_epoch = int(state.get("blocks_in_epoch", 0))

    # ---- Rollout-GDRO ------------------------------------------------------------------------
    def counts_for(self, proto) -> list[int] | None:
        """The rollouts of each row of `proto` if it is the outstanding training block in the
        order it was yielded (what `fit` repeats), else None."""
        if not self.curriculum.pending or len(proto) != self.batch_size:
            return None
        sched = self.curriculum.pending[-1]  # the block fit is working on: the newest handed out
        try:
            rows = self._rows(proto)
        except ValueError:
            return None
        if rows != sched.prompt_ids.tolist():
            return None
        return [int(n) for n in sched.rollouts.tolist()]


def per_row_repeat(proto, counts):
    """`proto` with row i repeated counts[i] times in place (verl's `sample_level_repeat`)."""
    return proto.sample_level_repeat(np.asarray(counts, dtype=np.int64))


@contextlib.contextmanager
def rollout_gdro_repeats(sampler: GDROCurriculumSampler):
    """While active, `DataProto.repeat(n̄, interleave=True)` of the sampler's outstanding block
    repeats each row by its own count; every other repeat is verl's."""
    from verl import DataProto

    original = DataProto.repeat

    def repeat(self, repeat_times=2, interleave=True):
        counts = sampler.counts_for(self) if interleave else None
        if counts is None:
            return original(self, repeat_times=repeat_times, interleave=interleave)
        if repeat_times != sampler.rollout_n:
            raise ValueError(f"GDRO recipe: fit repeats by {repeat_times} but data.sampler.gdro.rollout_n is "
                             f"{sampler.rollout_n}; they must both be actor_rollout_ref.rollout.n")
        return per_row_repeat(self, counts)

    DataProto.repeat = repeat
    try:
        yield
    finally:
        DataProto.repeat = original


def rollout_gdro_trainer_class():
    """A `RayPPOTrainer` whose training batches get Rollout-GDRO's per-prompt rollout counts."""
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    class RolloutGDROTrainer(RayPPOTrainer):
        def fit(self):
            sampler = self.train_dataloader.sampler
            if not isinstance(sampler, GDROCurriculumSampler):
                raise ValueError("RolloutGDROTrainer needs data.sampler.class_path=pkg://gdro_ray.integrations.verl "
                                 "and data.sampler.class_name=GDROCurriculumSampler")
            with rollout_gdro_repeats(sampler):
                return super().fit()

    return RolloutGDROTrainer


def rollout_gdro_task_runner_class():
    """verl's `TaskRunner` (the Ray actor `main_ppo.run_ppo` starts) building `RolloutGDROTrainer`:
    the swap happens inside that actor's process, where `main_ppo.RayPPOTrainer` is looked up."""
    from verl.trainer import main_ppo

    class RolloutGDROTaskRunner(main_ppo.TaskRunner):
        def run(self, config):
            main_ppo.RayPPOTrainer = rollout_gdro_trainer_class()
            return super().run(config)

    return RolloutGDROTaskRunner


def run_rollout_gdro(config) -> None:
    """`main_ppo.run_ppo` with Rollout-GDRO's per-prompt rollout counts (the recipe's entry point)."""
    import ray
    from verl.trainer import main_ppo

    # what main_ppo.main does before run_ppo in 0.7.1: device detection, legacy reward keys
    if hasattr(main_ppo, "auto_set_device"):
        main_ppo.auto_set_device(config)
    if hasattr(main_ppo, "migrate_legacy_reward_impl"):
        config = main_ppo.migrate_legacy_reward_impl(config)
    main_ppo.run_ppo(config, task_runner_class=ray.remote(num_cpus=1)(rollout_gdro_task_runner_class()))
