"""Pure controllers and math of GDRO (numpy only: importing this package never imports ray or torch).

- `DifficultyClassifier`: prompt id → difficulty bin by a windowed pass@k.
- `PromptGDRO`: exponential-weights data adversary over the groups.
- `RolloutGDRO`: shadow-price (or knapsack, `knapsack.py`) rollout allocator under a fixed mean budget.

Each is described, with where it departs from the paper's released code, in docs/algorithms.md.
- `ProgressTracker` (`progress.py`): signed learning progress per prompt and group.
- `difficulty_signal`: per-prompt signals that feed Prompt-GDRO.
- `pass_at_k`, `pass_at_k_array`, `beta_pass_at_k`, `mean_at_k`: estimators.
- `to_jsonable`: a controller's state_dict as plain JSON-able Python.

The torch GRPO loss lives in `gdro_ray.algorithms.grpo` and is imported from there directly.
"""
from gdro_ray.algorithms.classifier import DEFAULT_EDGES, DifficultyClassifier
from gdro_ray.algorithms.passk import beta_pass_at_k, mean_at_k, pass_at_k, pass_at_k_array
from gdro_ray.algorithms.prompt_gdro import PromptGDRO
from gdro_ray.algorithms.rollout_gdro import RolloutGDRO
from gdro_ray.algorithms.signals import SIGNAL_KINDS, difficulty_signal, group_advantages
from gdro_ray.algorithms.state import to_jsonable

__all__ = [
    "DEFAULT_EDGES", "DifficultyClassifier", "PromptGDRO", "RolloutGDRO", "SIGNAL_KINDS",
    "beta_pass_at_k", "difficulty_signal", "group_advantages", "mean_at_k", "pass_at_k",
    "pass_at_k_array", "to_jsonable",
]
