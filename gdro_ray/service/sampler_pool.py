"""The elastic sampler pool: a work queue of shards over a changing set of sampler actors.

- Membership. Each sampler gets its own one-bundle placement group (Ray placement groups
  cannot grow), so adding a sampler is one more group. A sampler is *pending* until its
  `ready()` call answers: while its group waits for resources (e.g. for the autoscaler to add
  a node) it takes no work, and it joins the moment it is placed — even in the middle of a
  step. New samplers are constructed with the current weights (object-store ref) and version;
  one that was still starting when a newer version was published loads it before it is live,
  so no sampler ever takes work with stale weights.
- Work. `run(shards)` keeps a FIFO of shards and a set of idle live samplers; whenever both are
  non-empty the next shard goes to an idle sampler. A faster sampler is idle sooner, so it
  takes more shards. The loop blocks in one `ray.wait` over the in-flight shard calls and the
  pending samplers' `ready()` calls, and drains every call that finished in one go.
- Faults. A shard whose call fails with `RayActorError` (process killed, node lost) goes back
  to the *front* of the queue, unchanged, for another sampler; the dead sampler is dropped and
  replaced while fewer than `max_restarts` replacements have been started. A shard's result
  is accepted only once (its call either returns or fails), so every prompt of the step is
  sampled exactly once with exactly its scheduled rollouts. A sampler that dies while idle is
  found at its next call (a shard — then re-queued — or a weight update).
- Resizing (`resize`) is applied between samplings (the driver calls it before handing out a
  step), so a removed sampler has no work in flight; pending samplers go first, then the
  newest. `run` on an empty pool, or one whose last sampler dies with no restart left, raises
  `SamplerPoolError`; samplers that wait for resources are waited for (the autoscaler case).

Weight transports (`weight_transport.py`) may set `catch_up(sampler_id, actor, version)`:
how a sampler that started with an older version than the pool's reaches the current one
(an ObjectRef of the version it then holds). Unset, it loads the object-store blob, which is
then current. `blob_ref` holds version `blob_version` (it lags `version` when a collective
transport published since).

`service_kwargs` are what the driver gives every sampler (vLLM's context length and card share,
the custom reward); `sampler_cls`/`sampler_kwargs` swap in a `Sampler` subclass and its extra
arguments (tests add delays this way), on top of them;
`actor_factory` replaces the Ray actor per sampler with any handle that has the same
`.ready/.generate_shard/.update_weights/.evaluate .remote()` methods (benchmarks host many
virtual samplers in a few processes); such members get no placement group.
"""
from __future__ import annotations

import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from gdro_ray.protocol import EvalResult, SamplerInfo, Shard, ShardResult
from gdro_ray.service.sampler_actor import Sampler

log = logging.getLogger("gdro_ray.pool")

PENDING_WARN_S = 60.0  # how often to log that the step waits for samplers to be placed


class SamplerPoolError(RuntimeError):
    """The pool cannot make progress: no sampler is left and the restart limit is spent."""


@dataclass
class _Member:
    sampler_id: int
    actor: object
    pg: object | None
    ready_ref: object
    info: SamplerInfo  # what ready() answered (until then only the id): pid, weights_version, ...
    ready: bool = False


@dataclass
class PoolStats:
    restarts: int = 0      # replacement samplers started
    requeued: int = 0      # shards handed back to the queue because their sampler died
    deaths: int = 0        # samplers lost (died while working, idle, starting or updating)
    shards_by_sampler: Counter = field(default_factory=Counter)  # completed shards per sampler id
    joins: list = field(default_factory=list)  # (sampler id, weights version it took work with, time)
    last_error: str = ""


