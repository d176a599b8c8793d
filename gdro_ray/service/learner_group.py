"""The FSDP2 learner group: one Ray actor per rank around `gdro_ray.learner.LearnerWorker`.

Every rank receives the step batch's per-row scalars and fetches the rollout arrays of only its
own rows from the object store (`gdro_ray.transfer.rollout_arrays`), and trains on its slice; the
collectives (gradient reduce-scatter, the full-state-dict gather for publication, checkpoint
writes) run inside the workers. A rank that dies ends the job: the driver reports it and the
run resumes from its last complete checkpoint.

Placement and rendezvous: the ranks are placed in one placement group (one bundle per rank,
packed), so where rank 0 will run is known before any rank starts. A small task on rank 0's
bundle answers with that node's address and a port free there; every rank is built with it.
The driver's own address would be wrong on a cluster (the deploy docs put the driver on a CPU
head node, where rank 0 cannot listen). When every rank is on rank 0's node the ranks meet on
loopback, as on one machine.

Ranks that reserve no GPU run on CPU (gloo): Ray 2.60 shows every GPU to actors that reserved
none, and the worker would otherwise pick a card by itself (`gpu_plan.learner_device`).
"""
from __future__ import annotations

import socket

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from gdro_ray.errors import UserError
from gdro_ray.learner import LearnerWorker
from gdro_ray.protocol import LearnerBatch, LearnerInfo, LearnStats
from gdro_ray.service.gpu_plan import learner_device

# How long the learner group's placement may wait for resources: long enough for an autoscaler to
# add nodes, short enough that a group no cluster can hold fails instead of waiting forever.
PLACEMENT_TIMEOUT_S = 600.0


def _node_address() -> tuple[str, int]:
    """Runs on rank 0's bundle: this node's address and a port free on it."""
    ip = ray.util.get_node_ip_address()
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
        s.bind((ip, 0))
        port = s.getsockname()[1]
    return ip, port


def master_address(bundle_nodes: list[str], rank0_ip: str) -> str:
    """Where the ranks meet: loopback when all bundles share rank 0's node, else rank 0's address."""
    return "127.0.0.1" if len(set(bundle_nodes)) <= 1 else rank0_ip


def rendezvous(pg) -> tuple[str, int]:
    """(address, port) learner rank 0 will listen on, found on its own node (bundle 0 of `pg`)."""
    probe = ray.remote(num_cpus=0)(_node_address).options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0))
    ip, port = ray.get(probe.remote())
    nodes = placement_group_table(pg)["bundles_to_node_id"]
    return master_address([nodes[i] for i in sorted(nodes)], ip), port


