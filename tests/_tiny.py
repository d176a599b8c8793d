"""Test helper: a tiny random untied Qwen3 with a one-token-per-character tokenizer.

`initializer_range=0.5` makes random models produce varied greedy outputs, so two seeds
are told apart by their greedy text (with 0.02 every model just repeats a token).
"""
from __future__ import annotations

import string
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]


def char_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + list(string.printable))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>",
        chat_template=CHAT_TEMPLATE, padding_side="left",
    )


def tiny_model(seed: int, tied: bool = False):
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=512, tie_word_embeddings=tied,
        initializer_range=0.5, eos_token_id=2, pad_token_id=0, bos_token_id=None,
    )
    model = Qwen3ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=2, pad_token_id=0, do_sample=True, top_k=0)
    return model


def save_tiny(out: Path, seed: int, tied: bool = False) -> Path:
    """Write an HF model folder (weights, config, tokenizer) for a tiny model of this seed."""
    out = Path(out)
    tiny_model(seed, tied).save_pretrained(out)
    char_tokenizer().save_pretrained(out)
    return out


def state_dict_bytes(model) -> bytes:
    """Safetensors bytes of a model's full state dict (what the learner publishes)."""
    from safetensors.torch import save

    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    return save(sd)


def hf_greedy(model_dir: Path, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """Reference greedy token ids from plain transformers, one prompt at a time (no padding)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=2, pad_token_id=0)
        gen = y[0, x.shape[1]:].tolist()
        if 2 in gen:
            gen = gen[: gen.index(2) + 1]
        out.append(gen)
    return out

