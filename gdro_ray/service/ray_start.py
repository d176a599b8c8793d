"""Starting Ray for a run: joining a cluster, or a local (embedded) Ray closed to the network.

A local Ray listens on loopback only. By default Ray binds its GCS, raylet, workers and agents to
every interface and, for a local start, runs without authentication: anyone who can reach the
machine could read and write the control plane (the key-value store holds the job's pickled
functions). Ray has a mode for machines that are not meant to form clusters (its macOS/Windows
default) in which the node address is loopback and every server binds there; a local run turns
it on for itself and its workers. The collective libraries are told the same: gloo and NCCL pick
their interface from the host name otherwise, and vLLM its own address.

Ray's processes start in, and put on their workers' path, the folder the driver stands in: a
json.py or struct.py planted there would run inside them (and in whatever they start with
`python -m`). A local Ray starts in the private temp root instead; the driver's paths are absolute.
"""
from __future__ import annotations

import os
import socket

from gdro_ray.config import Config, ConfigError
from gdro_ray.errors import UserError

# Forwarded to every actor, wherever it runs.
ENV_FORWARD = ("TMPDIR", "RAY_TMPDIR", "HF_HUB_OFFLINE", "HF_HOME", "GDRO_RAY_CACHE", "VLLM_ENABLE_V1_MULTIPROCESSING",
               "VLLM_CPU_KVCACHE_SPACE", "TOKENIZERS_PARALLELISM", "RAY_AUTH_MODE")


def init_ray(cfg: Config) -> None:
    """Join `cluster.address` (or RAY_ADDRESS), else start a local Ray on loopback; then check
    the cluster can hold the run's actors."""
    import ray

    need = cfg.sampler.num_samplers * cfg.sampler.num_cpus + cfg.learner.world_size * cfg.learner.num_cpus
    if ray.is_initialized():
        pass
    elif cfg.cluster.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=cfg.cluster.address or None, namespace="gdro_ray", log_to_driver=cfg.cluster.actor_logs)
    else:
        _start_local(cfg, need)
    total = ray.cluster_resources().get("CPU", 0)
    if need > total and not cfg.cluster.address:
        raise ConfigError(f"sampler.num_samplers: {cfg.sampler.num_samplers} samplers × {cfg.sampler.num_cpus} CPU "
                          f"+ {cfg.learner.world_size} learner ranks need {need:g} CPUs; the cluster has {total:g}")


def _start_local(cfg: Config, need: float) -> None:
    import ray

    # Logical CPUs may exceed physical ones: actors mostly wait on each other in turn.
    ncpu = cfg.cluster.num_cpus or max(os.cpu_count() or 1, int(need + 0.999))
    loopback_only()
    start_orphan_reaper()
    here = os.getcwd()
    os.chdir(os.environ.get("TMPDIR") or here)
    try:  # address="local": always a fresh embedded cluster, never someone else's under the same RAY_TMPDIR
        ray.init(address="local", num_cpus=ncpu, include_dashboard=False, namespace="gdro_ray",
                 log_to_driver=cfg.cluster.actor_logs, _node_ip_address="127.0.0.1",
                 runtime_env={"env_vars": {**{k: os.environ[k] for k in ENV_FORWARD if k in os.environ},
                                           **loopback_env()}})
    except Exception as e:  # Ray's own start-up: a busy machine past its 30 s limit, a full disk
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"local Ray did not start ({type(e).__name__}: {first}); if the machine is busy, "
                        "try again when it is quieter") from None
    finally:
        os.chdir(here)
    print("local Ray: every port on 127.0.0.1 (no dashboard); cluster.address= joins a cluster with token auth",
          flush=True)


# Ray reads this at import time (ray_constants) and where it resolves the node address.
_RAY_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_interface() -> str:
    """The name of the loopback interface (`lo` on Linux)."""
    names = {name for _, name in socket.if_nameindex()}
    return "lo" if "lo" in names else next((n for n in sorted(names) if n.startswith("lo")), "lo")


def loopback_env() -> dict[str, str]:
    """What every process of a local run needs to stay on loopback (inherited by Ray's workers)."""
    lo = loopback_interface()
    return {_RAY_SINGLE_MACHINE: "0", "GLOO_SOCKET_IFNAME": lo, "NCCL_SOCKET_IFNAME": lo,
            "VLLM_HOST_IP": "127.0.0.1"}


def loopback_only() -> None:
    """Before `ray.init` of a local run: this process and its children bind loopback only."""
    os.environ.update(loopback_env())
    import ray._private.ray_constants as ray_constants  # read at call time by Ray's address lookup

    ray_constants.ENABLE_RAY_CLUSTER = False


# ---- orphans -------------------------------------------------------------------------------------
# A driver killed hard (SIGKILL, OOM) leaves Ray's agents running for a minute or more: they notice
# the raylet's death late and then retry the dead GCS. Every process of a local run inherits a
# marker in its environment (which, unlike the command line, Ray's process titles do not rewrite);
# a small watcher outlives the driver and ends whatever still carries the marker.
SESSION_MARK = "GDRO_RAY_LOCAL_SESSION"

_REAPER = r"""
import os, signal, sys, time
driver, mark = int(sys.argv[1]), sys.argv[2].encode()
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
def marked():
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if mark in f.read().split(b"\0"):
                        out.append(int(entry))
            except OSError:
                pass
    return out
while alive(driver):
    time.sleep(0.5)
time.sleep(2.0)  # a clean shutdown finishes by itself
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in marked():
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    time.sleep(1.0)
"""


def start_orphan_reaper() -> None:
    """Mark this run's processes and start the watcher that ends them once this process is gone."""
    import subprocess
    import sys
    import uuid

    token = os.environ.get(SESSION_MARK, "")
    if token.startswith(f"{os.getpid()}-"):  # this process has its watcher already (several runs in one process)
        return
    token = f"{os.getpid()}-{uuid.uuid4().hex}"  # a child driver never reuses its parent's mark
    os.environ[SESSION_MARK] = token
    env = {k: v for k, v in os.environ.items() if k != SESSION_MARK}
    subprocess.Popen([sys.executable, "-I", "-c", _REAPER, str(os.getpid()), f"{SESSION_MARK}={token}"], env=env,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)
