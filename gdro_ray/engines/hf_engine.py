"""Transformers `generate` engine: the fallback when vLLM is missing, and the reference.

Algorithm:
- Each prompt is rendered with the chat template (`base.chat_prompt_ids`) and repeated n_i
  times, so variable rollouts per prompt become one flat list of sequences; the list is
  sorted by prompt length (less padding) and cut into batches of `batch_size` sequences.
- A batch is left-padded (decoder-only models continue from the right edge) and decoded with
  `model.generate` (sampling, or greedy when temperature == 0; `top_k=0` so only top-p
  filters, matching vLLM's defaults).
- Log-probs: a logits processor placed before temperature and top-p sees the raw logits of
  each step and keeps the sampled token's log-softmax entry (the convention of `base.py`),
  one step at a time (`output_logits` would hold steps × batch × vocab floats).
- Batches are also capped by `token_budget` (sequences × (prompt + max_new_tokens)), which
  bounds the KV cache: 256 sequences of 600 tokens of SmolLM2 would need ~7 GB in fp32.
- A sequence ends at its first end-of-sequence token (kept), else at max_new_tokens.
- Seeds: with `seed` given, the torch RNG is forked and seeded, so results repeat for the
  same inputs and batch size and the caller's global RNG is untouched.
- `update_weights` loads the safetensors state dict into the live model (strict, except
  for an LM head tied to the embeddings); `update_weights_from_tensors` takes (name, tensor)
  pairs, e.g. what the collective weight transport received (`join_weight_group` /
  `receive_weights`, the group held in this process).
"""
from __future__ import annotations

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from gdro_ray.engines.base import (
    ChatEngineBase,
    Rollout,
    check_generate_args,
    stop_token_ids,
)
from gdro_ray.engines.prompt_format import Prompt, PromptFormat


