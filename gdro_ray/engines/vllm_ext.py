"""vLLM worker extension: in-place weight reload from safetensors bytes.

vLLM mixes this class into its worker when the engine is built with
`worker_extension_cls="gdro_ray.engines.vllm_ext.WeightUpdateExtension"`; the engine then
calls `llm.collective_rpc("update_weights_from_bytes", args=(blob,))`.

Why bytes: collective_rpc cannot carry torch tensors (pickling memoryviews fails) and calling
a Python callable needs VLLM_ALLOW_INSECURE_SERIALIZATION. Safetensors bytes travel as a
plain `bytes` argument and hold no code. The worker's `reload_weights` maps checkpoint
names onto vLLM's fused layers (qkv, gate_up), the same path as a checkpoint load.

Only untied models are safe: for `tie_word_embeddings=True` vLLM's reload leaves the LM head
wrong without raising (see docs/stack notes); the engine refuses such models.

This module must not import vLLM at import time (vLLM imports it by dotted path itself).
"""
from __future__ import annotations


class WeightUpdateExtension:
    """Methods added to vLLM's worker object (`self` is the worker)."""

    def update_weights_from_bytes(self, blob: bytes) -> int:
        """Load a full state dict given as safetensors bytes; returns the tensor count."""
        from safetensors.torch import load as load_safetensors

        state_dict = load_safetensors(bytes(blob))
        self.reload_weights(weights_iterator=list(state_dict.items()))
        return len(state_dict)

    def weights_checksum(self) -> float:
        """Sum of all parameters (float64): a cheap probe that an update landed."""
        import torch

        model = self.model_runner.get_model()
        with torch.no_grad():
            return float(sum(p.detach().double().sum().item() for p in model.parameters()))
