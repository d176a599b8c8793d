"""A private torch.distributed group that broadcasts weights from learner rank 0 to samplers.

Used by the collective weight transport (`gdro_ray.service.weight_transport`); torch only,
no Ray, so the learner worker, the engines and vLLM's worker extension can all import it.

Why a private group: FSDP2 owns the learner's default process group and vLLM may own the
sampler's, so this group is built directly from a `TCPStore` (`ProcessGroupGloo` or
`ProcessGroupNCCL` on a `PrefixStore`), never through `init_process_group`. Learner rank 0
hosts the store (one server for the whole run) and is rank 0 of every group; samplers are
ranks 1..n. Each membership change opens a new group under a fresh store prefix (a
"generation"), so a stale member of an old group can never meet a new one.

Wire format (`flatten_buckets`): the published state dict is packed into flat buffers, one
dtype per buffer, a new buffer starting when the next tensor would pass `bucket_bytes`.
Buffers travel as byte views (`uint8`), which every backend can broadcast whatever the
dtype. The layout — per bucket its dtype, byte size and (name, shape, offset, numel) of each
tensor — is plain JSON-able data sent beside the broadcast (through the Ray call), so a
receiver allocates exactly the right buffers and `unflatten_buckets` returns views into
them: no copy and no serialisation round trip on the receiving side.

Failure model: every group has a timeout (store waits and collective waits), so a member
that died mid-broadcast makes the others raise (gloo reports "connection closed" at once;
NCCL reaches the timeout and the group is aborted) instead of hanging the run. For NCCL two
more things make that true, for this group only (FSDP2's group keeps torch's defaults):
- torch's watchdog would kill the whole process on a timed-out collective by default; this
  group is built with TORCH_NCCL_ASYNC_ERROR_HANDLING=2 (abort the communicator, raise in the
  caller), so learner rank 0 survives a sampler that died and the object-store fallback runs;
- communicator start-up (lazy, at the first collective) has no time limit of its own: the
  communicator is non-blocking (`config.blocking = 0`) and is started at once by a one-byte
  broadcast that must finish within the group's timeout, else the group is aborted.

The store server binds to the address it is given (a pre-bound socket handed to `TCPStore`);
by itself it would listen on every interface.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger("gdro_ray.weight_group")


# ---- buckets ------------------------------------------------------------------------------------
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"weight layout: unknown dtype {name!r}")
    return dtype


def flatten_buckets(named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> tuple[list[torch.Tensor], dict]:
    """Pack tensors into flat per-dtype buffers of at most `bucket_bytes` (one tensor may exceed it).

    Returns (buffers, layout); `unflatten_buckets(buffers, layout)` gives the tensors back in order.
    """
    by_dtype: dict[torch.dtype, list[list]] = {}  # dtype -> buckets, each [bytes so far, [(name, tensor)]]
    for name, tensor in named:
        t = tensor.detach()
        nbytes = t.numel() * t.element_size()
        groups = by_dtype.setdefault(t.dtype, [[0, []]])
        if groups[-1][1] and groups[-1][0] + nbytes > bucket_bytes:
            groups.append([0, []])
        groups[-1][0] += nbytes
        groups[-1][1].append((name, t))
    buffers, buckets = [], []
    for dtype, groups in by_dtype.items():
        for _, group in groups:
            flat = torch.cat([t.reshape(-1).cpu() for _, t in group]).contiguous()
            entries, offset = [], 0
            for name, t in group:
                entries.append([name, list(t.shape), offset, t.numel()])
                offset += t.numel()
            buffers.append(flat)
            buckets.append({"dtype": _dtype_name(dtype), "nbytes": flat.numel() * flat.element_size(),
                            "tensors": entries})
    return buffers, {"buckets": buckets, "nbytes": sum(b["nbytes"] for b in buckets)}


def unflatten_buckets(buffers: list[torch.Tensor], layout: dict) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) views into the buffers (given as byte or typed buffers), in layout order."""
    if len(buffers) != len(layout["buckets"]):
        raise ValueError(f"weight layout names {len(layout['buckets'])} buckets, got {len(buffers)} buffers")
    out = []
    for buf, bucket in zip(buffers, layout["buckets"]):
        dtype = _dtype(bucket["dtype"])
        typed = buf.view(torch.uint8).view(dtype) if buf.dtype != dtype else buf
        for name, shape, offset, numel in bucket["tensors"]:
            out.append((name, typed.narrow(0, offset, numel).view(shape)))
    return out


# ---- groups -------------------------------------------------------------------------------------
_ENV_LOCK = threading.Lock()  # the NCCL error-handling mode is read from the environment at construction
NCCL_ERROR_HANDLING = "2"     # TORCH_NCCL_ASYNC_ERROR_HANDLING: abort the communicator, keep the process