class SamplerPool:
    def __init__(self, model_path: str, engine: str, dtype: str, seed: int, reward_scale: str,
                 reward_timeout_s: float, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 max_samplers: int = 16, max_restarts: int = 8, ray_resource: str = "",
                 sampler_cls: type = Sampler, sampler_kwargs: dict | None = None,
                 service_kwargs: dict | None = None,
                 actor_factory: Callable | None = None, poll_s: float = 5.0):
        self.kw = dict(model_path=model_path, engine=engine, dtype=dtype, seed=seed,
                       reward_scale=reward_scale, reward_timeout_s=reward_timeout_s,
                       **{**(service_kwargs or {}), **(sampler_kwargs or {})})
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.max_samplers, self.max_restarts = max_samplers, max_restarts
        self.custom = {ray_resource: 1.0} if ray_resource else {}
        self.sampler_cls, self.actor_factory, self.poll_s = sampler_cls, actor_factory, poll_s
        # Called with the number of shards waiting for a sampler whenever it changes during `run`
        # (the driver forwards it to the adversary's `gdro_queue_shards` gauge); must not block.
        self.on_queue: Callable[[int], None] | None = None
        self.members: dict[int, _Member] = {}
        self.idle: dict[int, _Member] = {}  # live members with no shard in flight (insertion = FIFO)
        self.next_id = 0
        self.blob_ref = None
        self.blob_version = 0  # the version blob_ref holds: new samplers are built with it
        self.version = 0
        self.catch_up: Callable | None = None  # set by a weight transport; see the module docstring
        self.stats = PoolStats()
        self._groups: dict = {}  # summary ObjectRef -> the refs of its per-prompt rollout arrays
        self._tag = secrets.token_hex(3)  # placement-group names stay unique across runs on a cluster

    # ---- membership -------------------------------------------------------------------------
    def _spawn(self) -> _Member:
        sid = self.next_id
        self.next_id += 1
        if self.actor_factory is not None:
            actor, pg = self.actor_factory(sid, self.blob_ref, self.blob_version), None
        else:
            bundle = {"CPU": self.num_cpus}
            if self.num_gpus:
                bundle["GPU"] = self.num_gpus
            bundle.update(self.custom)
            pg = placement_group([bundle], strategy="STRICT_PACK", name=f"gdro-sampler-{self._tag}-{sid}")
            actor = ray.remote(self.sampler_cls).options(
                num_cpus=self.num_cpus, num_gpus=self.num_gpus, resources=self.custom, max_concurrency=1,
                scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=pg),
            ).remote(sid, weights=self.blob_ref, weights_version=self.blob_version, **self.kw)
        m = _Member(sid, actor, pg, actor.ready.remote(), SamplerInfo(sampler_id=sid))
        self.members[sid] = m
        return m

    def _drop(self, m: _Member, kill: bool = True) -> None:
        self.members.pop(m.sampler_id, None)
        self.idle.pop(m.sampler_id, None)
        if kill:
            try:
                ray.kill(m.actor, no_restart=True)
            except Exception:  # already dead, or a stand-in handle
                pass
        if m.pg is not None:
            try:
                remove_placement_group(m.pg)
            except Exception:
                pass

    def _replace(self, m: _Member, why: str) -> None:
        """Drop a dead sampler and start a replacement while the restart limit allows."""
        self._drop(m)
        self.stats.deaths += 1
        self.stats.last_error = why
        if self.stats.restarts < self.max_restarts:
            self.stats.restarts += 1
            new = self._spawn()
            log.warning("sampler %d lost (%s); replacement %d started (%d/%d restarts)",
                        m.sampler_id, why, new.sampler_id, self.stats.restarts, self.max_restarts)
        elif self.members:
            log.warning("sampler %d lost (%s); restart limit %d spent, continuing with %d samplers",
                        m.sampler_id, why, self.max_restarts, len(self.members))
        else:
            raise SamplerPoolError(f"every sampler died and the restart limit (sampler.max_restarts="
                                   f"{self.max_restarts}) is spent; last error: {why}")

    def resize(self, n: int) -> None:
        """Grow or shrink to n samplers, between samplings: pending ones go first, then the newest."""
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

    def pending(self) -> int:
        return len(self.members) - self.live()

    def wait_ready(self, min_ready: int = 1, timeout_s: float = 600.0) -> int:
        deadline = time.time() + timeout_s
        while True:
            self._poll_ready(0)
            if self.live() >= min(min_ready, len(self.members)) or time.time() > deadline:
                return self.live()
            self._poll_ready(1.0)

    def _mark_ready(self, m: _Member, ref) -> None:
        """A pending sampler answered: it is live once it holds the current weights version."""
        try:
            answer = ray.get(ref)
        except ray.exceptions.RayError as e:
            self._replace(m, f"failed to start: {str(e).strip().splitlines()[0]}")
            return
        if isinstance(answer, SamplerInfo):
            m.info = answer
        else:  # the version an update_weights call installed
            m.info.weights_version = answer
        if m.info.weights_version != self.version:
            # Built while a newer version was published: load it before taking work.
            if self.catch_up is not None:
                m.ready_ref = self.catch_up(m.sampler_id, m.actor, self.version)
            else:
                m.ready_ref = m.actor.update_weights.remote(self.blob_ref, self.version)
            return
        if m.pg is not None and m.info.node_id is None:  # where it runs: for logs and node-loss checks
            try:
                m.info.node_id = ray.util.placement_group_table(m.pg)["bundles_to_node_id"][0]
            except Exception:  # the table is informative only
                pass
        m.ready = True
        self.idle[m.sampler_id] = m
        self.stats.joins.append((m.sampler_id, m.info.weights_version, time.time()))

    def _poll_ready(self, timeout: float) -> None:
        pending = {m.ready_ref: m for m in self.members.values() if not m.ready}
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in done:
            self._mark_ready(pending[ref], ref)

    # ---- weights ----------------------------------------------------------------------------
    def publish(self, blob: bytes, version: int) -> float:
        """Put the weights once in the object store; every live sampler loads them now, pending
        ones are constructed with them. Returns the seconds it took."""
        t0 = time.perf_counter()
        # an ObjectRef (learner rank 0's weight arrays) is passed on as it is, never fetched here
        self.blob_ref = blob if isinstance(blob, ray.ObjectRef) else ray.put(blob)
        self.version = self.blob_version = version
        live = [m for m in self.members.values() if m.ready]
        outs = self._fetch([m.actor.update_weights.remote(self.blob_ref, version) for m in live])
        for m, out in zip(live, outs):
            if isinstance(out, ray.exceptions.RayActorError):
                self._replace(m, f"died during a weight update: {str(out).strip().splitlines()[0]}")
            elif isinstance(out, Exception):
                raise out
            else:
                m.info.weights_version = version
        return time.perf_counter() - t0

    # ---- work -------------------------------------------------------------------------------
    def _dispatch(self, m: _Member, shard: Shard):
        """Hand one shard to one idle sampler; returns the ObjectRef of the call's `ShardResult`.

        Real sampler actors return each prompt's rollout arrays as separate return values
        (`gdro_ray.transfer.rollout_arrays`), which this process owns but never fetches; `run`
        attaches their references to their `PromptRollouts`. Stand-in handles (`actor_factory`)
        answer with the arrays inline.
        """
        shard = shard.for_version(self.version)
        if self.actor_factory is not None:
            return m.actor.generate_shard.remote(shard)
        refs = m.actor.generate_shard.options(num_returns=1 + 2 * len(shard.slots)).remote(shard, True)
        self._groups[refs[0]] = refs[1:]
        return refs[0]

    def run(self, shards: list[Shard]) -> list[ShardResult]:
        """Run every shard exactly once on the live samplers; re-queue shards of dead samplers.

        Returns the shard results in completion order (each carries its `shard_id`).
        """
        if not self.members:
            raise SamplerPoolError("the sampler pool is empty")
        queue = deque(shards)
        inflight: dict = {}  # ObjectRef -> (member, shard)
        results: list[dict] = []
        waited_since = None
        reported = None
        while queue or inflight:
            while queue and self.idle:
                m = self.idle.pop(next(iter(self.idle)))  # the longest idle first
                shard = queue.popleft()
                inflight[self._dispatch(m, shard)] = (m, shard)
            if self.on_queue is not None and len(queue) != reported:
                reported = len(queue)
                self.on_queue(reported)
            if not self.members:
                raise SamplerPoolError(f"no samplers left (restart limit sampler.max_restarts={self.max_restarts} "
                                       f"spent); last error: {self.stats.last_error}")
            starting = {m.ready_ref: m for m in self.members.values() if not m.ready}
            if not inflight:  # every member is starting or waiting for resources
                waited_since = waited_since or time.time()
                if time.time() - waited_since > PENDING_WARN_S:
                    log.warning("%d shards wait for %d samplers still starting or waiting for resources",
                                len(queue), len(starting))
                    waited_since = time.time()
            refs = list(inflight) + list(starting)
            done, _ = ray.wait(refs, num_returns=1, timeout=self.poll_s)
            if done and len(refs) > 1:  # take everything else that has finished too
                more, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                done = list(dict.fromkeys(done + more))
            for ref in [r for r in done if r in starting]:
                self._mark_ready(starting[ref], ref)
            finished = [r for r in done if r in inflight]
            outs = self._fetch(finished)
            for ref, out in zip(finished, outs):
                m, shard = inflight.pop(ref)
                groups = self._groups.pop(ref, None)
                if isinstance(out, ray.exceptions.RayActorError):
                    self.stats.requeued += 1
                    queue.appendleft(shard)
                    log.warning("sampler %d died with shard %s in flight; shard re-queued",
                                m.sampler_id, shard.shard_id)
                    self._replace(m, str(out).strip().splitlines()[0])
                    continue
                if isinstance(out, Exception):  # the sampler raised: a bug, not a fault to hide
                    raise out
                if groups is not None:
                    for k, res in enumerate(out.results):
                        res.group, res.logprobs = groups[2 * k], groups[2 * k + 1]
                results.append(out)
                self.stats.shards_by_sampler[m.sampler_id] += 1
                if m.sampler_id in self.members:
                    self.idle[m.sampler_id] = m
        if self.on_queue is not None and reported != 0:
            self.on_queue(0)
        return results

    @staticmethod
    def _fetch(refs: list) -> list:
        """Each ref's value, or the RayError it raised; one batched `ray.get` when none failed."""
        try:
            return ray.get(refs)
        except ray.exceptions.RayError:
            out = []
            for r in refs:
                try:
                    out.append(ray.get(r))
                except ray.exceptions.RayError as e:
                    out.append(e)
            return out

    def evaluate(self, examples: list[dict], **kw) -> EvalResult:
        """Evaluate on one live sampler (another one if it dies)."""
        while True:
            self.wait_ready(1)
            m = next((m for m in self.members.values() if m.ready), None)
            if m is None:
                raise SamplerPoolError("no live sampler to evaluate on")
            try:
                return ray.get(m.actor.evaluate.remote(examples, **kw))
            except ray.exceptions.RayActorError as e:
                self._replace(m, str(e).strip().splitlines()[0])

    def shutdown(self) -> None:
        for m in list(self.members.values()):
            self._drop(m)