class LearnerGroup:
    def __init__(self, world_size: int, model_path: str, lr: float, weight_decay: float, grad_clip: float,
                 micro_batch: int, backend: str, dtype: str, grpo: dict, seed: int,
                 num_cpus: float = 1.0, num_gpus: float = 0.0, ray_resource: str = "",
                 cpu_affinity: list[int] | None = None, reshard_after_forward: bool = True,
                 micro_batch_tokens: int = 0, gradient_checkpointing: bool = False, lora: dict | None = None):
        bundle = {"CPU": max(float(num_cpus), 0.01)}  # a bundle may not be empty
        if num_gpus:
            bundle["GPU"] = num_gpus
        if ray_resource:
            bundle[ray_resource] = 1.0
        # PACK: ranks on as few nodes as possible (intra-node links), yet a group larger than a node still fits.
        self.pg = placement_group([dict(bundle) for _ in range(world_size)], strategy="PACK")
        try:  # waits for resources, as actor creation did (the autoscaler case), but not forever
            ray.get(self.pg.ready(), timeout=PLACEMENT_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self.pg)
            raise UserError(f"learner.world_size: {world_size} ranks of {bundle} could not be placed in "
                            f"{PLACEMENT_TIMEOUT_S:.0f} s (the cluster has {ray.cluster_resources()}); "
                            "lower learner.world_size or add nodes") from None
        addr, port = rendezvous(self.pg)
        self.master = (addr, port)
        cls = ray.remote(LearnerWorker)
        self.workers = [
            cls.options(num_cpus=num_cpus, num_gpus=num_gpus, resources={ray_resource: 1.0} if ray_resource else {},
                        scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=r))
            .remote(rank=r, world_size=world_size, master_addr=addr, master_port=port,
                    model_path=model_path, lr=lr, weight_decay=weight_decay, grad_clip=grad_clip,
                    micro_batch=micro_batch, micro_batch_tokens=micro_batch_tokens,
                    gradient_checkpointing=gradient_checkpointing, backend=backend, dtype=dtype, grpo=grpo, seed=seed,
                    device=learner_device(num_gpus),
                    # as many torch threads as CPUs reserved (it was always 1: a 2-CPU rank used one core)
                    num_threads=max(1, int(num_cpus)), cpu_affinity=cpu_affinity,
                    reshard_after_forward=reshard_after_forward, lora=lora)
            for r in range(world_size)
        ]
        ray.get([w.version.remote() for w in self.workers])
        self._calls = 0  # learner calls in flight from this driver (see `busy`)
        self.mini_batches = int((grpo or {}).get("mini_batches", 1))  # which rows each rank trains

    @property
    def busy(self) -> bool:
        """True while a train step or checkpoint call runs: a call to rank 0 now would queue behind it
        (the collective weight transport then catches joiners up another way)."""
        return self._calls > 0

    def _run(self, method: str, *args):
        self._calls += 1
        try:
            return ray.get([getattr(w, method).remote(*args) for w in self.workers])
        finally:
            self._calls -= 1

    def infos(self) -> list[LearnerInfo]:
        """Each rank's `info()` (device, backend, card UUID ...)."""
        return ray.get([w.info.remote() for w in self.workers])

    def train_step(self, batch: LearnerBatch) -> LearnStats:
        """One GRPO update on every rank: each rank receives the batch's small per-row part (one
        object-store copy for all) and the references of only the rollout groups its own rows
        are in, which it fetches itself."""
        from gdro_ray.transfer.rollout_arrays import split_for_ranks

        meta, per_rank = split_for_ranks(batch, self.mini_batches, len(self.workers))
        meta_ref = ray.put(meta)
        self._calls += 1
        try:  # the references sit inside a dict, so Ray hands them over unresolved: each rank fetches its own
            stats = ray.get([w.train_step.remote(meta_ref, refs) for w, refs in zip(self.workers, per_rank)])
        finally:
            self._calls -= 1
        return LearnStats.from_ranks(stats, rollout_bytes=sum(batch.group_nbytes))

    def state_dict_bytes(self) -> bytes:
        return self._run("state_dict_bytes")[0]

    def weight_arrays_ref(self) -> tuple[object, int]:
        """(reference to rank 0's `weight_arrays` payload, its bytes): the weights stay in the
        object store; this process never fetches them."""
        self._calls += 1
        try:
            calls = [w.weight_arrays.options(num_returns=2).remote() for w in self.workers]
            sizes = ray.get([size for size, _ in calls])  # every rank took part in the gather
        finally:
            self._calls -= 1
        ray.wait([calls[0][1]], fetch_local=False)
        return calls[0][1], int(sizes[0])

    def save_checkpoint(self, path: str) -> None:
        self._run("save_checkpoint", path)

    def load_checkpoint(self, path: str) -> None:
        self._run("load_checkpoint", path)

    def version(self) -> int:
        return ray.get(self.workers[0].version.remote())

    def shutdown(self) -> None:
        for w in self.workers:
            try:
                ray.get(w.shutdown.remote(), timeout=30)
            except Exception:
                pass
            ray.kill(w, no_restart=True)
        try:
            remove_placement_group(self.pg)
        except Exception:  # already gone with the cluster
            pass
