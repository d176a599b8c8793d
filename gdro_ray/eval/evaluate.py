"""Evaluation: mean@k and unbiased pass@k per dataset, per tier, pooled, and the worst tier.

Algorithm:
1. Each prompt gets exactly k sampled rollouts (`Engine.generate`, temperature 0.6 and
   top-p 0.8 by default), in batches of prompts with a per-batch seed, so a run repeats.
2. Each rollout is scored by the verifier (`gdro_ray.rewards.math_reward`, or `reward_fn`);
   a rollout is correct when its reward is > 0. A prompt yields (n_i rollouts, c_i correct).
3. Per prompt: mean@k = c_i / n_i; pass@k = 1 − C(n_i − c_i, k) / C(n_i, k), the unbiased
   estimator (`gdro_ray.algorithms.passk`); with n_i = k it is "any of the k correct".
4. A group (dataset, tier, or everything pooled) reports the plain average over its prompts.
   The worst tier is the tier with the lowest pass@k (ties: lowest mean@k).

Result: an `EvalResult` (`gdro_ray.protocol`, what a sampler actor answers) from `evaluate_engine`,
and its JSON-ready `to_dict()` from `evaluate`:
    {"k", "pooled": {n_prompts, n_rollouts, mean_at_k, pass_at_k},
     "per_tier": {tier: stats}, "worst_tier": {"tier", ...stats} | None,
     "per_dataset": {source: {stats..., "per_tier", "worst_tier"}},
     "per_prompt": [{id, source, tier, n, c}], "meta": {...}}
Top-level tiers are keyed "<tier>" when one dataset has tiers, "<source>/<tier>" otherwise.

`evaluate_engine` scores an engine already loaded (sampler actors use it on their current
weights); `evaluate` loads a model folder first; the command `gdro-ray eval` is `cli/eval.py`.
"""
from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gdro_ray.engines.prompt_format import example_input
from gdro_ray.errors import DataError, UserError
from gdro_ray.protocol import EvalResult

log = logging.getLogger(__name__)

TOY_MAX_NEW_TOKENS = 28  # the toy task's responses are at most 25 tokens with the end token (see data/toy_task.py)
MATH_MAX_NEW_TOKENS = 512  # real math sets: room for a short chain of thought


# ---------------------------------------------------------------------------- aggregation
def _stats(n: np.ndarray, c: np.ndarray, k: int) -> dict:
    from gdro_ray.algorithms.passk import pass_at_k_array

    passk = pass_at_k_array(n, c, k)
    if np.isnan(passk).any():
        raise ValueError(f"pass@{k} needs at least k={k} rollouts per prompt (got min {int(n.min())})")
    return {
        "n_prompts": len(n),
        "n_rollouts": int(n.sum()),
        "mean_at_k": float(np.mean(c / n)),
        "pass_at_k": float(np.mean(passk)),
    }


def _worst(per_tier: dict) -> dict | None:
    if not per_tier:
        return None
    name = min(per_tier, key=lambda t: (per_tier[t]["pass_at_k"], per_tier[t]["mean_at_k"]))
    return {"tier": name, **per_tier[name]}


def _tier_key(tier) -> str:
    return str(int(tier)) if isinstance(tier, (int, np.integer)) or (isinstance(tier, float) and tier.is_integer()) else str(tier)


