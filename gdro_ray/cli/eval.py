"""`gdro-ray eval MODEL --data DATA [--k K] [--engine vllm|hf] [--limit N] [--out FILE]`: mean@k and
unbiased pass@k of a model folder (or `toy` / `smollm2`) on a dataset, written as JSON and printed."""
from __future__ import annotations

import sys
from pathlib import Path

from gdro_ray.errors import UserError


def run(args) -> int:
    from gdro_ray.eval.evaluate import evaluate, format_table, load_examples
    from gdro_ray.utils.io import atomic_write_json

    if args.k < 1:
        raise UserError(f"--k must be >= 1, got {args.k}")
    if args.limit < 0:
        raise UserError(f"--limit must be >= 0, got {args.limit}")
    examples = load_examples(args.data)
    if args.limit:
        examples = examples[: args.limit]
    out = Path(args.out) if args.out else Path(f"eval-{Path(str(args.model_dir)).name}-{Path(args.data).stem}-k{args.k}.json")
    result = evaluate(args.model_dir, examples, k=args.k, engine=args.engine, max_new_tokens=args.max_new_tokens,
                      seed=args.seed, progress=True)
    result["meta"].update({"data": args.data, "limit": args.limit, "command": " ".join(sys.argv)})
    atomic_write_json(out, result)
    print(format_table(result))
    print(f"wrote {out}")
    return 0
