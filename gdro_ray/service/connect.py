"""Find the running job's adversary actor from another process (`status`, `scale`)."""
from __future__ import annotations

import os
import socket
import tempfile
from contextlib import contextmanager

from gdro_ray.errors import NoJobError, UserError
from gdro_ray.service.adversary_actor import ACTOR_NAME, NAMESPACE


def _reachable(addr: str, timeout_s: float = 3.0) -> bool:
    """A plain TCP probe of host:port: Ray's own connect retries for minutes on a dead address."""
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


_LOOPBACK_HEX = ("0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000")


def _listens_on_loopback_only(addr: str) -> bool:
    """The GCS at a loopback `addr` is a local run's single-machine Ray (bound to 127.0.0.1 only),
    not a `ray start` cluster listening on every interface: read from the kernel's socket tables."""
    host, _, port = addr.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "[::1]") or not port.isdigit():
        return False
    kinds = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            ip, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == int(port):
                kinds.add("loopback" if ip in _LOOPBACK_HEX else "other")
    return kinds == {"loopback"}


@contextmanager
def _stderr_held():
    """Hold what native code writes to fd 2 during the block: replayed if the block succeeds,
    dropped if it raises (the one-line error then says what went wrong instead)."""
    fd, path = tempfile.mkstemp(prefix="gdro-connect.", suffix=".log")
    os.unlink(path)  # the open descriptor is all we need
    saved = os.dup(2)
    os.dup2(fd, 2)
    ok = False
    try:
        yield
        ok = True
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        try:
            if ok:
                os.lseek(fd, 0, os.SEEK_SET)
                while chunk := os.read(fd, 1 << 16):
                    os.write(2, chunk)
        finally:
            os.close(fd)


def find_adversary(address: str | None, namespace: str = NAMESPACE):
    import ray

    addr = address or os.environ.get("RAY_ADDRESS") or "auto"
    if addr == "auto":  # the newest cluster started here, as Ray's own lookup finds it
        from ray._private.services import get_ray_address_from_environment

        try:
            addr = get_ray_address_from_environment("auto", None) or "auto"
        except Exception:  # noqa: BLE001 - nothing recorded: Ray's own connect says so below
            addr = "auto"
    if _listens_on_loopback_only(addr):
        # a local run's Ray lives on loopback only (ray_start.py); a client must take the same address
        from gdro_ray.service.ray_start import loopback_only

        loopback_only()
    probed = addr != "auto" and not addr.startswith(("ray://", "http"))
    if probed and not _reachable(addr):
        raise NoJobError(f"no Ray cluster answers at {addr!r}; is a job running?")
    refused = UserError(f"the Ray cluster at {addr!r} refused this client: it needs the cluster's token "
                        "(RAY_AUTH_MODE=token with ~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH; "
                        "docs/deploy.md §2)")
    try:
        with _stderr_held():  # Ray's C++ client logs a warning a second while a token cluster refuses it
            ray.init(address=addr, namespace=namespace, logging_level="ERROR", log_to_driver=False)
    except ray.exceptions.AuthenticationError:
        raise refused from None
    except (ConnectionError, RuntimeError) as e:
        if probed:  # the port answered, yet Ray would not connect: a token-auth cluster refusing this client
            raise UserError(f"the Ray cluster at {addr!r} answers but did not accept this client; a cluster with "
                            "token authentication needs RAY_AUTH_MODE=token and its token (~/.ray/auth_token, "
                            "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH; docs/deploy.md §2)") from None
        raise NoJobError(f"no Ray cluster at {addr!r} ({str(e).splitlines()[0]}); is a job running?") from None
    try:
        return ray.get_actor(ACTOR_NAME, namespace=namespace)
    except ray.exceptions.AuthenticationError:
        raise refused from None
    except ValueError:
        raise NoJobError(f"no gdro_ray job is running on the cluster at {addr!r} "
                         f"(no actor '{ACTOR_NAME}' in namespace '{namespace}')") from None
