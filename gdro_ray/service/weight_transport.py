"""How published weights reach the samplers: one `publish(version)` call, two transports.

- `ObjectStoreTransport` (CPU default, and the fallback): all FSDP2 ranks gather the full
  state dict, rank 0 returns it as numpy arrays in the published dtype into the object store
  (`gdro_ray.transfer.weight_arrays`: the driver passes the reference on, every sampler on that node
  reads the same shared memory and copies only into its own weights) and every live sampler
  loads them (`SamplerPool.publish`). Joiners are built with that reference.
- `CollectiveTransport` (GPU default): learner rank 0 and the live samplers form a private
  process group (`gdro_ray.transfer.weight_group`; NCCL on GPUs, gloo on CPU). All FSDP2 ranks
  still take part in the gather; rank 0 stages the weights as flat per-dtype buckets and
  broadcasts them; samplers load the received tensors without a bytes round trip. The layout
  (names, shapes, dtypes, offsets) rides along in each publish's Ray call.
  Membership is elastic: whenever the set of live samplers differs from the group's, a new
  generation (new store prefix) is formed before broadcasting. A sampler that joins between
  publishes (scale-up, replacement) holds an older version, so the pool keeps it out of work
  and calls `catch_up`: rank 0 re-sends its staged buckets through a two-member group (a
  second failed try loads rank 0's staged bytes through the object store instead).
  A joiner that arrives while the learner trains (off-policy mode) is caught up through the
  object store instead: a call to rank 0 would wait behind the train step while the joiner's
  time limit runs out. Each catch-up carries a deadline, so rank 0 never starts a group the
  joiner has given up on.
  NCCL needs one card per rank: a generation whose members share a card (compared by device
  UUID, since indexes differ per process) uses gloo instead, and says so in the log.
  A publish that fails or times out (a sampler died mid-broadcast) tears the group down,
  publishes that version through the object store from rank 0's staged buckets (no second
  gather), logs it, and the next publish forms a new group. Every group op has a timeout.
- `choose_weight_sync` decides, once at start, from `weight_sync.transport/backend` and where
  the actors run; `make_weight_transport` builds the chosen one and says why.
"""
from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import ray

from gdro_ray.errors import UserError
from gdro_ray.service.gpu_plan import shared_cards

log = logging.getLogger("gdro_ray.weights")


class WeightTransport(Protocol):
    name: str
    description: str

    def publish(self, version: int) -> dict:
        """Make every live sampler hold `version`; returns {"transport", "seconds", "nbytes", ...}."""
        ...

    def shutdown(self) -> None: ...


@dataclass(frozen=True)
class WeightSyncChoice:
    transport: str          # "object_store" | "collective"
    backend: str | None     # "nccl" | "gloo" for the collective transport
    reason: str


def choose_weight_sync(transport: str, backend: str, learner_gpus: float, sampler_gpus: float,
                       learner_cuda: bool, sampler_cuda: bool, cards: list[str | None] = (),
                       tensor_parallel: int = 1) -> WeightSyncChoice:
    """The transport and backend for a run (see docs/deploy.md); raises UserError for impossible asks.

    `cards`: the GPU UUIDs of learner rank 0 and of the samplers (None = not on a GPU). Ranks that
    share a card cannot be in one NCCL group ("Duplicate GPU detected"): auto then picks gloo.
    `tensor_parallel` > 1: a sampler's model is split over several worker processes, which the
    broadcast group does not reach; its weights go through the object store.
    """
    if tensor_parallel > 1:
        if transport == "collective":
            raise UserError(f"weight_sync.transport=collective: a sampler split over {tensor_parallel} GPUs "
                            "(sampler.tensor_parallel_size) takes its weights through the object store; "
                            "use weight_sync.transport=auto or object_store")
        return WeightSyncChoice("object_store", None,
                                f"sampler.tensor_parallel_size={tensor_parallel}: the object store reaches every shard")
    on_gpus = learner_gpus > 0 and sampler_gpus > 0 and learner_cuda and sampler_cuda
    where = (f"learner.num_gpus={learner_gpus:g} (CUDA {'yes' if learner_cuda else 'no'}), "
             f"sampler.num_gpus={sampler_gpus:g} (CUDA {'yes' if sampler_cuda else 'no'})")
    if transport == "object_store":
        return WeightSyncChoice("object_store", None, "weight_sync.transport=object_store")
    if transport == "auto" and not on_gpus:
        return WeightSyncChoice("object_store", None, f"auto: not all on GPUs ({where})")
    if backend == "nccl" and not on_gpus:
        raise UserError(f"weight_sync.backend=nccl needs the learner and the samplers on CUDA GPUs ({where}); "
                        "use weight_sync.backend=gloo or auto")
    chosen = backend if backend != "auto" else ("nccl" if on_gpus else "gloo")
    why = "auto: learner and samplers on GPUs" if transport == "auto" else "weight_sync.transport=collective"
    shared = shared_cards(list(cards)) if chosen == "nccl" else []
    if shared and backend == "nccl":
        raise UserError(f"weight_sync.backend=nccl: learner rank 0 and samplers share GPU {', '.join(shared)}, and "
                        "NCCL needs one GPU per rank; use weight_sync.backend=gloo or auto")
    if shared:
        return WeightSyncChoice("collective", "gloo", f"{why}, backend gloo: ranks share GPU {', '.join(shared)} "
                                                      f"and NCCL needs one GPU per rank ({where})")
    return WeightSyncChoice("collective", chosen, f"{why}, backend {chosen}"
                            + (" (forced)" if backend != "auto" else f" ({where})"))