def aggregate(examples: list[dict], correct: list[list[bool]], k: int) -> dict:
    """Statistics from per-prompt correctness lists (one list of booleans per example)."""
    if len(examples) != len(correct):
        raise ValueError(f"aggregate: {len(examples)} examples but {len(correct)} correctness lists")
    if not examples:
        raise ValueError("aggregate: no examples")
    n = np.array([len(x) for x in correct], dtype=np.int64)
    c = np.array([sum(bool(v) for v in x) for x in correct], dtype=np.int64)
    sources = [str(ex.get("source") or "data") for ex in examples]
    tiers = [ex.get("tier") for ex in examples]

    per_dataset: dict = {}
    tiered_sources = []
    for source in dict.fromkeys(sources):
        rows = np.array([i for i, s in enumerate(sources) if s == source])
        entry = _stats(n[rows], c[rows], k)
        by_tier: dict = defaultdict(list)
        for i in rows:
            if tiers[i] is not None:
                by_tier[_tier_key(tiers[i])].append(i)
        per_tier = {t: _stats(n[idx], c[idx], k) for t, idx in sorted(by_tier.items(), key=lambda kv: _sort_key(kv[0]))}
        if per_tier:
            tiered_sources.append(source)
        entry["per_tier"] = per_tier
        entry["worst_tier"] = _worst(per_tier)
        per_dataset[source] = entry

    top_tiers: dict = {}
    for source in tiered_sources:
        for t, st in per_dataset[source]["per_tier"].items():
            top_tiers[t if len(tiered_sources) == 1 else f"{source}/{t}"] = st
    return {
        "k": int(k),
        "pooled": _stats(n, c, k),
        "per_tier": top_tiers,
        "worst_tier": _worst(top_tiers),
        "per_dataset": per_dataset,
        "per_prompt": [
            {"id": ex.get("id", i), "source": s, "tier": ex.get("tier"), "n": int(ni), "c": int(ci)}
            for i, (ex, s, ni, ci) in enumerate(zip(examples, sources, n, c))
        ],
    }


def _sort_key(name: str):
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


# ---------------------------------------------------------------------------- generation
class _ProgressLine:
    """One stderr line per batch; rewritten in place on a terminal, plain lines otherwise."""

    def __init__(self, total: int, enabled: bool, stream=None) -> None:
        self.total, self.enabled, self.t0 = total, enabled, time.perf_counter()
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, done: int, rollouts: int, correct: int) -> None:
        if not self.enabled:
            return
        dt = time.perf_counter() - self.t0
        line = (f"eval: {done}/{self.total} prompts | {rollouts} rollouts | mean@k so far "
                f"{correct / max(rollouts, 1):.3f} | {dt:.1f}s ({rollouts / max(dt, 1e-9):.1f} rollouts/s)")
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if done >= self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _check_examples(examples: list[dict]) -> None:
    if not examples:
        raise UserError("evaluation: no examples to evaluate")
    for i, ex in enumerate(examples):
        for col in ("prompt", "answer"):
            if not isinstance(ex.get(col), str) or not ex[col].strip():
                raise DataError(f"evaluation examples: row {i} (id {ex.get('id', i)}): missing or empty {col!r}")


def evaluate_engine(engine, examples: list[dict], k: int = 8, max_new_tokens: int = TOY_MAX_NEW_TOKENS,
                    temperature: float = 0.6, top_p: float = 0.8, seed: int = 0,
                    reward_fn: Callable[[str, str], float] | None = None, batch_prompts: int = 32,
                    progress: bool = False) -> EvalResult:
    """Evaluate the weights `engine` holds now; see the module docstring for the result."""
    if k < 1:
        raise UserError(f"evaluation: k must be >= 1, got {k}")
    _check_examples(examples)
    if reward_fn is None:
        from gdro_ray.rewards.math_reward import math_reward as reward_fn
    bar = _ProgressLine(len(examples), progress)
    correct: list[list[bool]] = []
    tokens = rollouts = hits = 0
    started = time.perf_counter()
    for b, start in enumerate(range(0, len(examples), batch_prompts)):
        batch = examples[start : start + batch_prompts]
        outs = engine.generate([example_input(ex) for ex in batch], [k] * len(batch), max_new_tokens,
                               temperature, top_p, seed=seed * 100_003 + b)
        for ex, rolls in zip(batch, outs):
            ok = [reward_fn(r.text, ex["answer"]) > 0 for r in rolls]
            correct.append(ok)
            tokens += sum(len(r.token_ids) for r in rolls)
            rollouts += len(rolls)
            hits += sum(ok)
        bar.update(len(correct), rollouts, hits)
    elapsed = time.perf_counter() - started
    return EvalResult(**aggregate(examples, correct, k), meta={
        "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed,
        "weights_version": getattr(engine, "weights_version", None), "engine": type(engine).__name__,
        "seconds": round(elapsed, 3), "tokens": tokens, "rollouts_per_s": round(rollouts / max(elapsed, 1e-9), 2),
        "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1),
    })


