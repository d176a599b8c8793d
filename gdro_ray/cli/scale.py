"""`gdro-ray scale --samplers N [--address ADDR]`: grow or shrink a running job's sampler pool
(`service/scale.py` says when the driver applies it)."""
from __future__ import annotations


def run(args) -> int:
    from gdro_ray.service.scale import request_scale

    n = request_scale(args.samplers, args.address, args.namespace)
    print(f"requested {n} samplers; the driver applies it before the next step")
    return 0