class _SampledLogprobs(LogitsProcessor):
    """A logits processor that keeps only the sampled tokens' log-probs.

    Runs first in the processor list (custom processors come before temperature and top-p),
    so it sees the raw logits. Called once per step before sampling, it holds that step's
    log-softmax (batch × vocab) and, at the next call, gathers the token that was sampled
    (now the last column of `input_ids`). Memory stays one step wide, where
    `output_logits=True` would keep steps × batch × vocab floats (GBs for a 49k vocabulary).
    """

    def __init__(self) -> None:
        self.columns: list[torch.Tensor] = []
        self.pending: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.pending is not None:
            self.columns.append(self.pending.gather(1, input_ids[:, -1:]).squeeze(1).cpu())
        self.pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """(batch, steps) log-probs of `new_tokens` (the generated part of the sequences)."""
        if self.pending is not None and new_tokens.shape[1] > len(self.columns):
            last = new_tokens[:, len(self.columns) : len(self.columns) + 1].to(self.pending.device)
            self.columns.append(self.pending.gather(1, last).squeeze(1).cpu())
        self.pending = None
        if not self.columns:
            return torch.zeros((new_tokens.shape[0], 0))
        return torch.stack(self.columns, dim=1)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFEngine(ChatEngineBase):
    """Engine backed by a transformers causal LM held in this process."""

    def __init__(self, model_path: str, dtype: str = "float32", seed: int = 0, batch_size: int = 256,
                 token_budget: int = 32768, device: str | None = None, prompt_format: dict | None = None,
                 **_unused) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.tokenizer.padding_side = "left"
        self.prompt_format = PromptFormat.from_dict(prompt_format)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=_DTYPES[dtype]).to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config)
        self.batch_size = int(batch_size)
        self.token_budget = int(token_budget)
        self.seed = int(seed)
        self.model_path = str(model_path)
        self._version = 0

    def generate(
        self,
        prompts: list[Prompt],
        n: list[int],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None = None,
    ) -> list[list[Rollout]]:
        check_generate_args(prompts, n, max_new_tokens, temperature, top_p)
        ids = self.prompt_token_ids(prompts)
        flat = [i for i, k in enumerate(n) for _ in range(int(k))]
        flat.sort(key=lambda i: len(ids[i]))  # stable: copies of one prompt stay together
        results: list[list[Rollout]] = [[] for _ in prompts]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed if seed is None else seed)
            for owners in self._batches(flat, ids, max_new_tokens):
                for i, rollout in zip(owners, self._generate_batch([ids[i] for i in owners], max_new_tokens, temperature, top_p)):
                    rollout.prompt_index = i
                    results[i].append(rollout)
        return results

    def _batches(self, flat: list[int], ids: list[list[int]], max_new_tokens: int):
        """Cut the length-sorted sequence list so a batch holds <= token_budget tokens of KV cache."""
        start = 0
        while start < len(flat):
            longest = len(ids[flat[min(start + self.batch_size, len(flat)) - 1]]) + max_new_tokens
            size = max(1, min(self.batch_size, self.token_budget // longest))
            yield flat[start : start + size]
            start += size

    @torch.no_grad()
    def _generate_batch(self, batch_ids: list[list[int]], max_new_tokens: int, temperature: float, top_p: float) -> list[Rollout]:
        width = max(len(x) for x in batch_ids)
        input_ids = torch.full((len(batch_ids), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch_ids), width), dtype=torch.long)
        for row, x in enumerate(batch_ids):
            input_ids[row, width - len(x) :] = torch.tensor(x, dtype=torch.long)
            attention[row, width - len(x) :] = 1
        sampling = temperature > 0
        # A fresh generation config: nothing from the model's own (repetition penalty, top_k
        # defaults, min lengths) changes the distribution behind our back.
        sampling_kw = {"temperature": float(temperature), "top_p": float(top_p), "top_k": 0} if sampling else {}
        config = GenerationConfig(max_new_tokens=int(max_new_tokens), eos_token_id=sorted(self.stop_ids),
                                  pad_token_id=self.pad_id, do_sample=sampling, **sampling_kw)
        recorder = _SampledLogprobs()
        sequences = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
            generation_config=config, logits_processor=LogitsProcessorList([recorder]),
        )
        new_tokens = sequences[:, width:].cpu()
        token_logprobs = recorder.finish(new_tokens)
        rollouts = []
        for row in range(len(batch_ids)):
            toks = new_tokens[row].tolist()
            finish = "length"
            for j, t in enumerate(toks):
                if t in self.stop_ids:
                    toks, finish = toks[: j + 1], "stop"
                    break
            toks = toks[:max_new_tokens]
            rollouts.append(
                Rollout(
                    prompt_index=-1,
                    token_ids=toks,
                    text=self.tokenizer.decode(toks, skip_special_tokens=True),
                    logprobs=[float(v) for v in token_logprobs[row, : len(toks)]],
                    finish_reason=finish,
                )
            )
        return rollouts

    def update_weights(self, blob: bytes, version: int) -> None:
        from safetensors.torch import load as load_safetensors

        self.update_weights_from_tensors(list(load_safetensors(bytes(blob)).items()), version)

    def update_weights_from_tensors(self, named: list[tuple[str, torch.Tensor]], version: int) -> None:
        state_dict = dict(named)
        if not state_dict:
            raise ValueError("update_weights: the blob holds no tensors")
        # Check names and shapes before touching the model, so a bad blob changes nothing.
        current = self.model.state_dict()
        tied = bool(getattr(self.model.config, "tie_word_embeddings", False))
        missing = [k for k in current if k not in state_dict and not (tied and k.startswith("lm_head."))]
        unexpected = [k for k in state_dict if k not in current]
        wrong_shape = [k for k, v in state_dict.items() if k in current and tuple(v.shape) != tuple(current[k].shape)]
        if missing or unexpected or wrong_shape:
            raise ValueError(
                f"update_weights: state dict does not match the model (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}, wrong shape {wrong_shape[:3]})"
            )
        self.model.load_state_dict(state_dict, strict=False)
        if tied:
            self.model.tie_weights()
        self._version = int(version)

    # -- collective weight transport: the group lives in this process -------------------------
    def join_weight_group(self, spec: dict) -> None:
        from gdro_ray.transfer.weight_group import WeightReceiver

        self.leave_weight_group()
        self._receiver = WeightReceiver(spec, self.device)

    def receive_weights(self, layout: dict, version: int) -> None:
        if getattr(self, "_receiver", None) is None:
            raise RuntimeError("receive_weights: not in a weight group (join_weight_group first)")
        self.update_weights_from_tensors(self._receiver.receive(layout), version)

    def leave_weight_group(self) -> None:
        if getattr(self, "_receiver", None) is not None:
            self._receiver.close()
        self._receiver = None

    def weights_checksum(self) -> float:
        """Float64 sum of every parameter (a tied LM head counts once)."""
        with torch.no_grad():
            return float(sum(p.detach().double().sum().item() for p in self.model.parameters()))

    def close(self) -> None:
        self.leave_weight_group()
        self.model = None
