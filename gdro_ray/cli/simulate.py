"""`gdro-ray simulate [CONFIG.yaml] [key=value…] [--algorithms a,b,…]`.

Runs each algorithm against the same synthetic pool, writes `<out>/<algorithm>/metrics.jsonl`,
`<out>/summary.json` (atomically) and `<out>/config.yaml`, and prints a comparison table
with gains relative to GRPO when GRPO is among the algorithms (`sim/compare.py`).
"""
from __future__ import annotations

import time
from pathlib import Path

from gdro_ray.config.loader import dump_config, load_config
from gdro_ray.sim.compare import comparison_table, explicit_top_keys, parse_algorithms, resolve_sim_config
from gdro_ray.utils.io import atomic_write_json, atomic_write_text


def run(args) -> int:
    from gdro_ray.sim.runner import run_algorithm  # numpy-heavy; keep `--help` fast

    cfg = load_config(getattr(args, "config", None), list(getattr(args, "overrides", None) or []))
    cfg = resolve_sim_config(cfg, explicit_top_keys(args))
    algorithms = parse_algorithms(getattr(args, "algorithms", None), cfg.algorithm)
    out = Path(cfg.out) if cfg.out else Path("runs") / f"sim-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    print(f"gdro-ray simulate: {', '.join(algorithms)} | {cfg.steps} steps × B={cfg.batch_size}, n̄={cfg.budget_mean}, "
          f"{cfg.sim.num_prompts} prompts, seed {cfg.seed} → {out}")
    summaries: dict[str, dict] = {}
    for algorithm in algorithms:
        summaries[algorithm] = run_algorithm(cfg, algorithm, out / algorithm)
    if "grpo" in summaries:
        base = summaries["grpo"]
        for s in summaries.values():
            for key in ("final_pass_at_k_mean", "final_worst_bin_pass_at_k", "final_hardest20_pass_at_k"):
                b = base[key]
                s[f"{key}_rel_vs_grpo"] = (s[key] / b - 1.0) if b > 0 else None
    atomic_write_json(out / "summary.json", {"seed": cfg.seed, "algorithms": summaries})
    print(comparison_table(summaries))
    print(f"wrote {out / 'summary.json'}")
    return 0
