"""Prompt-GDRO (with the online difficulty classifier) driving TRL's `GRPOTrainer`.

Two hooks of TRL (read in trl 1.16: `trl/trainer/grpo_trainer.py`, `trl/trainer/utils.py`):

- **Which prompts.** `GRPOTrainer._get_train_sampler` returns a `RepeatSampler`; our
  `GDROPromptSampler` keeps its contract (each row index `num_generations` times in a row,
  `generation_batch_size // num_generations` distinct rows per block, every block repeated
  `num_iterations * steps_per_generation` times, the same on every process) but asks the
  Adversary for each block's rows when the block starts: Prompt-GDRO resamples the batch from
  its distribution q over difficulty bins.
- **What happened.** TRL calls each reward function with the batch's dataset columns. The
  dataset gets a row-number column (`add_row_ids`), and `GDRORewardObserver` wraps the reward
  function that says whether a completion is correct: it returns that function's rewards
  unchanged and reports each group's rewards (gathered over processes) to the curriculum.
  Calls that are not a training block (evaluation) are recognised and ignored.

Rollout-GDRO (a different number of rollouts per prompt) is not offered for TRL: TRL's groups
have one fixed size, `num_generations` (`RepeatSampler.mini_repeat_count`, and the advantage's
`rewards.view(-1, num_generations)`), so variable group sizes would need a fork of the trainer.
Prompt-GDRO's reweight mode (advantages × q) is not offered either; the sampler applies q by
resampling, our default.

Refused at construction, one line each: rewards an environment supplies (`environment_factory`,
`reward_funcs=None`: there is no correctness function to observe) and an `IterableDataset` (TRL
streams it past the sampler). TRL's `AsyncGRPOTrainer` draws prompts inside its own rollout
worker and has no sampler hook, so the curriculum cannot drive it.

No Ray. TRL is imported only when `GDROGRPOTrainer` is first used. See docs/integrations.md.
"""
from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Callable, Sequence

from torch.utils.data import Sampler

from gdro_ray.integrations.curriculum import PromptCurriculum

ROW_COLUMN = "gdro_row"
STATE_FILE = "gdro_curriculum.json"

# GDROGRPOTrainer subclasses TRL's trainer, so it is built on first access (`__getattr__` below).
__all__ = ["ROW_COLUMN", "AsyncGDRORewardObserver", "GDROGRPOTrainer", "GDROPromptSampler",  # noqa: F822
           "GDRORewardObserver", "PromptCurriculum", "add_row_ids", "check_trl_setup", "observer_for"]


def add_row_ids(dataset, column: str = ROW_COLUMN):
    """The `datasets.Dataset` with its row numbers in `column` (what the reward observer reads)."""
    if column in dataset.column_names:
        raise ValueError(f"add_row_ids: the dataset already has a column {column!r}")
    return dataset.map(lambda _row, i: {column: i}, with_indices=True)


