r"""Rewards: the default verifier (the last ``\boxed{}`` of a response against the reference answer,
`math_reward.py`) and user reward functions (`reward.function`, `custom.py`; examples in `examples/`)."""
from gdro_ray.rewards.math_reward import (
    batch_math_reward,
    extract_boxed,
    math_reward,
    reset_reward_stats,
    reward_stats,
)

__all__ = ["math_reward", "batch_math_reward", "extract_boxed", "reward_stats", "reset_reward_stats"]
