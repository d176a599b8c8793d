"""`gdro-ray prepare [CONFIG] [key=value ...] [--force] [--seed N]`: build the toy (or smollm2-toy)
model once, cached, and print its skill per tier on the held-out split."""
from __future__ import annotations

import json
import time


def run(args) -> int:
    """`gdro-ray prepare [CONFIG] [key=value ...] [--force]`: build the toy (or smollm2-toy) model, print its skill."""
    from gdro_ray.config.loader import load_config
    from gdro_ray.models import prepare
    from gdro_ray.utils.io import atomic_write_json

    cfg = load_config(getattr(args, "config", None), getattr(args, "overrides", None) or [])
    if cfg.model.path not in ("toy", "smollm2-toy"):
        print(f"model.path={cfg.model.path!r}: only `toy` and `smollm2-toy` need `prepare` (others are used as they are)")
        return 0
    force = bool(getattr(args, "force", False))
    seed = int(getattr(args, "seed", 0) or 0)
    if cfg.model.path == "smollm2-toy":  # SmolLM2 + a short SFT on the toy answer format
        from gdro_ray.models import smollm2_toy

        target = smollm2_toy.model_dir(cfg.model.cache_dir or None, seed)
        recipe, build = smollm2_toy.SMOLLM2_TOY_SFT, smollm2_toy.prepare_smollm2_toy
        minutes = "about 20 minutes on 2 busy cores"
    else:
        target = prepare.model_dir(cfg.model.cache_dir or None, seed)
        recipe, build = prepare.DEFAULT_SFT, prepare.prepare_toy_model
        minutes = "about 2-5 minutes on 2 cores"
    cached = prepare.is_prepared(target, recipe) and not force
    print(f"{cfg.model.path} model: {target} ({'cached' if cached else 'building; ' + minutes})", flush=True)
    started = time.perf_counter()
    path = build(cfg.model.cache_dir or None, seed=seed, force=force, verbose=not cached)
    if not cached:
        print(f"warm start done in {time.perf_counter() - started:.0f} s", flush=True)
    report = path / "base_eval.json"
    max_new = int(cfg.sampler.max_new_tokens)
    result = json.loads(report.read_text()) if report.is_file() and not force else None
    if result is None or result.get("max_new_tokens") != max_new or result.get("per_tier") != cfg.data.toy_eval_per_tier:
        print(f"evaluating on the held-out split ({cfg.data.toy_eval_per_tier} prompts per tier, 8 samples each, T=1.0)", flush=True)
        result = prepare.evaluate_base(path, per_tier=cfg.data.toy_eval_per_tier, k=8, temperature=1.0, max_new_tokens=max_new)
        atomic_write_json(report, result)
    print(prepare.format_table(result))
    return 0
