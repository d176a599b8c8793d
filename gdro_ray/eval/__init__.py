"""Evaluation of checkpoints: mean@k and unbiased pass@k per dataset, per tier and pooled.

The code lives in `gdro_ray.eval.evaluate` (`evaluate`, `evaluate_engine`, `aggregate`); the
command `gdro-ray eval` is `gdro_ray/cli/eval.py`. Nothing is re-exported here: a function named
`evaluate` would shadow the submodule of the same name.
"""
