"""SmolLM2 GGUF -> untied HF folder, and model-name resolution."""
from __future__ import annotations

import json

import pytest

from gdro_ray.errors import UserError
from gdro_ray.models import registry, smollm2


@pytest.fixture(scope="module")
def converted():
    return smollm2.convert_smollm2()  # cached under $GDRO_RAY_CACHE after the first run (~1 min)


@pytest.mark.slow
def test_converted_folder_is_untied_and_loads(converted):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert smollm2.is_converted(converted)
    assert json.loads((converted / "config.json").read_text())["tie_word_embeddings"] is False
    with safe_open(str(converted / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert {"lm_head.weight", "model.embed_tokens.weight"} <= keys
        assert torch.equal(f.get_tensor("lm_head.weight"), f.get_tensor("model.embed_tokens.weight"))

    model = AutoModelForCausalLM.from_pretrained(converted)
    tok = AutoTokenizer.from_pretrained(converted)
    assert model.config.tie_word_embeddings is False
    head, embed = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert head.dtype == torch.float32
    assert head.data_ptr() != embed.data_ptr() and torch.equal(head, embed)
    assert tok.eos_token == "<|im_end|>" and tok.chat_template
    chat = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True,
                                   return_tensors="pt", return_dict=True)
    assert tok.decode(chat["input_ids"][0]).endswith("<|im_start|>assistant\n")
    out = model.generate(**chat, max_new_tokens=6, do_sample=False)
    new = out[0, chat["input_ids"].shape[1]:]
    assert 1 <= len(new) <= 6
    assert tok.decode(new, skip_special_tokens=True).strip()  # real weights say something
    with torch.no_grad():                         # separate storage: changing one leaves the other
        head[0, 0] += 1.0
    assert not torch.equal(head, embed)


@pytest.mark.slow
def test_conversion_is_cached(converted):
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert smollm2.convert_smollm2() == converted
    assert registry.resolve_model_path("smollm2") == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp


def test_gguf_is_found_without_importing_the_package():
    path = smollm2.gguf_file()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_resolve_model_path_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "config.json").write_text("{}")
    assert registry.resolve_model_path(str(tmp_path)) == tmp_path
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="config.json"):
        registry.resolve_model_path(str(empty))
    with pytest.raises(UserError, match="offline|not found"):
        registry.resolve_model_path("no-such-owner/no-such-model-xyz")
    with pytest.raises(UserError, match="not a folder"):
        registry.resolve_model_path(str(tmp_path / "missing" / "dir"))
