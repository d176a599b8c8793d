"""Grow or shrink a running job's sampler pool (`gdro-ray scale --samplers N`, `cli/scale.py`).

The request goes to the job's adversary actor (found by name); the driver reads it before it
hands out the next step and resizes the pool then. New samplers are built with the current
weights and join as soon as their placement group is placed (on a cluster with an
autoscaler: when a node arrives); removed ones have no work in flight at that point.
"""
from __future__ import annotations

from gdro_ray.errors import UserError


def request_scale(n: int, address: str | None = None, namespace: str = "gdro_ray") -> int:
    """Ask the running job for `n` samplers; returns n. Works from any process of the cluster
    (an already connected one, e.g. a notebook that started the trainer, skips the connect)."""
    import ray

    from gdro_ray.errors import NoJobError
    from gdro_ray.service.adversary_actor import ACTOR_NAME
    from gdro_ray.service.connect import find_adversary

    if ray.is_initialized():
        try:
            actor = ray.get_actor(ACTOR_NAME, namespace=namespace)
        except ValueError:
            raise NoJobError(f"no gdro_ray job is running on this Ray cluster (no actor '{ACTOR_NAME}' "
                             f"in namespace '{namespace}')") from None
    else:
        actor = find_adversary(address, namespace)
    try:
        return ray.get(actor.request_samplers.remote(int(n)))
    except ray.exceptions.RayTaskError as e:
        raise UserError(str(e.cause) if getattr(e, "cause", None) else str(e).splitlines()[-1]) from None