class ObjectStoreTransport:
    """Today's path: gather → safetensors bytes → one `ray.put` → every sampler loads."""

    name = "object_store"

    def __init__(self, learner, pool, reason: str = ""):
        self.learner, self.pool = learner, pool
        self.description = f"object store ({reason})" if reason else "object store"

    def publish(self, version: int) -> dict:
        t0 = time.perf_counter()
        if hasattr(self.learner, "weight_arrays_ref"):  # numpy arrays read in place (gdro_ray/transfer/weight_arrays.py)
            blob, size = self.learner.weight_arrays_ref()
        else:  # a stand-in learner: safetensors bytes
            blob = self.learner.state_dict_bytes()
            size = len(blob)
        t1 = time.perf_counter()
        self.pool.publish(blob, version)
        t2 = time.perf_counter()
        return {"transport": self.name, "version": version, "nbytes": size, "gather_s": t1 - t0,
                "load_s": t2 - t1, "seconds": t2 - t0}

    def shutdown(self) -> None:
        pass


class CollectiveTransport:
    """Broadcast from learner rank 0 to the live samplers over a private process group."""

    name = "collective"

    def __init__(self, learner, pool, backend: str, timeout_s: float = 120.0, bucket_mb: int = 512,
                 reason: str = ""):
        self.learner, self.workers, self.pool = learner, learner.workers, pool
        self.rank0 = learner.workers[0]
        self.rank0_card = ray.get(self.rank0.info.remote()).cuda_uuid
        self.backend, self.timeout_s = backend, float(timeout_s)
        self.bucket_bytes = int(bucket_mb) << 20
        self.description = f"collective {backend} broadcast ({reason})" if reason else f"collective {backend}"
        self.host, self.port = ray.get(self.rank0.weight_sender.remote("host", None, self.timeout_s))
        self._tag = secrets.token_hex(3)
        self.generation = 0
        self.members: dict[int, object] = {}      # sampler id -> actor of the current group
        self.layout: dict | None = None            # of the weights rank 0 has staged
        self._catch_up_tries: Counter = Counter()  # (sampler id, version) -> attempts
        self.stats = Counter()                     # publishes, fallbacks, groups, catch_ups, ...
        pool.catch_up = self.catch_up

    # ---- groups -------------------------------------------------------------------------------
    def _spec(self, rank: int, world_size: int, backend: str | None = None) -> dict:
        return {"host": self.host, "port": self.port, "prefix": f"gdro-weights/{self._tag}/{self.generation}/",
                "rank": rank, "world_size": world_size, "backend": backend or self.backend,
                "timeout_s": self.timeout_s}

    def _backend_for(self, sampler_ids: list[int]) -> str:
        """This generation's backend: NCCL only when no two members share a card."""
        if self.backend != "nccl":
            return self.backend
        cards = [self.rank0_card] + [self.pool.members[s].info.cuda_uuid if s in self.pool.members else None
                                     for s in sampler_ids]
        shared = shared_cards(cards)
        if shared:
            log.warning("weight group generation %d uses gloo: its members share GPU %s (NCCL needs one GPU per rank)",
                        self.generation, ", ".join(shared))
            self.stats["gloo_generations"] += 1
            return "gloo"
        return "nccl"

    def _get(self, refs: list) -> list:
        # The group ops time out on their own; this bound only guards against a lost call.
        return ray.get(refs, timeout=2 * self.timeout_s + 30)

    def _form(self, live: list) -> None:
        """A new generation of the main group: rank 0 plus every live sampler."""
        self.generation += 1
        size = len(live) + 1
        backend = self._backend_for([m.sampler_id for m in live])
        refs = [self.rank0.weight_sender.remote("open", self._spec(0, size, backend))]
        refs += [m.actor.join_weight_group.remote(self._spec(i + 1, size, backend)) for i, m in enumerate(live)]
        self.members = {}
        self._get(refs)
        self.members = {m.sampler_id: m.actor for m in live}
        self.stats["groups"] += 1

    def _teardown(self) -> None:
        refs = [self.rank0.weight_sender.remote("close")]
        refs += [a.leave_weight_group.remote() for sid, a in self.members.items() if sid in self.pool.members]
        self.members = {}
        try:
            ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s)
        except Exception:  # noqa: BLE001 - members may be dead; the next publish forms a new group
            pass

    # ---- publish ------------------------------------------------------------------------------
    def publish(self, version: int) -> dict:
        t0 = time.perf_counter()
        # The gather is the learner's own collective (as for the object store): no group timeout here.
        staged = ray.get([w.weight_publish_prepare.remote(self.bucket_bytes) for w in self.workers])[0]
        self.layout = {k: staged[k] for k in ("buckets", "nbytes", "version", "tensors")}
        t1 = time.perf_counter()
        info = {"transport": self.name, "backend": self.backend, "version": version, "nbytes": staged["nbytes"],
                "gather_s": t1 - t0, "generation": self.generation}
        live = [m for m in self.pool.members.values() if m.ready]
        self.stats["publishes"] += 1
        if not live:  # nobody to send to now: joiners catch up from rank 0's staged buckets
            self.pool.version = version
            return dict(info, samplers=0, seconds=time.perf_counter() - t0)
        try:
            if {m.sampler_id for m in live} != set(self.members):
                self._form(live)
                info["generation"] = self.generation
            refs = [self.rank0.weight_sender.remote("broadcast")]
            refs += [m.actor.receive_weights.remote(self.layout, version) for m in live]
            outs = self._get(refs)
        except Exception as e:  # noqa: BLE001 - any failure: the object store takes this version
            why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            return self._fallback(version, why, info, t0)
        self.pool.version = version
        for m in live:
            m.info.weights_version = version
        info.update(broadcast_s=outs[0]["broadcast_s"], samplers=len(live), seconds=time.perf_counter() - t0)
        return info

    def _fallback(self, version: int, why: str, info: dict, t0: float) -> dict:
        log.warning("collective weight publish of v%d failed (%s); published through the object store instead, "
                    "a new group is formed at the next publish", version, why[:300])
        self.stats["fallbacks"] += 1
        self._teardown()
        blob = self._get([self.rank0.weight_sender.remote("staged_bytes")])[0]  # bounded: never wait forever
        self.pool.publish(blob, version)  # replaces samplers that died
        info.update(transport="object_store", fallback=why[:300], seconds=time.perf_counter() - t0)
        return info

    # ---- joiners ------------------------------------------------------------------------------
    def catch_up(self, sampler_id: int, actor, version: int):
        """Bring a sampler that joined between publishes to `version`; returns the ObjectRef of
        the version it then holds (the pool makes it live only when that equals `version`)."""
        pool = self.pool
        if pool.blob_ref is not None and pool.blob_version == version:  # the object store holds it
            return actor.update_weights.remote(pool.blob_ref, version)
        self._catch_up_tries[(sampler_id, version)] += 1
        busy = bool(getattr(self.learner, "busy", False))
        if (busy or self.layout is None or self.layout["version"] != version
                or self._catch_up_tries[(sampler_id, version)] > 1):
            # While the learner trains a rank-0 call queues behind the step: a group would outlive the
            # joiner's time limit; loading the staged bytes just waits for the step, with no group to hang.
            log.warning("sampler %d catches up to v%d through the object store (rank 0's staged weights%s)",
                        sampler_id, version, "; the learner is training" if busy else "")
            self.stats["catch_ups_object_store"] += 1
            return actor.update_weights.remote(self.rank0.weight_sender.remote("staged_bytes"), version)
        self.generation += 1
        backend = self._backend_for([sampler_id])
        # Both sides stop waiting at the same moment; rank 0 skips a group whose joiner has already left.
        deadline = {"not_after": time.time() + self.timeout_s}
        self.rank0.weight_sender.remote("catch_up", dict(self._spec(0, 2, backend), **deadline))
        self.stats["catch_ups"] += 1
        return actor.catch_up_weights.remote(dict(self._spec(1, 2, backend), **deadline), self.layout, version)

    def shutdown(self) -> None:
        self.pool.catch_up = None
        try:
            self._teardown()
        except Exception:  # noqa: BLE001 - shutting down
            pass


def make_weight_transport(ws, learner, pool, learner_gpus: float, sampler_gpus: float,
                          tensor_parallel: int = 1) -> WeightTransport:
    """Build the transport `ws` (the `weight_sync` config section) asks for, where the actors run."""
    rank0 = ray.get(learner.workers[0].info.remote())
    learner_cuda = rank0.device.startswith("cuda")
    live = [m for m in pool.members.values() if m.ready]
    reported = [m.info.cuda for m in live if m.info.cuda is not None]
    sampler_cuda = any(reported) if reported else sampler_gpus > 0
    cards = [rank0.cuda_uuid] + [m.info.cuda_uuid for m in live]
    choice = choose_weight_sync(ws.transport, ws.backend, learner_gpus, sampler_gpus, learner_cuda, sampler_cuda,
                                cards, tensor_parallel)
    if choice.transport == "collective":
        transport = CollectiveTransport(learner, pool, choice.backend, ws.timeout_s, ws.bucket_mb, choice.reason)
    else:
        transport = ObjectStoreTransport(learner, pool, choice.reason)
    log.info("weight sync: %s", transport.description)
    return transport
