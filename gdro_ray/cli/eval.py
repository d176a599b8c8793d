"""`gdro-ray eval MODEL --data DATA [--k K] [--engine vllm|hf] [--limit N] [--out FILE]
[--config FILE] [prompt.key=value ...]`: mean@k and unbiased pass@k of a model folder (or `toy` /
`smollm2`) on a dataset, written as JSON and printed.

The prompt is formatted as in training (`prompt.*`: template, system prompt, template arguments,
instruction), taken from `--config` (a training YAML or a run's config.yaml) and the `prompt.`
overrides; the defaults are training's defaults. A checkpoint trained under one format should be
evaluated under it: pass the run's config.yaml. The format used is recorded in the result."""
from __future__ import annotations

import sys
from pathlib import Path

from gdro_ray.errors import UserError


def prompt_settings(config: str | None, overrides: list[str]):
    """The `prompt` section from `config` and `overrides`, validated as training validates it;
    anything but `prompt.*` in the overrides is refused (one line)."""
    from gdro_ray.config import load_config

    other = [o for o in overrides if not o.split("=", 1)[0].strip().startswith("prompt.")]
    if other:
        raise UserError(f"gdro-ray eval takes only prompt.* settings as key=value, got {other[0]!r} "
                        "(the model, data and sampling are flags: see gdro-ray eval --help)")
    return load_config(config, overrides).prompt


def run(args) -> int:
    from gdro_ray.engines.prompt_format import PromptFormat, with_instruction
    from gdro_ray.eval.evaluate import evaluate, format_table, load_examples
    from gdro_ray.utils.io import atomic_write_json

    if args.k < 1:
        raise UserError(f"--k must be >= 1, got {args.k}")
    if args.limit < 0:
        raise UserError(f"--limit must be >= 0, got {args.limit}")
    prompt = prompt_settings(getattr(args, "config", None), list(getattr(args, "overrides", None) or []))
    fmt = PromptFormat.from_config(prompt)
    examples = with_instruction(load_examples(args.data), prompt.instruction)
    if args.limit:
        examples = examples[: args.limit]
    out = Path(args.out) if args.out else Path(f"eval-{Path(str(args.model_dir)).name}-{Path(args.data).stem}-k{args.k}.json")
    result = evaluate(args.model_dir, examples, k=args.k, engine=args.engine, max_new_tokens=args.max_new_tokens,
                      seed=args.seed, progress=True, prompt_format=fmt.to_dict())
    result["meta"].update({"data": args.data, "limit": args.limit, "command": " ".join(sys.argv),
                           "prompt_format": fmt.to_dict(), "instruction": prompt.instruction})
    atomic_write_json(out, result)
    print(format_table(result))
    print(f"wrote {out}")
    return 0
