"""The Ray service: adversary actor, sampler pool, learner group and the driver loop.

Actors are thin shells around plain objects (`gdro_ray.algorithms.adversary.Adversary`,
`gdro_ray.engines.*`, `gdro_ray.learner.LearnerWorker`) so the logic stays testable without Ray.
"""
