"""GDRO inside verl 0.9's v1 trainer (`TaskRunnerV1`, `trainer.v1.trainer_mode=sync`), through its hooks.

Read against verl 0.9.1 (`verl/trainer/ppo/v1/trainer_base.py`, `replay_buffer.py`,
`agent_loop_tq.py`). The v1 trainer names one class of ours in its configuration,
`trainer.v1.sampler.custom_sampler.{path,name}`: a `ReplayBuffer` subclass that
`PPOTrainer.__init__` builds inside the Ray actor that runs training, with
`refill_fn=trainer._add_prompts_to_generate`, a method bound to that trainer. So one
configuration key reaches everything GDRO needs, and the user keeps verl's own command:

- **Which prompts.** `GDROReplayBuffer` binds `_next_train_batch` on that trainer instance
  (the method both `prepare_step` and the refill path call for new prompts). Ours asks the pure
  `Adversary` for the block (B rows; on a refill, the same block grown by the refill's count),
  reads those rows from the trainer's own dataset, collates them with verl's `collate_fn`, and
  gives each prompt its own rollout count in the per-prompt `__rollout_n__` column that
  `AgentLoopWorkerTQ._run_prompt` reads. Σ nᵢ = B·n̄ with n̄ = `actor_rollout_ref.rollout.n`, so
  the trainer's `ppo_mini_batch_size × rollout.n` arithmetic holds, and GRPO's advantage groups
  by uid whatever a group's size. With Prompt-GDRO alone every nᵢ is n̄.
- **What happened.** The buffer sees every finished group before it leaves TransferQueue:
  the ones it hands to training (`_materialize_batch`) and the ones it drops (`_clear_groups`:
  DAPO's all-equal groups, a sync step's surplus). A group's reward per rollout is the sum of its
  final output's `rm_scores` (what verl's own DAPO filter reads); a rollout that failed is NaN,
  left out of the statistics. When `sample` returns, the whole block is observed and the
  step record's numbers join verl's step metrics under `gdro/`.
- **Resume.** The trainer's `_save_checkpoint` / `_load_checkpoint` are bound to also write and
  read `gdro_curriculum.json` in the `global_step_N` folder. A sync step saves after `sample`, so
  nothing is outstanding then.

Refused at start, one line each: a verl outside the supported versions; the async trainer modes
(prompts are fetched one by one across steps and trained out of order, which the block
bookkeeping here does not follow); a colocated reward model (rewards arrive after `sample`).

Options ride in `trainer.v1.sampler.sampler_kwargs` (add them with `+`): `algorithm`
(`prompt_gdro` default, `rollout_gdro`, `both`, `grpo`), `overrides` (our config keys, a list),
`success_threshold` (0.5), `seed` (default `data.seed`). verl is imported only when verl loads
`GDROReplayBuffer` (this module's `__getattr__`). No Ray of ours.
"""
from __future__ import annotations

import json
import logging
import os
import types
from collections.abc import Iterable

import numpy as np

from gdro_ray.integrations.curriculum import PromptCurriculum

SUPPORTED = ("0.9.0", "0.10.0")  # [low, high): the releases the v1 hooks below were read and tested in
TESTED = "0.9.1"
STATE_FILE = "gdro_curriculum.json"
METRIC_PREFIX = "gdro/"

__all__ = ["GDROReplayBuffer", "VerlCurriculum", "check_verl_version", "rewards_by_uid"]  # noqa: F822


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit()) or "0"
        out.append(int(digits))
        if not part.isdigit():  # 0.10.0.dev / 0.9.0rc1: a pre-release counts as its base version
            break
    return tuple(out + [0] * (3 - len(out)))


def check_verl_version(version: str | None = None) -> str:
    """The installed verl's version; one-line RuntimeError outside the supported range."""
    if version is None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            version = dist_version("verl")
        except PackageNotFoundError:
            raise RuntimeError(f"gdro_ray's verl adapter needs verl >={SUPPORTED[0]},<{SUPPORTED[1]} "
                               f"(tested on {TESTED}); verl is not installed") from None
    low, high = (_version_tuple(v) for v in SUPPORTED)
    if not low <= _version_tuple(version) < high:
        raise RuntimeError(f"gdro_ray's verl adapter supports verl >={SUPPORTED[0]},<{SUPPORTED[1]} (tested on "
                           f"{TESTED}, the v1 trainer's replay-buffer hook); this is verl {version}")
    return version


