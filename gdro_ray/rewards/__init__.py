r"""Rewards: the default verifier (the last ``\boxed{}`` of a response against the reference answer,
`math_reward.py`, its time-limited slow path in `verify.py`) and user reward functions
(`reward.function`, `custom.py`; examples in `examples/`).

Nothing is re-exported here: a function named `math_reward` would shadow the submodule of that
name, and the worker pool would have to reach the module around it. Import from the submodules.
"""
