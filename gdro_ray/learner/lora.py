"""LoRA adapters on the learner's model (peft), and what leaves the learner when they are on.

The learner wraps the HF model with peft's `get_peft_model` before FSDP2 shards it, so the base
weights are frozen FSDP2 parameters and only the adapters are trainable (and in AdamW). Names:
peft nests the HF model as `base_model.model.<hf name>`, the wrapped linear's own weight becomes
`<module>.base_layer.weight` and the adapter `<module>.lora_A.default.weight` / `lora_B`.

Samplers and checkpoints get the merged weights W + scaling·(B @ A) under the HF names (vLLM and
plain transformers know nothing of adapters). The base weights never change, so rank 0 keeps one
fp32 CPU copy of them from before sharding (`base_weights`), and a publication gathers only the
adapters (`gather_adapters`, a few MB) instead of the whole model: that copy costs rank 0 one
model's size of host memory for the run, where full fine-tuning gathers a model's size at every
publication. Checkpoints also hold the adapter alone in peft's format (`adapter/`, loads with
`PeftModel.from_pretrained(base, <ckpt>/adapter)`); a resume reads it back from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

ADAPTER_DIR = "adapter"  # a subfolder: an adapter_config.json at the top would make transformers
# load the checkpoint folder as an adapter onto the base model, not as the merged model
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_NAME = "default"  # peft's name of the one adapter
PEFT_PREFIX = "base_model.model."
_BASE_LAYER = ".base_layer"
_LORA_KEYS = (".lora_A.", ".lora_B.")


@dataclass(frozen=True)
class LoraSettings:
    """The `learner.lora` section as the learner takes it (rank ≥ 1: on)."""

    rank: int
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("all-linear",)

    @classmethod
    def from_dict(cls, d: dict | None) -> LoraSettings | None:
        """None when LoRA is off (no section, or rank 0)."""
        if not d or int(d.get("rank", 0)) == 0:
            return None
        s = cls(int(d["rank"]), float(d.get("alpha", 16.0)), float(d.get("dropout", 0.0)), tuple(d.get("target_modules") or ("all-linear",)))
        if s.rank < 1 or not s.alpha > 0 or not 0 <= s.dropout < 1 or not s.target_modules:
            raise ValueError(f"learner.lora: needs rank ≥ 1, alpha > 0, dropout in [0, 1) and target modules, got {s}")
        return s

    def as_dict(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "target_modules": list(self.target_modules)}

    def peft_config(self):
        from peft import LoraConfig

        # peft takes every linear layer but the output head only as the one string
        targets = "all-linear" if self.target_modules == ("all-linear",) else list(self.target_modules)
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets, bias="none", task_type="CAUSAL_LM")


def apply_lora(model, settings: LoraSettings):
    """`model` wrapped by peft with fresh adapters (B = 0, so the policy starts as the base)."""
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, settings.peft_config())
    except ValueError as exc:  # peft's "Target modules ... not found", named by our key
        raise ValueError(f"learner.lora.target_modules: {exc}") from None
    tied = getattr(model.config, "tie_word_embeddings", False)
    adapted = [name for name, _ in lora_modules(peft_model)]
    if not adapted:
        raise ValueError(f"learner.lora.target_modules: {list(settings.target_modules)} matches no layer of the model")
    if tied and any(n.endswith(("lm_head", "embed_tokens")) for n in adapted):
        # merged, the two would differ, yet a tied model has one matrix for both
        raise ValueError("learner.lora.target_modules: the model ties its embeddings to lm_head; adapt neither")
    return peft_model


def lora_modules(peft_model):
    """(name, module) of every adapted layer."""
    return [(n, m) for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and ADAPTER_NAME in getattr(m, "lora_A", {})]


def scalings(peft_model) -> dict[str, float]:
    """peft's own scale of each adapted layer's B @ A (alpha / rank), keyed by the layer's name."""
    return {n: float(m.scaling[ADAPTER_NAME]) for n, m in lora_modules(peft_model)}


def is_adapter_key(name: str) -> bool:
    return any(k in name for k in _LORA_KEYS)


