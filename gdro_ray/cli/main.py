"""`gdro-ray`: the one command-line entry point.

Subcommands import their implementation lazily so that `gdro-ray --help` and config
validation stay fast and never import Ray, torch or vLLM.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from gdro_ray.errors import UserError

# subcommand -> (module, function): every command lives in this package as `cli/<name>.py`, whose
# `run` takes the parsed argparse namespace and returns an exit code. The domain packages below
# export functions, never a command.
COMMANDS = {name: (f"gdro_ray.cli.{name}", "run")
            for name in ("simulate", "prepare", "train", "eval", "status", "report", "scale", "config")}


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config file (optional)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. prompt_gdro.eta=0.5")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gdro-ray", description="Group-DRO RL post-training for LLM reasoning on Ray.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("simulate", help="run the controllers against a synthetic learner (seconds)")
    _add_config_args(p)
    p.add_argument("--algorithms", default=None, help="comma list to compare (default: the config's algorithm)")

    p = sub.add_parser("prepare", help="build and warm-start the embedded toy model (cached)")
    _add_config_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    p.add_argument("--seed", type=int, default=0, help="seed of the toy model (one cache entry per seed)")

    p = sub.add_parser("train", help="run RL training on Ray (embedded default with no arguments)")
    _add_config_args(p)
    p.add_argument("--dry-run", action="store_true", help="resolve, validate and print the config; start nothing")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue from the run's last intact checkpoint "
                   "(its config.yaml plus key=value overrides)")
    p.add_argument("--overwrite", action="store_true", help="clear the run folder of an earlier run and start over")

    p = sub.add_parser("eval", help="mean@k and unbiased pass@k of a model on a dataset")
    p.add_argument("model_dir", help="HF model folder, or `toy` / `smollm2`")
    p.add_argument("--data", default="toy", help="`toy`, `champ`, or a local .parquet/.jsonl file")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N prompts")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--out", default=None, help="JSON output path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None, metavar="FILE",
                   help="take the prompt format (prompt.*) from this training config, e.g. a run's config.yaml")
    p.add_argument("overrides", nargs="*", metavar="prompt.key=value",
                   help="prompt settings as in training, e.g. prompt.system='Be brief.' prompt.template=raw")

    p = sub.add_parser("status", help="the running job's adversary state")
    p.add_argument("--address", default=None, help="Ray address (default: auto)")
    p.add_argument("--namespace", default="gdro_ray")

    p = sub.add_parser("report", help="curriculum plots and report.md from run directories")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default=None)

    p = sub.add_parser("scale", help="grow or shrink the sampler pool of a running job")
    p.add_argument("--samplers", type=int, required=True)
    p.add_argument("--address", default=None)
    p.add_argument("--namespace", default="gdro_ray")

    p = sub.add_parser("config", help="show the resolved config or document every key")
    _add_config_args(p)
    p.add_argument("--keys", action="store_true", help="list every key with its default and meaning")
    return ap


def main(argv: list[str] | None = None) -> int:
    from gdro_ray.utils.env import setup_env

    ap = build_parser()
    # Flags and key=value overrides mix in any order: argparse fills the positionals once, so the
    # overrides after a flag come back unparsed, and they are overrides all the same.
    args, extra = ap.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or not isinstance(getattr(args, "overrides", None), list)]
    if stray:
        ap.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if not args.command:
        ap.print_help()
        return 2
    # A YAML path is optional; a first positional with '=' is an override, not a file.
    if getattr(args, "config", None) and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        args.overrides = [args.config, *args.overrides]
        args.config = None
    mod, fn = COMMANDS[args.command]
    try:
        setup_env()  # temp folders that cannot be made private are a one-line refusal too
        if getattr(args, "overrides", None):
            from gdro_ray.config.loader import check_unique_overrides

            check_unique_overrides(args.overrides)  # the same key twice: the last would silently win
        return int(getattr(importlib.import_module(mod), fn)(args) or 0)
    except UserError as e:
        # A UserError raised inside a Ray task or actor arrives as Ray's error type derived from it,
        # whose text is the whole remote traceback; the user needs the original one line.
        cause = getattr(e, "cause", None)
        print(f"gdro-ray {args.command}: error: {cause if isinstance(cause, UserError) else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gdro-ray {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
