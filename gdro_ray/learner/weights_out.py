"""Weights out of the FSDP2 learner: publication to the samplers and checkpoints.

`LearnerWeights` is mixed into `LearnerWorker` (gdro_ray/learner/worker.py); every method is a
collective over the learner ranks unless it says otherwise. It reads the rank's `model`,
`optimizer`, `rank`, `world_size`, `config`, `compute_dtype`, `device`, `model_path`, `_version`
and `_sender`.

Publication: the full state dict is gathered on rank 0 and published in the compute dtype with
every weight named (vLLM's in-place reload is only correct for untied embeddings:
when the config ties them, `lm_head.weight` is written explicitly), as safetensors bytes, as
numpy arrays for Ray's object store (`gdro_ray.transfer.weight_arrays`), or staged as flat buckets for the
collective transport's `WeightSender` (a private process group, not FSDP2's). Checkpoints: rank 0
writes an HF-loadable folder plus the optimizer state atomically, and reads it back for all.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from gdro_ray.learner import checkpoint as ckpt


class LearnerWeights:
    """Publication and checkpoint methods of one learner rank (a mixin of LearnerWorker)."""

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.model, options=options)

    def publishable_state(self) -> dict[str, torch.Tensor] | None:
        """The full weights as published (compute dtype, every weight named) on rank 0; None
        elsewhere. Collective: call on every rank."""
        state = self._full_state_dict()
        if self.rank != 0:
            return None
        return ckpt.publishable(state, self.config, dtype=self.compute_dtype)

    def state_dict_bytes(self) -> bytes | None:
        """safetensors bytes of the full weights (in the compute dtype) on rank 0; None elsewhere.
        Collective: call on every rank."""
        state = self.publishable_state()
        if state is None:
            return None
        return ckpt.to_safetensors_bytes(state, metadata={"version": str(self._version)})

    def weight_arrays(self) -> tuple[int, dict | None]:
        """Collective: the full weights as numpy arrays in the published dtype on rank 0
        (`gdro_ray.transfer.weight_arrays`; returned into Ray's object store, read in place by the
        samplers), with their byte count; (0, None) on other ranks."""
        from gdro_ray.transfer import weight_arrays

        state = self.publishable_state()
        if state is None:
            return 0, None
        payload = weight_arrays.to_arrays(state, self._version)
        return weight_arrays.nbytes(payload), payload

    def weight_publish_prepare(self, bucket_bytes: int) -> dict | None:
        """Collective: gather the full weights; rank 0 stages them as flat per-dtype buckets for
        the collective weight transport and returns their layout (None on other ranks)."""
        t0 = time.perf_counter()
        state = self.publishable_state()
        if state is None:
            return None
        gather_s = time.perf_counter() - t0
        return dict(self.weight_sender("stage", state, self._version, bucket_bytes), gather_s=gather_s)

    def weight_sender(self, method: str, *args):
        """Rank 0: call `WeightSender.<method>` (host, open, broadcast, catch_up, staged_bytes, close)."""
        if self.rank != 0:
            raise RuntimeError("the weight sender lives on learner rank 0")
        if self._sender is None:
            from gdro_ray.transfer.weight_group import WeightSender

            self._sender = WeightSender(self.device)
        return getattr(self._sender, method)(*args)

    def save_checkpoint(self, path: str) -> None:
        """Collective. Rank 0 writes an HF-loadable folder plus optimizer state, atomically."""
        state = self._full_state_dict()
        optim_state = get_optimizer_state_dict(
            self.model, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        error = None
        if self.rank == 0:
            try:
                ckpt.write_checkpoint(path, self.model_path, ckpt.publishable(state, self.config, torch.float32),
                                      optim_state, {"version": self._version, "world_size": self.world_size})
            except Exception as exc:  # tell the other ranks before raising, so none hangs
                error = f"{type(exc).__name__}: {exc}"
        flag = [error]
        dist.broadcast_object_list(flag, src=0)
        if flag[0] is not None:
            raise RuntimeError(f"checkpoint save to {path} failed on rank 0: {flag[0]}")

    def load_checkpoint(self, path: str) -> None:
        """Collective. Rank 0 reads the folder and broadcasts weights and optimizer state."""
        payload: list = [None, None]
        state: dict = {}
        optim_state: dict = {}
        if self.rank == 0:
            try:
                state, optim_state, meta = ckpt.read_checkpoint(path)
                payload = [None, int(meta["version"])]
            except Exception as exc:
                payload = [str(exc), None]
        dist.broadcast_object_list(payload, src=0)
        if payload[0] is not None:
            raise ckpt.CheckpointError(payload[0])
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, cpu_offload=True)
        set_model_state_dict(self.model, state, options=options)
        set_optimizer_state_dict(self.model, self.optimizer, optim_state, options=options)
        self._version = payload[1]
