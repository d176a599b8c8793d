"""Find the running job's adversary actor from another process (`status`, `scale`)."""
from __future__ import annotations

import os
import socket

from gdro_ray.errors import NoJobError
from gdro_ray.service.adversary_actor import ACTOR_NAME, NAMESPACE


def _reachable(addr: str, timeout_s: float = 3.0) -> bool:
    """A plain TCP probe of host:port: Ray's own connect retries for minutes on a dead address."""
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def find_adversary(address: str | None, namespace: str = NAMESPACE):
    import ray

    addr = address or os.environ.get("RAY_ADDRESS") or "auto"
    if addr != "auto" and not addr.startswith(("ray://", "http")) and not _reachable(addr):
        raise NoJobError(f"no Ray cluster answers at {addr!r}; is a job running?")
    try:
        ray.init(address=addr, namespace=namespace, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError) as e:
        raise NoJobError(f"no Ray cluster at {addr!r} ({str(e).splitlines()[0]}); is a job running?") from None
    try:
        return ray.get_actor(ACTOR_NAME, namespace=namespace)
    except ValueError:
        raise NoJobError(f"no gdro_ray job is running on the cluster at {addr!r} "
                         f"(no actor '{ACTOR_NAME}' in namespace '{namespace}')") from None
