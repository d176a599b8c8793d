"""The elastic sampler pool: a work queue of shards over a changing set of sampler actors.

- Each sampler gets its own placement group (Ray placement groups cannot grow), so adding a
  sampler is just one more group; a sampler whose group waits for resources (e.g. for the
  autoscaler to add a node) joins when it is placed.
- A step's prompts are cut into shards; an idle sampler takes the next shard, so a faster
  sampler takes more shards.
- A sampler that dies has its unfinished shard re-queued to the others and is replaced up to
  `max_restarts` times; no prompt of the step is lost or duplicated.
- New samplers are built with the current weights before they take work.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from gdro_ray.service.sampler_actor import Sampler

log = logging.getLogger("gdro_ray.pool")


@dataclass
class _Member:
    sampler_id: int
    actor: object
    pg: object
    ready_ref: object
    ready: bool = False
    retiring: bool = False


@dataclass
class PoolStats:
    restarts: int = 0
    requeued: int = 0
    deaths: int = 0
    history: list = field(default_factory=list)


class SamplerPool:
    def __init__(self, model_path: str, engine: str, dtype: str, seed: int, reward_scale: str,
                 reward_timeout_s: float, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 max_samplers: int = 16, max_restarts: int = 8, ray_resource: str = ""):
        self.kw = dict(model_path=model_path, engine=engine, dtype=dtype, seed=seed,
                       reward_scale=reward_scale, reward_timeout_s=reward_timeout_s)
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.max_samplers, self.max_restarts = max_samplers, max_restarts
        self.custom = {ray_resource: 1.0} if ray_resource else {}
        self.members: dict[int, _Member] = {}
        self.next_id = 0
        self.blob_ref = None
        self.version = 0
        self.stats = PoolStats()

    # ---- membership -------------------------------------------------------------------------
    def _spawn(self) -> _Member:
        sid = self.next_id
        self.next_id += 1
        bundle = {"CPU": self.num_cpus}
        if self.num_gpus:
            bundle["GPU"] = self.num_gpus
        bundle.update(self.custom)
        pg = placement_group([bundle], strategy="STRICT_PACK", name=f"gdro-sampler-{sid}")
        actor = ray.remote(Sampler).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, resources=self.custom, max_concurrency=1,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=pg),
            name=None,
        ).remote(sid, weights=self.blob_ref, weights_version=self.version, **self.kw)
        m = _Member(sid, actor, pg, actor.ready.remote())
        self.members[sid] = m
        return m

    def _drop(self, m: _Member, kill: bool = True) -> None:
        self.members.pop(m.sampler_id, None)
        if kill:
            try:
                ray.kill(m.actor, no_restart=True)
            except Exception:  # already dead
                pass
        try:
            remove_placement_group(m.pg)
        except Exception:
            pass

    def resize(self, n: int) -> None:
        """Grow or shrink to n samplers; removal takes idle samplers first (between steps)."""
        n = max(1, min(n, self.max_samplers))
        while len(self.members) < n:
            self._spawn()
        extra = len(self.members) - n
        for m in sorted(self.members.values(), key=lambda m: (m.ready, -m.sampler_id))[:max(extra, 0)]:
            self._drop(m)

    def size(self) -> int:
        return len(self.members)

    def live(self) -> int:
        return sum(m.ready for m in self.members.values())

    def wait_ready(self, min_ready: int = 1, timeout_s: float = 600.0) -> int:
        deadline = time.time() + timeout_s
        while True:
            self._poll_ready(0)
            if self.live() >= min_ready or time.time() > deadline:
                return self.live()
            self._poll_ready(1.0)

    def _poll_ready(self, timeout: float) -> None:
        pending = {m.ready_ref: m for m in self.members.values() if not m.ready}
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in done:
            m = pending[ref]
            try:
                ray.get(ref)
                m.ready = True
            except ray.exceptions.RayError as e:
                log.warning("sampler %d failed to start: %s", m.sampler_id, str(e).splitlines()[0])
                self._replace(m)

    def _replace(self, m: _Member) -> None:
        self._drop(m)
        self.stats.deaths += 1
        if self.stats.restarts < self.max_restarts:
            self.stats.restarts += 1
            self._spawn()
        elif not self.members:
            raise RuntimeError("every sampler died and the restart limit is spent")

    # ---- weights ----------------------------------------------------------------------------
    def publish(self, blob: bytes, version: int) -> float:
        """Put the weights once in the object store; every sampler loads them before the next step."""
        t0 = time.perf_counter()
        self.blob_ref = ray.put(blob)
        self.version = version
        refs = {m.actor.update_weights.remote(self.blob_ref, version): m
                for m in self.members.values() if m.ready}
        for ref, m in refs.items():
            try:
                ray.get(ref)
            except ray.exceptions.RayError:
                self._replace(m)  # its replacement is built with the new weights
        return time.perf_counter() - t0

    # ---- work -------------------------------------------------------------------------------
    def run(self, shards: list[dict]) -> list[dict]:
        """Run every shard exactly once on the live samplers; re-queue shards of dead samplers."""
        queue = deque(shards)
        inflight: dict = {}
        results: list[dict] = []
        while queue or inflight:
            self._poll_ready(0)
            busy = {m.sampler_id for m, _ in inflight.values()}
            for m in list(self.members.values()):
                if not queue:
                    break
                if m.ready and m.sampler_id not in busy:
                    shard = dict(queue.popleft(), weights_version=self.version)
                    inflight[m.actor.generate_shard.remote(shard)] = (m, shard)
                    busy.add(m.sampler_id)
            if not inflight:
                if not self.members:
                    raise RuntimeError("no samplers left")
                self._poll_ready(1.0)
                continue
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=5.0)
            for ref in done:
                m, shard = inflight.pop(ref)
                try:
                    results.append(ray.get(ref))
                except ray.exceptions.RayActorError:
                    log.warning("sampler %d died; re-queueing shard %s", m.sampler_id, shard["shard_id"])
                    self.stats.requeued += 1
                    queue.appendleft({k: v for k, v in shard.items() if k != "weights_version"})
                    self._replace(m)
        return results

    def evaluate(self, examples: list[dict], **kw) -> dict:
        m = next(m for m in self.members.values() if m.ready)
        return ray.get(m.actor.evaluate.remote(examples, **kw))

    def shutdown(self) -> None:
        for m in list(self.members.values()):
            self._drop(m)
