"""GDRO inside other RL frameworks, without Ray: the pure `Adversary` behind their extension points.

- `gdro_ray.integrations.curriculum`: the framework-neutral bridge (prompt blocks out, groups of
  rewards back, in the framework's order and with its lag);
- `gdro_ray.integrations.trl`: Prompt-GDRO driving TRL's `GRPOTrainer` (a sampler plus a reward
  function wrapper);
- `gdro_ray.integrations.verl_v1`: Prompt-GDRO and Rollout-GDRO in verl 0.9's v1 trainer, through
  the replay buffer it builds from `trainer.v1.sampler.custom_sampler`.

Neither framework is imported by this package until one of its adapters is used. See
docs/integrations.md.
"""