def new_group(store, spec: dict, device: torch.device | str | None = None):
    """A process group on `store` under `spec["prefix"]`: rank/world_size/backend/timeout_s from spec.

    Every member calls it once per group. NCCL groups are started before returning (on `device`,
    this member's card), within the timeout; see the module docstring.
    """
    timeout = timedelta(seconds=float(spec["timeout_s"]))
    prefixed = dist.PrefixStore(spec["prefix"], store)
    if spec["backend"] == "gloo":
        from torch._C._distributed_c10d import ProcessGroupGloo

        return ProcessGroupGloo(prefixed, int(spec["rank"]), int(spec["world_size"]), timeout)
    if spec["backend"] == "nccl":
        from torch._C._distributed_c10d import ProcessGroupNCCL

        opts = ProcessGroupNCCL.Options()
        opts._timeout = timeout
        opts.config.blocking = 0  # non-blocking communicator: its start-up can be aborted
        with _ENV_LOCK:
            before = os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING")
            os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = NCCL_ERROR_HANDLING
            try:
                pg = ProcessGroupNCCL(prefixed, int(spec["rank"]), int(spec["world_size"]), opts)
            finally:
                if before is None:
                    os.environ.pop("TORCH_NCCL_ASYNC_ERROR_HANDLING", None)
                else:
                    os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = before
        device = torch.device(device if device is not None else f"cuda:{torch.cuda.current_device()}")
        start_within(pg, lambda: _broadcast(pg, torch.zeros(1, dtype=torch.uint8, device=device),
                                            float(spec["timeout_s"])), float(spec["timeout_s"]), "NCCL start-up")
        return pg
    raise ValueError(f"weight group backend must be gloo or nccl, got {spec['backend']!r}")


def start_within(pg, start, timeout_s: float, what: str) -> None:
    """Run `start()` (a group's first collective) in a helper thread; past `timeout_s` abort the group
    and raise TimeoutError. The caller is freed even if the start-up itself never returns."""
    done, errors = threading.Event(), []

    def run():
        try:
            start()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            errors.append(e)
        finally:
            done.set()

    threading.Thread(target=run, name="gdro-weight-group-start", daemon=True).start()
    if not done.wait(timeout_s):
        close_group(pg)
        raise TimeoutError(f"weight group {what} did not finish within {timeout_s:g} s (a member is missing or stuck)")
    if errors:
        close_group(pg)
        raise errors[0]


def bound_store(host: str, timeout_s: float, port: int = 0, world_size: int | None = None):
    """A TCPStore server listening only on `host` (`port`, or a free one); returns (store, port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(128)
        port = sock.getsockname()[1]
    except OSError:
        sock.close()
        raise
    # The store owns the listening socket from here on (it closes it when it is destroyed).
    store = dist.TCPStore(host, port, world_size, True, timedelta(seconds=timeout_s), wait_for_workers=False,
                          master_listen_fd=sock.detach())
    return store, int(port)


def rendezvous_store(host: str, port: int, rank: int, world_size: int, timeout_s: float):
    """The store a process group meets through: rank 0 serves it on `host` only (a `tcp://`
    init method would listen on every interface), the other ranks connect to it."""
    if rank == 0:
        return bound_store(host, timeout_s, port=port, world_size=world_size)[0]
    return dist.TCPStore(host, int(port), world_size, False, timedelta(seconds=timeout_s), wait_for_workers=False)


def close_group(pg) -> None:
    """Release a group's connections; NCCL communicators are aborted so nothing waits on them."""
    if pg is None:
        return
    for method in ("abort", "shutdown") if _is_nccl(pg) else ("shutdown",):
        try:
            getattr(pg, method)()
            return
        except Exception:  # noqa: BLE001 - best effort: the group is being dropped anyway
            continue


def _is_nccl(pg) -> bool:
    return type(pg).__name__ == "ProcessGroupNCCL"


def _broadcast(pg, tensor: torch.Tensor, timeout_s: float) -> None:
    opts = dist.BroadcastOptions()
    opts.rootRank, opts.rootTensor = 0, 0
    work = pg.broadcast([tensor], opts)
    try:
        work.wait(timedelta(seconds=timeout_s))
    except Exception:
        close_group(pg)  # an NCCL communicator that timed out must not be reused
        raise


def _byte_view(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8, device=t.device)


