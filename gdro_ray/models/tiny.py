"""The tiny base model of the embedded default: a character tokenizer and a small Qwen3.

Tokenizer: one token per printable ASCII character (100) plus four specials,
`<|endoftext|>` (pad, id 0), `<|im_start|>` (1), `<|im_end|>` (2, end of a turn = eos) and
`<unk>` (3); built locally with `tokenizers` (no hub). A ChatML-like template renders
`[{"role": "user", "content": p}]` as ``<|im_start|>user\\n{p}<|im_end|>\\n`` and, with
`add_generation_prompt`, appends ``<|im_start|>assistant\\n``. Padding is on the left
(decoder-only generation continues from the right edge). `decode(encode(s)) == s` for any
printable text, chat markup included.

Model: `Qwen3ForCausalLM` with **untied** input and output embeddings: vLLM's in-place
weight reload silently corrupts tied ones. The vocabulary is padded to
128 rows. Sizes: `tiny` (hidden 128, 2 layers, 328k parameters) is the toy default.
Defaults that differ from Qwen's: RoPE base 100 (contexts here are < 128 tokens; with 10^4
most rotary frequencies are too slow to matter and the warm start learned digit alignment
later, see `prepare.py`). `initializer_range` stays at 0.02, which trains fastest; note that
at that scale untrained models of different seeds often all echo the last prompt token
greedily, so tests that must tell random models apart should compare weights or pass a
larger `init_range`.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>")
PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<|endoftext|>", "<|im_end|>", "<unk>"
VOCAB_ROWS = 128  # 104 used; a multiple of 64 keeps the matmuls aligned
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# name -> (hidden, intermediate, layers, attention heads, kv heads, head_dim)
SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "nano": (64, 128, 1, 2, 1, 32),  # for fast unit tests only
    "tiny": (128, 256, 2, 4, 2, 32),  # 328k parameters: the toy default
    "small": (192, 512, 3, 6, 2, 32),
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The character-level tokenizer with specials and the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + list(string.printable))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")  # one token per char
    core.decoder = decoders.Fuse()  # join characters back without separators
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=1024,
    )
    return tok


def build_model(size: str = "tiny", seed: int = 0, tokenizer: PreTrainedTokenizerFast | None = None,
                init_range: float = 0.02, rope_theta: float = 100.0) -> Qwen3ForCausalLM:
    """A freshly initialised, untied Qwen3 of the named size (deterministic in `seed`)."""
    if size not in SIZES:
        raise ValueError(f"unknown tiny model size {size!r} (known: {', '.join(SIZES)})")
    hidden, inter, layers, heads, kv_heads, head_dim = SIZES[size]
    tok = tokenizer or build_tokenizer()
    cfg = Qwen3Config(
        vocab_size=VOCAB_ROWS,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=512,
        rope_theta=rope_theta,
        tie_word_embeddings=False,
        initializer_range=init_range,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        use_cache=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(cfg)
    model.generation_config = generation_config(tok)
    return model.float()


def generation_config(tok: PreTrainedTokenizerFast) -> GenerationConfig:
    # top_k=0: only temperature/top-p shape the distribution, as in vLLM's defaults
    return GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=True, top_k=0, max_new_tokens=24
    )


def save(model: Qwen3ForCausalLM, tok: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    """Write an HF folder (safetensors + tokenizer + chat template) that vLLM and FSDP2 load."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def load(model_dir: str | Path) -> tuple[Qwen3ForCausalLM, PreTrainedTokenizerFast]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    return model, tok
