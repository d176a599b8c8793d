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
With LoRA on (`lora`, `_lora_base`, `_lora_scale`; gdro_ray/learner/lora.py) the published and
checkpointed weights are the merged ones under the HF names, built from the adapters alone, and
the checkpoint also holds the adapter in peft's format, which is what a resume reads.
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
from gdro_ray.learner import lora as lora_io


class LearnerWeights:
    """Publication and checkpoint methods of one learner rank (a mixin of LearnerWorker)."""

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.model, options=options)

    def _hf_state(self) -> tuple[dict[str, torch.Tensor] | None, dict | None]:
        """Collective: (the full weights under the HF names, the adapters or None) on rank 0;
        (None, None) elsewhere. With LoRA only the adapters are gathered and merged into the base."""
        if self.lora is None:
            state = self._full_state_dict()
            return (state, None) if self.rank == 0 else (None, None)
        adapters = lora_io.gather_adapters(self.model, self.rank == 0)
        if self.rank != 0:
            return None, None
        return lora_io.merged_state(self._lora_base, adapters, self._lora_scale), adapters

    def publishable_state(self) -> dict[str, torch.Tensor] | None:
        """The full weights as published (compute dtype, every weight named) on rank 0; None
        elsewhere. Collective: call on every rank."""
        state, _ = self._hf_state()
        if state is None:
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
        state, adapters = self._hf_state()
        optim_state = get_optimizer_state_dict(
            self.model, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        error = None
        if self.rank == 0:
            try:
                extra = None
                if self.lora is not None:  # the adapter beside the merged folder

                    def extra(stage):
                        lora_io.write_adapter(stage / lora_io.ADAPTER_DIR, adapters, self.lora, self.model_path)

                meta = {"version": self._version, "world_size": self.world_size,
                        "lora": self.lora.as_dict() if self.lora is not None else None}
                ckpt.write_checkpoint(path, self.model_path, ckpt.publishable(state, self.config, torch.float32),
                                      optim_state, meta, extra=extra)
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
                if self.lora is not None or meta.get("lora"):
                    state = self._lora_checkpoint_state(path, meta)
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

    def _lora_checkpoint_state(self, path: str, meta: dict) -> dict[str, torch.Tensor]:
        """Rank 0: the model's whole state from a LoRA checkpoint (its adapter on the base), or
        CheckpointError when the checkpoint and the learner disagree about LoRA."""
        from pathlib import Path

        folder = Path(path) / lora_io.ADAPTER_DIR
        if self.lora is None:
            raise ckpt.CheckpointError(f"{path} holds a LoRA adapter (learner.lora.rank={meta['lora']['rank']}); "
                                       "resume it with the same learner.lora settings")
        if not (folder / lora_io.ADAPTER_WEIGHTS).is_file():
            raise ckpt.CheckpointError(f"{path} was written without LoRA (full fine-tuning) and has no adapter; "
                                       "resume it with learner.lora.rank=0")
        adapters, config = lora_io.read_adapter(folder)
        why = lora_io.check_adapter_fits(config, self.lora, folder)
        if why is not None:
            raise ckpt.CheckpointError(why)
        return lora_io.full_state(self._lora_base, adapters)