def base_weights(peft_model) -> dict[str, torch.Tensor]:
    """fp32 CPU copies of the frozen weights (every state-dict key that is not an adapter's),
    taken before sharding: what the merged weights are built on for the whole run."""
    return {k: v.detach().to("cpu", torch.float32, copy=True) for k, v in peft_model.state_dict().items() if not is_adapter_key(k)}


def gather_adapters(model, on_rank0: bool) -> dict[str, torch.Tensor] | None:
    """Collective: every adapter weight in full (fp32, CPU) on rank 0, by parameter name; None
    elsewhere. Every rank walks the parameters in the same order, one all-gather each."""
    out = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        full = p.full_tensor() if isinstance(p, DTensor) else p
        if on_rank0:
            out[name] = full.detach().to("cpu", torch.float32, copy=True)
    return out if on_rank0 else None


def hf_name(name: str) -> str:
    """The HF model's name of a peft parameter (`base_model.model.` and `.base_layer` dropped)."""
    if name.startswith(PEFT_PREFIX):
        name = name[len(PEFT_PREFIX) :]
    return name.replace(_BASE_LAYER + ".", ".")


def merged_state(base: dict[str, torch.Tensor], adapters: dict[str, torch.Tensor], scale: dict[str, float]) -> dict[str, torch.Tensor]:
    """The merged model under HF names: W + scaling·(B @ A) for each adapted layer (computed as
    peft's `merge_and_unload` does), the other weights as they are. fp32."""
    out = {}
    for key, w in base.items():
        module = key[: -len(".base_layer.weight")] if key.endswith(".base_layer.weight") else None
        if module is not None and module in scale:
            a = adapters[f"{module}.lora_A.{ADAPTER_NAME}.weight"]
            b = adapters[f"{module}.lora_B.{ADAPTER_NAME}.weight"]
            w = w + (b @ a) * scale[module]
        out[hf_name(key)] = w
    return out


def full_state(base: dict[str, torch.Tensor], adapters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The peft model's whole state dict (its own names): base weights plus adapters."""
    return {**base, **adapters}


# ------------------------------------------------------------------ checkpoint files (rank 0)
def _file_key(name: str) -> str:
    # peft's files name the adapter weights without the adapter's name
    return name.replace(f".{ADAPTER_NAME}.weight", ".weight")


def _param_key(key: str) -> str:
    for part in _LORA_KEYS:
        if part in key:
            head, tail = key.split(part, 1)
            return f"{head}{part}{ADAPTER_NAME}.{tail}"
    return key


def write_adapter(folder: Path, adapters: dict[str, torch.Tensor], settings: LoraSettings, base_model_path: str) -> None:
    """The adapter as peft saves it (`adapter_model.safetensors` + `adapter_config.json`)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = settings.peft_config()
    config.base_model_name_or_path = str(base_model_path)
    config.save_pretrained(str(folder))
    save_file({_file_key(k): v.contiguous() for k, v in adapters.items()}, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def read_adapter(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(adapter weights under the parameter names, adapter_config.json) of `write_adapter`'s folder."""
    from safetensors.torch import load_file

    weights = load_file(str(folder / ADAPTER_WEIGHTS))
    config = json.loads((folder / "adapter_config.json").read_text())
    return {_param_key(k): v for k, v in weights.items()}, config


def check_adapter_fits(config: dict, settings: LoraSettings, folder: Path) -> str | None:
    """Why a saved adapter cannot continue with `settings` (None when it can)."""
    want = settings.peft_config()
    saved_targets = config.get("target_modules")
    saved_targets = sorted(saved_targets) if isinstance(saved_targets, list) else saved_targets
    want_targets = sorted(want.target_modules) if isinstance(want.target_modules, (set, list)) else want.target_modules
    for key, saved, now in (
        ("rank", config.get("r"), want.r),
        ("alpha", config.get("lora_alpha"), want.lora_alpha),
        ("target_modules", saved_targets, want_targets),
    ):
        if saved != now:
            return f"{folder} was written with learner.lora.{key}={saved!r}, the learner has {now!r}"
    return None
