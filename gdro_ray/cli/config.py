"""`gdro-ray config`: print the resolved config, or the reference of every key."""
from __future__ import annotations

from gdro_ray.config import dump_config, load_config
from gdro_ray.config.loader import describe_keys


def run(args) -> int:
    if args.keys:
        for key, default, help in describe_keys():
            print(f"{key:32s} {default:>14s}  {help}")
        return 0
    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0
