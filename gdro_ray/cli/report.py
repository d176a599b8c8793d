"""`gdro-ray report RUN_DIR [RUN_DIR ...] [--out DIR]`: curriculum plots and report.md, runs overlaid."""
from __future__ import annotations


def run(args) -> int:
    from gdro_ray.metrics.report import render

    out = render(args.run_dirs, args.out)
    print(f"report written to {out}/report.md")
    return 0
