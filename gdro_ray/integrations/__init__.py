"""GDRO inside other RL frameworks, without Ray: the pure `Adversary` behind their extension points.

- `gdro_ray.integrations.curriculum`: the framework-neutral bridge (prompt blocks out, groups of
  rewards back, in the framework's order and with its lag);
- `gdro_ray.integrations.trl`: Prompt-GDRO driving TRL's `GRPOTrainer` (a sampler plus a reward
  function wrapper);
- `gdro_ray.integrations.verl`: a curriculum sampler for verl's `data.sampler.class_path` and
  the per-row repeat that Rollout-GDRO needs in verl's trainer.

Neither framework is imported by this package until one of its adapters is used. See
docs/integrations.md.
"""