class GDROPromptSampler(Sampler):
    """TRL's RepeatSampler layout, with each block's rows chosen by the curriculum when it starts."""

    def __init__(self, curriculum: PromptCurriculum, num_rows: int, mini_repeat_count: int, batch_size: int,
                 repeat_count: int = 1):
        if batch_size != curriculum.batch_size:
            raise ValueError(f"GDRO sampler: TRL makes blocks of {batch_size} prompts (generation_batch_size // "
                             f"num_generations) but the curriculum was built for batch_size={curriculum.batch_size}")
        if num_rows != curriculum.adversary.num_prompts:
            raise ValueError(f"GDRO sampler: the dataset has {num_rows} rows, the curriculum "
                             f"{curriculum.adversary.num_prompts}")
        self.curriculum = curriculum
        self.num_rows, self.mini_repeat_count = int(num_rows), int(mini_repeat_count)
        self.batch_size, self.repeat_count = int(batch_size), int(repeat_count)

    def __len__(self) -> int:  # as RepeatSampler: whole blocks per pass over the dataset
        return (self.num_rows // self.batch_size) * self.batch_size * self.mini_repeat_count * self.repeat_count

    def __iter__(self):
        for _ in range(self.num_rows // self.batch_size):
            sched = self.curriculum.next_block()  # lazily: the block before has been reported by now
            block = [int(row) for row in sched.prompt_ids.tolist() for _ in range(self.mini_repeat_count)]
            for _ in range(self.repeat_count):
                yield from block


def _gather_over_processes(values: list, gather: Callable[[list], list] | None) -> list:
    return list(gather(values)) if gather is not None else values


def is_async_callable(fn) -> bool:
    """Whether calling `fn` returns a coroutine (an `async def` function, or an object whose
    `__call__` is one): what TRL awaits."""
    call = type(fn).__call__ if callable(fn) and not inspect.isfunction(fn) else None
    return inspect.iscoroutinefunction(fn) or (call is not None and inspect.iscoroutinefunction(call))


class GDRORewardObserver:
    """A TRL reward function that returns `reward_func`'s rewards and reports them to the curriculum.

    A completion counts as solved when its reward is ≥ the curriculum's `success_threshold`; a
    reward of None (TRL: "not applicable") is left out of the curriculum's statistics, so prompts
    the function does not cover are not taken for hard ones. `gather` concatenates a list over
    processes in rank order (the trainer's `accelerator.gather_object`); None on one process.
    An `async def` reward function gets an observer TRL awaits (`observer_for`).
    """

    def __init__(self, reward_func: Callable, curriculum: PromptCurriculum | Callable[[], PromptCurriculum],
                 num_generations: int, row_column: str = ROW_COLUMN, gather: Callable[[list], list] | None = None):
        self.reward_func, self._curriculum = reward_func, curriculum
        self.num_generations, self.row_column, self.gather = int(num_generations), row_column, gather
        # TRL names reward functions by __name__ in its logs; keep the wrapped function's
        self.__name__ = getattr(reward_func, "__name__", type(reward_func).__name__)
        self.records: list[dict] = []  # the step records of the blocks observed so far

    @property
    def curriculum(self) -> PromptCurriculum:
        return self._curriculum if isinstance(self._curriculum, PromptCurriculum) else self._curriculum()

    def __call__(self, prompts=None, completions=None, **kwargs):
        rewards = self.reward_func(prompts=prompts, completions=completions, **kwargs)
        return self._observe(rewards, kwargs)

    def _observe(self, rewards, kwargs):
        rows = kwargs.get(self.row_column)
        if rows is None:
            raise ValueError(f"GDRO reward observer: the batch has no {self.row_column!r} column; "
                             "pass add_row_ids(dataset) as train_dataset")
        # None: TRL's "not applicable", left out of the curriculum's statistics (NaN); a non-finite number fails
        values = [math.nan if r is None else float(r) if math.isfinite(float(r)) else 0.0 for r in rewards]
        rows = _gather_over_processes([int(r) for r in rows], self.gather)
        values = _gather_over_processes(values, self.gather)
        record = self.curriculum.observe_stream(rows, values, self.num_generations)
        if record is not None:
            self.records.append(record)
        return rewards


class AsyncGDRORewardObserver(GDRORewardObserver):
    """The observer of an `async def` reward function: TRL awaits it, it awaits the function."""

    async def __call__(self, prompts=None, completions=None, **kwargs):
        rewards = await self.reward_func(prompts=prompts, completions=completions, **kwargs)
        return self._observe(rewards, kwargs)


def observer_for(reward_func: Callable, curriculum, num_generations: int, **kw) -> GDRORewardObserver:
    """The observer that fits `reward_func`: awaited by TRL when the function is `async`."""
    cls = AsyncGDRORewardObserver if is_async_callable(reward_func) else GDRORewardObserver
    return cls(reward_func, curriculum, num_generations, **kw)


def check_trl_setup(reward_funcs, train_dataset, observe: int, kwargs: dict) -> list:
    """The reward functions as a list, or a one-line ValueError for a setup the curriculum cannot
    drive: no reward function to observe (rewards an environment supplies, `environment_factory`),
    an index that is not a plain callable, an iterable dataset (TRL then bypasses the sampler)."""
    if reward_funcs is None or kwargs.get("environment_factory") is not None:
        raise ValueError("GDROGRPOTrainer: the curriculum observes a correctness reward function in reward_funcs; "
                         "rewards supplied by an environment (environment_factory, reward_funcs=None) are not "
                         "supported")
    funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    if not 0 <= observe < len(funcs) or not callable(funcs[observe]) or hasattr(funcs[observe], "config"):
        raise ValueError(f"gdro_observe={observe}: must index a reward function (a plain callable, "
                         "not a reward model) in reward_funcs")
    if train_dataset is None or not hasattr(train_dataset, "__len__") or not hasattr(train_dataset, "__getitem__"):
        raise ValueError("GDROGRPOTrainer: train_dataset must be a map-style dataset with row numbers "
                         "(add_row_ids(datasets.Dataset)); an IterableDataset or a generator has no rows for "
                         "the curriculum to choose, and TRL streams it past the sampler")
    return funcs


def _trainer_class():
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    class _SaveCurriculum(TrainerCallback):
        """Writes the curriculum's state beside every TRL checkpoint (checkpoint-<step>/)."""

        def __init__(self, trainer):
            self.trainer = trainer

        def on_save(self, args, state, control, **kwargs):
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if self.trainer.accelerator.is_main_process and os.path.isdir(folder):
                tmp = os.path.join(folder, STATE_FILE + ".tmp")
                with open(tmp, "w") as f:
                    json.dump(self.trainer.curriculum.state_dict(), f)
                os.replace(tmp, os.path.join(folder, STATE_FILE))

    class GDROGRPOTrainer(GRPOTrainer):
        """`GRPOTrainer` whose prompts Prompt-GDRO chooses.

        Extra keyword arguments: `gdro_overrides` (our config keys, e.g. `["prompt_gdro.eta=0.5"]`),
        `gdro_algorithm` (`prompt_gdro`, or `grpo` for the same plumbing with uniform prompts),
        `gdro_observe` (index into `reward_funcs` of the correctness reward, default 0),
        `gdro_success_threshold` (default 0.5), or a ready `curriculum`. `train_dataset` must
        carry the row-number column (`add_row_ids`).
        """

        def __init__(self, model, reward_funcs, args=None, *rest, curriculum: PromptCurriculum | None = None,
                     gdro_overrides: Sequence[str] = (), gdro_algorithm: str = "prompt_gdro", gdro_observe: int = 0,
                     gdro_success_threshold: float = 0.5, **kwargs):
            funcs = check_trl_setup(reward_funcs, kwargs.get("train_dataset", rest[0] if rest else None),
                                    gdro_observe, kwargs)
            self.curriculum = curriculum
            self._gdro_spec = (list(gdro_overrides), gdro_algorithm, float(gdro_success_threshold))
            self.gdro_observer = observer_for(funcs[gdro_observe], lambda: self.curriculum,
                                              getattr(args, "num_generations", None) or 1, gather=self._gdro_gather)
            funcs[gdro_observe] = self.gdro_observer
            super().__init__(model, funcs, args, *rest, **kwargs)
            self.gdro_observer.num_generations = self.num_generations
            self.add_callback(_SaveCurriculum(self))

        def _gdro_gather(self, values: list) -> list:
            """`values` of every process, concatenated in rank order (TRL splits a block over processes)."""
            if self.accelerator.num_processes == 1:
                return values
            from accelerate.utils import gather_object

            return gather_object(values)

        def _get_train_sampler(self, dataset=None):
            dataset = self.train_dataset if dataset is None else dataset
            block = self.args.generation_batch_size // self.num_generations
            if self.curriculum is None:
                overrides, algorithm, threshold = self._gdro_spec
                self.curriculum = PromptCurriculum.create(len(dataset), block, self.num_generations, overrides,
                                                          algorithm, self.args.seed, threshold)
            return GDROPromptSampler(self.curriculum, len(dataset), self.num_generations, block,
                                     self.num_iterations * self.args.steps_per_generation)

        def train(self, resume_from_checkpoint=None, *args, **kwargs):
            if resume_from_checkpoint:
                # the curriculum decides what comes next: TRL's replay of the epoch's first batches
                # would draw (and never report) blocks of its own
                self.args.ignore_data_skip = True
                from transformers.trainer_utils import get_last_checkpoint

                folder = (get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True
                          else resume_from_checkpoint)
                path = os.path.join(folder or "", STATE_FILE)
                if os.path.isfile(path):
                    if self.curriculum is None:
                        self._get_train_sampler()  # builds the curriculum the state belongs to
                    with open(path) as f:
                        self.curriculum.load_state_dict(json.load(f))
            return super().train(resume_from_checkpoint, *args, **kwargs)

    return GDROGRPOTrainer


_CLASS = None


def __getattr__(name: str):
    global _CLASS
    if name == "GDROGRPOTrainer":
        if _CLASS is None:
            _CLASS = _trainer_class()
        return _CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
