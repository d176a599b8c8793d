"""`gdro-ray scale --samplers N`: grow or shrink a running job's sampler pool.

The request goes to the adversary actor; the driver applies it between steps (new samplers
load the current weights before they take work; removed ones are idle at that point).
"""
from __future__ import annotations

from gdro_ray.errors import UserError


def request_scale(n: int, address: str | None = None, namespace: str = "gdro_ray") -> int:
    import ray

    from gdro_ray.service.connect import find_adversary

    actor = find_adversary(address, namespace)
    try:
        return ray.get(actor.request_samplers.remote(n))
    except ray.exceptions.RayTaskError as e:
        raise UserError(str(e.cause) if getattr(e, "cause", None) else str(e).splitlines()[-1]) from None


def cli_main(args) -> int:
    n = request_scale(args.samplers, args.address, args.namespace)
    print(f"requested {n} samplers; the driver applies it before the next step")
    return 0