class WeightSender:
    """Learner rank 0's side: hosts the store, stages published weights, broadcasts them."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.store = None
        self.address: tuple[str, int] | None = None
        self.main = None          # the group of all live samplers
        self.main_spec: dict | None = None
        self.buffers: list[torch.Tensor] = []   # staged weights (CPU): reused for joiners and fallback
        self.layout: dict | None = None

    def host(self, host: str | None = None, timeout_s: float = 300.0) -> tuple[str, int]:
        """Start the store server once (a free port); returns (address, port) for the samplers."""
        if self.store is None:
            if host is None:
                try:
                    import ray

                    host = ray.util.get_node_ip_address()
                except Exception:  # noqa: BLE001 - outside Ray: a single machine
                    host = "127.0.0.1"
            self.store, port = bound_store(host, timeout_s)
            self.address = (host, port)
        return self.address

    def stage(self, state: dict[str, torch.Tensor], version: int, bucket_bytes: int) -> dict:
        """Flatten the published state dict into buckets kept until the next stage; returns the layout."""
        t0 = time.perf_counter()
        self.buffers, layout = flatten_buckets(state.items(), bucket_bytes)
        self.layout = dict(layout, version=int(version), tensors=len(state))
        return dict(self.layout, stage_s=time.perf_counter() - t0)

    def open(self, spec: dict) -> bool:
        """Open (or replace) the main group as rank 0; blocks until every sampler has joined."""
        self.close()
        self.main = new_group(self.store, spec, self.device)
        self.main_spec = spec
        return True

    def _send(self, pg, spec: dict) -> dict:
        if self.layout is None:
            raise RuntimeError("no weights staged: call stage() first")
        t0 = time.perf_counter()
        for buf in self.buffers:
            data = _byte_view(buf)
            if not data.numel():  # the receiver skips empty buckets too
                continue
            if spec["backend"] == "nccl":
                data = data.to(self.device, non_blocking=True)
            _broadcast(pg, data, spec["timeout_s"])
        if spec["backend"] == "nccl":
            torch.cuda.synchronize(self.device)
        return {"broadcast_s": time.perf_counter() - t0, "nbytes": self.layout["nbytes"]}

    def broadcast(self) -> dict:
        """Send the staged buckets to the main group (every member calls `WeightReceiver.receive`)."""
        if self.main is None:
            raise RuntimeError("no weight group open")
        try:
            return self._send(self.main, self.main_spec)
        except Exception:
            self.close()
            raise

    def catch_up(self, spec: dict) -> dict:
        """Send the staged buckets to one joiner through its own short-lived two-member group.

        `spec["not_after"]` (wall-clock seconds): past it the joiner has given up, so no group is started.
        """
        if time.time() > float(spec.get("not_after", float("inf"))):
            raise TimeoutError("catch-up skipped: the joiner's time limit has passed")
        pg = new_group(self.store, spec, self.device)
        try:
            return self._send(pg, spec)
        finally:
            close_group(pg)

    def staged_bytes(self) -> bytes:
        """The staged weights as safetensors bytes: the object-store fallback, no new gather."""
        from safetensors.torch import save

        if self.layout is None:
            raise RuntimeError("no weights staged")
        state = {name: t.contiguous() for name, t in unflatten_buckets(self.buffers, self.layout)}
        return save(state, metadata={"format": "pt", "version": str(self.layout["version"])})

    def close(self) -> None:
        close_group(self.main)
        self.main, self.main_spec = None, None

    def shutdown(self) -> None:
        self.close()
        self.store = None


class WeightReceiver:
    """A sampler's side: joins a group as rank >= 1 and receives staged buckets into fresh buffers."""

    def __init__(self, spec: dict, device: torch.device | str = "cpu"):
        if int(spec["rank"]) < 1:
            raise ValueError("a weight receiver has rank >= 1 (rank 0 is learner rank 0)")
        self.spec = spec
        self.device = torch.device(device) if spec["backend"] == "nccl" else torch.device("cpu")
        timeout = timedelta(seconds=float(spec["timeout_s"]))
        self._store = dist.TCPStore(spec["host"], int(spec["port"]), None, False, timeout, wait_for_workers=False)
        self.pg = new_group(self._store, spec, self.device)

    def receive(self, layout: dict) -> list[tuple[str, torch.Tensor]]:
        """Receive one broadcast of `layout`; (name, tensor) in the sender's order, on this device."""
        buffers = []
        try:
            for bucket in layout["buckets"]:
                buf = torch.empty(int(bucket["nbytes"]), dtype=torch.uint8, device=self.device)
                if buf.numel():
                    _broadcast(self.pg, buf, self.spec["timeout_s"])
                buffers.append(buf)
        except Exception:
            self.close()
            raise
        return unflatten_buckets(buffers, layout)

    def close(self) -> None:
        close_group(self.pg)
        self.pg = None
