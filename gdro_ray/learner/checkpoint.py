"""Learner checkpoint folder and weight-publication helpers (rank-0 side, no collectives).

Folder layout (written atomically through `gdro_ray.utils.io.atomic_dir`):
    config.json, generation_config.json, tokenizer files ...  copied from the source model folder
    model.safetensors     full fp32 weights, HF key names: the folder loads with from_pretrained
    optimizer.pt          full (unsharded) AdamW state keyed by parameter name; tensors and plain
                          values only, so it loads with torch.load(weights_only=True)
    learner_state.json    {"version": optimizer steps, "world_size": ranks that wrote it,
                           "lora": the learner.lora settings, or null for full fine-tuning}
    adapter/              with LoRA only: the adapter in peft's format (adapter_model.safetensors,
                          adapter_config.json); model.safetensors then holds the merged weights
A full (not sharded) optimizer state lets a run resume on a different number of ranks.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save, save_file

from gdro_ray.errors import CheckpointError
from gdro_ray.utils.io import atomic_dir

WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "learner_state.json"
# Weight files of the source folder are replaced by ours; everything else (config, tokenizer,
# chat template, generation config) is copied so the checkpoint is a complete HF model folder.
_NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")
_NOT_COPIED_NAMES = {STATE_FILE}

__all__ = ["CheckpointError", "publishable", "to_safetensors_bytes", "write_checkpoint", "read_checkpoint"]


def publishable(state: dict[str, torch.Tensor], config, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Contiguous, storage-unshared tensors in `dtype`, with an explicit `lm_head.weight`.

    safetensors refuses tensors that share storage (tied embeddings), so shared ones are
    copied; a tied config still gets `lm_head.weight` written, because vLLM's in-place reload
    needs every weight named (it leaves a tied LM head wrong without raising).
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state.items():
        t = tensor.detach().to(dtype).contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    if getattr(config, "tie_word_embeddings", False) and "lm_head.weight" not in out:
        embed = [k for k in out if k.endswith("embed_tokens.weight")]
        if embed:
            out["lm_head.weight"] = out[embed[0]].clone()
    return out


def to_safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    return save(state, metadata={"format": "pt", **(metadata or {})})


def write_checkpoint(path: str, source_model_path: str, state: dict[str, torch.Tensor],
                     optim_state: dict, meta: dict, extra=None) -> None:
    """`extra(stage)`, when given, writes more files into the staging folder before it is committed."""
    source = Path(source_model_path)
    with atomic_dir(path) as stage:
        for item in source.iterdir():
            if item.is_file() and item.name not in _NOT_COPIED_NAMES and not item.name.endswith(_NOT_COPIED_SUFFIXES):
                shutil.copy2(item, stage / item.name)
        save_file(state, str(stage / WEIGHTS_FILE), metadata={"format": "pt"})
        torch.save(optim_state, stage / OPTIMIZER_FILE)
        (stage / STATE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if extra is not None:
            extra(stage)


def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(weights, optimizer state, meta) from a folder written by `write_checkpoint`."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"learner checkpoint {folder} does not exist")
    missing = [f for f in (WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE) if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"learner checkpoint {folder} is incomplete: missing {', '.join(missing)}")
    try:
        meta = json.loads((folder / STATE_FILE).read_text())
        int(meta["version"])
        state = load_file(str(folder / WEIGHTS_FILE))
        optim_state = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"learner checkpoint {folder} is corrupt: {type(exc).__name__}: {exc}") from exc
    return state, optim_state, meta