def resolve_model(model: str) -> Path:
    """`toy`, `smollm2` or a folder → an HF model folder (through the models package when present)."""
    try:
        from gdro_ray.models.registry import resolve_model_path
    except ImportError:
        resolve_model_path = None
    if resolve_model_path is not None:
        return Path(resolve_model_path(model))
    if model == "toy":
        from gdro_ray.models.prepare import prepare_toy_model

        return Path(prepare_toy_model())
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise UserError(f"{model}: not a model folder (no config.json) and not a known model name")
    return path


def default_max_new_tokens(examples: list[dict]) -> int:
    from gdro_ray.data.toy_task import SOURCE as TOY_SOURCE

    return TOY_MAX_NEW_TOKENS if all(ex.get("source") == TOY_SOURCE for ex in examples) else MATH_MAX_NEW_TOKENS


def evaluate(model_path: str, examples: list[dict], k: int = 8, engine: str = "vllm", max_new_tokens: int | None = None,
             temperature: float = 0.6, top_p: float = 0.8, seed: int = 0,
             reward_fn: Callable[[str, str], float] | None = None, dtype: str = "float32",
             progress: bool = True, **engine_kw) -> dict:
    """Load `model_path` (a folder, `toy` or `smollm2`) and evaluate it on `examples`: the JSON-ready
    result (`EvalResult.to_dict`), which `gdro-ray eval` writes.

    `engine="vllm"` falls back to transformers with a logged warning when vLLM cannot be
    imported. A tied-embedding model is fine here: evaluation never updates weights.
    """
    from gdro_ray.engines import make_engine

    _check_examples(examples)
    path = resolve_model(str(model_path))
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(examples)
    if engine == "vllm":
        engine_kw.setdefault("weight_updates", False)
    eng = make_engine(engine, str(path), dtype=dtype, seed=seed, fallback=True, **engine_kw)
    try:
        result = evaluate_engine(eng, examples, k=k, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_p=top_p, seed=seed, reward_fn=reward_fn, progress=progress)
    finally:
        eng.close()
    result.meta.update({"model": str(path), "engine_requested": engine, "dtype": dtype})
    return result.to_dict()


# ---------------------------------------------------------------------------- CLI
def load_examples(data: str) -> list[dict]:
    """`toy`, `champ` or a local file → examples (through `gdro_ray.data.eval_sets` when present)."""
    try:
        from gdro_ray.data.eval_sets import load_eval_set
    except ImportError:
        load_eval_set = None
    if load_eval_set is not None:
        return list(load_eval_set(data))
    if data == "toy":
        from gdro_ray.data.toy_task import make_eval_split

        return make_eval_split()
    from gdro_ray.data.dapo import load_dapo

    return load_dapo(data)


def format_table(result: dict) -> str:
    from gdro_ray.metrics.tables import table

    k = result["k"]
    rows = []
    for source, entry in result["per_dataset"].items():
        for tier, st in entry["per_tier"].items():
            rows.append([source, tier, st["n_prompts"], st["mean_at_k"], st["pass_at_k"]])
        rows.append([source, "all", entry["n_prompts"], entry["mean_at_k"], entry["pass_at_k"]])
    if len(result["per_dataset"]) > 1:
        p = result["pooled"]
        rows.append(["pooled", "all", p["n_prompts"], p["mean_at_k"], p["pass_at_k"]])
    text = table(["dataset", "tier", "prompts", f"mean@{k}", f"pass@{k}"], rows)
    if result.get("worst_tier"):
        w = result["worst_tier"]
        text += f"\nworst tier: {w['tier']} (pass@{k} {w['pass_at_k']:.3f}, mean@{k} {w['mean_at_k']:.3f})"
    return text
