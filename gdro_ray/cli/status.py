"""`gdro-ray status [--address ADDR] [--namespace NS]`: the running job's adversary state as a table."""
from __future__ import annotations


def run(args) -> int:
    import ray

    from gdro_ray.metrics.status import render_status
    from gdro_ray.service.connect import find_adversary

    actor = find_adversary(args.address, args.namespace)
    print(render_status(ray.get(actor.status.remote())))
    return 0