def rewards_by_uid(keys: Iterable[str], rewards: Iterable[float]) -> dict[str, dict[int, float]]:
    """TransferQueue keys `{uid}_{session}_{index}` and their rewards -> uid -> session -> reward
    of the session's final output (an agent loop may write several outputs per session)."""
    last: dict[tuple[str, int], tuple[int, float]] = {}
    for key, r in zip(keys, rewards, strict=True):
        uid, session, index = key.rsplit("_", 2)
        k = (uid, int(session))
        if k not in last or last[k][0] < int(index):
            last[k] = (int(index), float(r))
    out: dict[str, dict[int, float]] = {}
    for (uid, session), (_, r) in last.items():
        out.setdefault(uid, {})[session] = r
    return out


class VerlCurriculum:
    """The verl-free bookkeeping: blocks of rows out (each prompt with a uid), groups by uid back."""

    def __init__(self, curriculum: PromptCurriculum):
        self.curriculum = curriculum
        self.slots: dict[str, int] = {}  # uid -> slot of the outstanding block
        self.seen: dict[int, np.ndarray] = {}  # slot -> rewards per session (NaN: no output)
        self.records: list[dict] = []

    @classmethod
    def create(cls, num_rows: int, batch_size: int, rollout_n: int, opts: dict | None = None,
               seed: int = 0) -> VerlCurriculum:
        opts = dict(opts or {})
        unknown = sorted(set(opts) - {"algorithm", "overrides", "success_threshold", "seed"})
        if unknown:
            raise ValueError(f"trainer.v1.sampler.sampler_kwargs: unknown GDRO option(s) {unknown}; known: "
                             "algorithm, overrides, success_threshold, seed")
        overrides = opts.get("overrides") or []
        if isinstance(overrides, str):
            overrides = [overrides]
        cur = PromptCurriculum.create(int(num_rows), int(batch_size), int(rollout_n), [str(o) for o in overrides],
                                      str(opts.get("algorithm", "prompt_gdro")), int(opts.get("seed", seed)),
                                      float(opts.get("success_threshold", 0.5)))
        return cls(cur)

    def next_prompts(self, count: int, uids: list[str]) -> tuple[list[int], list[int]]:
        """Rows and rollout counts for `count` new prompts named `uids`: a new block when none is
        outstanding, else the outstanding block grown (the host refills after dropping groups)."""
        if len(uids) != count:
            raise ValueError(f"GDRO: {count} prompts but {len(uids)} uids")
        if not self.curriculum.pending:
            if count != self.curriculum.batch_size:
                raise ValueError(f"GDRO: verl asked for {count} prompts to start a step; the curriculum makes blocks "
                                 f"of data.train_batch_size={self.curriculum.batch_size}")
            sched, first = self.curriculum.next_block(), 0
            self.slots, self.seen = {}, {}
        else:
            first = self.curriculum.pending[0].batch_size
            sched = self.curriculum.extend(count)
        for i, uid in enumerate(uids):
            self.slots[str(uid)] = first + i
        rows = [int(r) for r in sched.prompt_ids[first:].tolist()]
        counts = [int(n) for n in sched.rollouts[first:].tolist()]
        return rows, counts

    def tracks(self, uid: str) -> bool:
        return str(uid) in self.slots

    def collect(self, groups: dict[str, dict[int, float]], uids: Iterable[str] = ()) -> None:
        """Finished groups: uid -> session -> reward; `uids` named with no output at all stay NaN."""
        sched = self.curriculum.pending[0] if self.curriculum.pending else None
        for uid in {*map(str, uids), *groups}:
            slot = self.slots.get(uid)
            if sched is None or slot is None:
                continue
            n = int(sched.rollouts[slot])
            r = np.full(n, np.nan)
            for session, reward in groups.get(uid, {}).items():
                if 0 <= session < n:
                    r[session] = reward
            self.seen[slot] = r

    def finish_block(self) -> dict | None:
        """Observe the outstanding block; slots never seen count as unscored. The step record."""
        if not self.curriculum.pending:
            return None
        sched = self.curriculum.pending[0]
        groups = [(int(row), self.seen.get(slot, np.full(int(n), np.nan)))
                  for slot, (row, n) in enumerate(zip(sched.prompt_ids.tolist(), sched.rollouts.tolist()))]
        record = self.curriculum.observe_groups(groups, strict=True)
        self.slots, self.seen = {}, {}
        self.records.append(record)
        return record

    def metrics(self) -> dict:
        return {METRIC_PREFIX + k.removeprefix("gdro/"): v for k, v in self.curriculum.metrics().items()}

    def state_dict(self) -> dict:
        return {"curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.curriculum.load_state_dict(state["curriculum"], drop_pending=True)
        self.slots, self.seen = {}, {}


# ---------------------------------------------------------------------------- verl side
def _plain(value):
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:
        pass
    return value


def _check_trainer_setup(trainer, trainer_mode: str) -> None:
    if trainer_mode != "sync":
        raise ValueError(f"GDRO on verl's v1 trainer supports trainer.v1.trainer_mode=sync; got {trainer_mode!r} "
                         "(the async modes fetch prompts one by one and train them out of order)")
    rm = trainer.config.reward.reward_model
    if rm.get("enable", False) and not rm.get("enable_resource_pool", False):
        raise ValueError("GDRO on verl needs each group's rewards when it finishes: use a rule-based reward or "
                         "reward.reward_model.enable_resource_pool=True (a colocated reward model scores after sampling)")


def _gdro_state(trainer) -> VerlCurriculum:
    """The trainer's curriculum, built on first use (the dataset exists only after `init`)."""
    state = trainer.__dict__.get("_gdro")
    if state is None:
        cfg = trainer.config
        state = VerlCurriculum.create(len(trainer.train_dataset), int(cfg.data.train_batch_size),
                                      int(cfg.actor_rollout_ref.rollout.n), trainer.__dict__["_gdro_opts"],
                                      int(cfg.data.get("seed", 0) or 0))
        trainer._gdro = state
    return state


def _next_train_batch(self, num_prompts: int | None = None):
    """verl's `_next_train_batch`, with the rows and each row's rollout count from the curriculum."""
    import uuid

    import torch
    from verl.utils import tensordict_utils as tu
    from verl.utils.dataset.rl_dataset import collate_fn

    gdro = _gdro_state(self)
    count = int(self.config.data.train_batch_size if num_prompts is None else num_prompts)
    uids = [str(uuid.uuid4()) for _ in range(count)]
    rows, counts = gdro.next_prompts(count, uids)
    batch_dict = collate_fn([self.train_dataset[r] for r in rows])
    batch_dict["uid"] = np.array(uids, dtype=object)
    batch_dict["__rollout_n__"] = torch.tensor(counts, dtype=torch.int64)  # read per prompt by the agent loop
    batch = tu.get_tensordict(batch_dict)
    tu.assign_non_tensor_data(batch, "global_steps", self.global_steps)
    return batch


def _step_folder(trainer) -> str | None:
    t = trainer.config.trainer
    if t.resume_mode == "resume_path" and t.get("resume_from_path"):
        folder = str(t.resume_from_path)
    else:
        folder = os.path.join(str(t.default_local_dir), f"global_step_{trainer.global_steps}")
    return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)


