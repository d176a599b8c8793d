"""The FSDP2 learner group: one Ray actor per rank around `gdro_ray.learner.LearnerWorker`.

Every rank receives the same step batch (one object-store copy) and trains on its slice; the
collectives (gradient reduce-scatter, the full-state-dict gather for publication, checkpoint
writes) run inside the workers. A rank that dies ends the job: the driver reports it and the
run resumes from its last complete checkpoint.
"""
from __future__ import annotations

import socket

import ray

from gdro_ray.learner import LearnerWorker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LearnerGroup:
    def __init__(self, world_size: int, model_path: str, lr: float, weight_decay: float, grad_clip: float,
                 micro_batch: int, backend: str, dtype: str, grpo: dict, seed: int,
                 num_cpus: float = 1.0, num_gpus: float = 0.0, ray_resource: str = ""):
        port = _free_port()
        # Ranks talk over loopback on one node; multi-node groups use the head's address.
        addr = "127.0.0.1" if num_gpus == 0 else ray.util.get_node_ip_address()
        cls = ray.remote(LearnerWorker).options(num_cpus=num_cpus, num_gpus=num_gpus,
                                                resources={ray_resource: 1.0} if ray_resource else {})
        self.workers = [
            cls.remote(rank=r, world_size=world_size, master_addr=addr, master_port=port,
                       model_path=model_path, lr=lr, weight_decay=weight_decay, grad_clip=grad_clip,
                       micro_batch=micro_batch, backend=backend, dtype=dtype, grpo=grpo, seed=seed)
            for r in range(world_size)
        ]
        ray.get([w.version.remote() for w in self.workers])

    def train_step(self, batch: dict) -> dict:
        ref = ray.put(batch)
        outs = ray.get([w.train_step.remote(ref) for w in self.workers])
        return outs[0]

    def state_dict_bytes(self) -> bytes:
        outs = ray.get([w.state_dict_bytes.remote() for w in self.workers])
        return outs[0]

    def save_checkpoint(self, path: str) -> None:
        ray.get([w.save_checkpoint.remote(path) for w in self.workers])

    def load_checkpoint(self, path: str) -> None:
        ray.get([w.load_checkpoint.remote(path) for w in self.workers])

    def version(self) -> int:
        return ray.get(self.workers[0].version.remote())

    def shutdown(self) -> None:
        for w in self.workers:
            try:
                ray.get(w.shutdown.remote(), timeout=30)
            except Exception:
                pass
            ray.kill(w, no_restart=True)