def _bind(trainer) -> None:
    """Our methods on this one trainer instance (verl picks the trainer class from a fixed registry)."""
    save, load = trainer._save_checkpoint, trainer._load_checkpoint

    def _save_checkpoint(self):
        # ours first: verl marks the checkpoint complete (latest_checkpointed_iteration.txt) last
        folder = os.path.join(str(self.config.trainer.default_local_dir), f"global_step_{self.global_steps}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, STATE_FILE), "w") as f:
            json.dump(_gdro_state(self).state_dict(), f)
        save()

    def _load_checkpoint(self):
        load()
        if self.global_steps > 0:
            path = os.path.join(_step_folder(self), STATE_FILE)
            if os.path.isfile(path):
                with open(path) as f:
                    _gdro_state(self).load_state_dict(json.load(f))
            else:
                logging.getLogger(__name__).warning("GDRO: %s is missing; the curriculum starts afresh", path)

    trainer._next_train_batch = types.MethodType(_next_train_batch, trainer)
    trainer._save_checkpoint = types.MethodType(_save_checkpoint, trainer)
    trainer._load_checkpoint = types.MethodType(_load_checkpoint, trainer)


def _replay_buffer_class():
    check_verl_version()
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    class GDROReplayBuffer(ReplayBuffer):
        """verl's sync ReplayBuffer that reports every finished training group to the curriculum."""

        def __init__(self, trainer_mode, trainer_config, max_off_policy_threshold, max_off_policy_strategy,
                     sampler_kwargs, refill_fn=None, **kwargs):
            trainer = getattr(refill_fn, "__self__", None)
            if not isinstance(trainer, PPOTrainer):
                raise TypeError("GDROReplayBuffer is built by verl's v1 PPOTrainer (trainer.v1.sampler."
                                "custom_sampler); it needs refill_fn bound to that trainer")
            _check_trainer_setup(trainer, trainer_mode)
            # verl gives a custom sampler no DAPO / failed-group settings: the same ones its own buffer gets
            metric = trainer._resolve_filter_groups_metric()
            sampler_cfg = trainer.config.trainer.v1.sampler
            refill_failed = bool(sampler_cfg.get("sync_refill_failed_groups", False))
            fg = trainer.config.algorithm.get("filter_groups", None)
            kwargs.setdefault("filter_groups_metric", metric)
            kwargs.setdefault("sync_refill_failed_groups", refill_failed)
            kwargs.setdefault("train_batch_size", int(trainer.config.data.train_batch_size))
            kwargs.setdefault("gen_batch_size", 1 if metric is not None or refill_failed else
                              int(trainer.config.data.get("gen_batch_size", None) or trainer.config.data.train_batch_size))
            kwargs.setdefault("max_inflight_gen_batches", int(fg.get("max_inflight_gen_batches", 1))
                              if metric is not None else 1)
            super().__init__(trainer_mode, trainer_config, max_off_policy_threshold, max_off_policy_strategy,
                             sampler_kwargs, refill_fn=refill_fn, **kwargs)
            opts = _plain(sampler_kwargs) or {}
            cfg = trainer.config  # unknown options and bad keys fail here, at start (the dataset comes later)
            VerlCurriculum.create(2 * int(cfg.data.train_batch_size), int(cfg.data.train_batch_size),
                                  int(cfg.actor_rollout_ref.rollout.n), opts)
            trainer._gdro_opts = dict(opts)
            self.trainer = trainer
            _bind(trainer)

        @property
        def gdro(self) -> VerlCurriculum:
            return _gdro_state(self.trainer)

        def _observe_uids(self, partition_id: str, uids) -> None:
            import transfer_queue as tq

            uids = {str(u) for u in uids if self.gdro.tracks(u)} if partition_id == "train" else set()
            if not uids:
                return
            keys = [k for k in self.partitions[partition_id] if k.split("_")[0] in uids]
            rewards = []
            if keys:
                data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["rm_scores"])
                rewards = [float(v.sum().item()) for v in data["rm_scores"]]
            self.gdro.collect(rewards_by_uid(keys, rewards), uids)

        def _clear_groups(self, partition_id, uids):
            self._observe_uids(partition_id, uids)  # dropped groups (DAPO, surplus) still tell difficulty
            return super()._clear_groups(partition_id, uids)

        def _materialize_batch(self, partition_id, selected_prompt_uids, partition_snapshot):
            self._observe_uids(partition_id, selected_prompt_uids)
            return super()._materialize_batch(partition_id, selected_prompt_uids, partition_snapshot)

        def sample(self, global_steps, partition_id, batch_size):
            batch, metrics = super().sample(global_steps, partition_id, batch_size)
            if partition_id == "train" and self.gdro.finish_block() is not None:
                metrics = {**metrics, **self.gdro.metrics()}
            return batch, metrics

    GDROReplayBuffer.__module__ = __name__
    return GDROReplayBuffer


_BUILT: dict[str, type] = {}


def __getattr__(name: str):
    # verl's loader does getattr(module, "GDROReplayBuffer"): the class (and the version check) on first use
    if name == "GDROReplayBuffer":
        if name not in _BUILT:
            _BUILT[name] = _replay_buffer_class()
        return _BUILT[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
