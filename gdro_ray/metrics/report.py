"""`gdro-ray report RUN_DIR [RUN_DIR …]`: the emergent curriculum as PNG plots and report.md.

Plots (one file each, every run overlaid where curves can be):
- `bin_weights_<run>.png`  heatmap of the Prompt-GDRO distribution q over bins × steps
- `rollouts_<run>.png`     heatmap of the rollout share per bin × steps (Rollout-GDRO)
- `pass_at_k.png`          pass@k per bin over steps (one panel per run)
- `lead_lag.png`           Δμ = Σ_b b·q_b − Σ_b b·share_b: how far the adversary's weight
                           leads (>0: towards easier bins) the data it sees (paper Eq. 32)
- `reward.png`             reward mean per step, all runs overlaid
- `eval.png`               held-out pooled and worst-tier pass@k against training steps, all runs
                           overlaid: the `eval` records of metrics.jsonl (base, every eval.every
                           steps, final), or eval_base.json/eval_final.json of older runs
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gdro_ray.errors import UserError
from gdro_ray.metrics.samples import SampleLog, samples_markdown
from gdro_ray.utils.io import atomic_write_text

FIGSIZE = (8, 4.5)
DPI = 100


def load_run(run_dir: Path) -> dict:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl (not a run directory)")
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}: line {i} is not valid JSON") from None
    # metrics.jsonl holds step records and, marked `"type": "eval"`, held-out evaluations
    curve = [r for r in records if r.get("type") == "eval"]
    records = [r for r in records if r.get("type") != "eval"]
    if not records:
        raise UserError(f"{path}: no step records")
    evals = {}
    for label in ("base", "final"):
        p = Path(run_dir) / f"eval_{label}.json"
        if p.is_file():
            evals[label] = json.loads(p.read_text())
    name = Path(run_dir).name
    return {"name": name, "records": records, "evals": evals, "eval_curve": eval_curve(curve, evals, records),
            "algorithm": records[0].get("algorithm", "?"), "samples": SampleLog(run_dir).records()}


def eval_curve(eval_records: list[dict], evals: dict, records: list[dict]) -> list[tuple[int, float, float]]:
    """(steps done, pooled pass@k, worst-tier pass@k or NaN) per evaluation, in step order; a run
    from before eval records existed gets its base and final evaluation files as two points, and a
    simulator run its step records' `eval_pass_at_k` (evaluation steps only)."""
    pts = {}
    for r in eval_records:
        m = r.get("metrics") or {}
        if "pooled/pass_at_k" in m:
            pts[int(r["steps_done"])] = (m["pooled/pass_at_k"], m.get("worst_tier/pass_at_k", float("nan")))
    if not pts:
        for r in records:  # simulator
            if r.get("eval_pass_at_k") is not None:
                pts[int(r["step"]) + 1] = (r["eval_pass_at_k"], r.get("eval_worst_tier_pass_at_k", float("nan")))
    if not pts:
        for label, steps in (("base", 0), ("final", int(records[-1]["step"]) + 1)):
            res = evals.get(label)
            if res and "pooled" in res:
                worst = (res.get("worst_tier") or {}).get("pass_at_k", float("nan"))
                pts[steps] = (res["pooled"]["pass_at_k"], worst)
    return [(s, *pts[s]) for s in sorted(pts)]


def _matrix(records: list[dict], field: str) -> np.ndarray:
    return np.array([[np.nan if v is None else float(v) for v in r[field]] for r in records], dtype=float)


def lead_lag(records: list[dict]) -> np.ndarray:
    """Δμ per step over the real bins (the `unseen` group is left out of both means)."""
    q = _matrix(records, "bin_weights")[:, :-1]
    s = _matrix(records, "bin_share")[:, :-1]
    idx = np.arange(q.shape[1])
    qn = q / np.maximum(np.nansum(q, axis=1, keepdims=True), 1e-12)
    sn = s / np.maximum(np.nansum(s, axis=1, keepdims=True), 1e-12)
    return np.nansum(qn * idx, axis=1) - np.nansum(sn * idx, axis=1)


def _heatmap(plt, mat: np.ndarray, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    # The first steps (every prompt unseen, q = 1 on one group) would wash out the colour scale.
    vmax = float(np.nanpercentile(mat, 99)) if np.isfinite(mat).any() else 1.0
    im = ax.imshow(mat.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest", vmin=0, vmax=vmax)
    ax.set_xlabel("step")
    ax.set_ylabel("bin (0 = hardest; top row = unseen)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def render(run_dirs: list[str], out: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load_run(Path(d)) for d in run_dirs]
    out_dir = Path(out) if out else Path(run_dirs[0]) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for r in runs:
        rec = r["records"]
        rollouts = _matrix(rec, "bin_rollouts")
        share = rollouts / np.maximum(rollouts.sum(axis=1, keepdims=True), 1)
        for field, mat, title in (("bin_weights", _matrix(rec, "bin_weights"), "Prompt-GDRO weight q per bin"),
                                  ("rollouts", share, "share of rollouts per bin")):
            p = out_dir / f"{field}_{r['name']}.png"
            _heatmap(plt, mat, f"{r['name']}: {title}", p)
            files.append(p)

    fig, axes = plt.subplots(len(runs), 1, figsize=(FIGSIZE[0], FIGSIZE[1] * max(1, len(runs)) * 0.7), dpi=DPI,
                             squeeze=False)
    for ax, r in zip(axes[:, 0], runs):
        pk = _matrix(r["records"], "bin_pass_at_k")
        for b in range(pk.shape[1] - 1):
            ax.plot(pk[:, b], label=f"bin {b}")
        ax.set_title(f"{r['name']}: pass@k per bin")
        ax.set_ylim(0, 1)
    axes[0, 0].legend(fontsize=6, ncol=5)
    fig.tight_layout()
    files.append(out_dir / "pass_at_k.png")
    fig.savefig(files[-1])
    plt.close(fig)

    for fname, fn, ylabel in (("lead_lag.png", lead_lag, "Δμ (weight mean − data mean bin index)"),
                              ("reward.png", lambda rec: np.array([x.get("reward_mean", np.nan) for x in rec]),
                               "reward mean")):
        fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
        for r in runs:
            ax.plot(fn(r["records"]), label=f"{r['name']} ({r['algorithm']})")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(out_dir / fname)
        fig.savefig(files[-1])
        plt.close(fig)

    if any(r["eval_curve"] for r in runs):
        fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
        for r in runs:
            if r["eval_curve"]:
                steps, pooled, worst = (np.array(c, dtype=float) for c in zip(*r["eval_curve"]))
                line, = ax.plot(steps, pooled, marker="o", label=f"{r['name']} pooled")
                if np.isfinite(worst).any():
                    ax.plot(steps, worst, marker="x", linestyle="--", color=line.get_color(),
                            label=f"{r['name']} worst tier")
        ax.set_xlabel("training steps done")
        ax.set_ylabel("held-out pass@k")
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(out_dir / "eval.png")
        fig.savefig(files[-1])
        plt.close(fig)

    atomic_write_text(out_dir / "report.md", _markdown(runs, files))
    return out_dir


def _markdown(runs: list[dict], files: list[Path]) -> str:
    lines = ["# gdro_ray report", "",
             "| run | algorithm | steps | rollouts | final reward | eval pass@k base → final | best eval pass@k (steps) |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        rec = r["records"]
        ev = r["evals"]
        base = (ev.get("base") or {}).get("pooled", {}).get("pass_at_k")
        final = (ev.get("final") or {}).get("pooled", {}).get("pass_at_k")
        best = max(r["eval_curve"], key=lambda c: c[1], default=None)  # earliest of equal values
        best_txt = "-" if best is None else f"{best[1]:.3f} ({best[0]})"
        lines.append(f"| {r['name']} | {r['algorithm']} | {len(rec)} | {sum(x['rollouts'] for x in rec)} | "
                     f"{rec[-1].get('reward_mean', float('nan')):.3f} | {_fmt(base)} → {_fmt(final)} | {best_txt} |")
    lines += ["", "Δμ > 0: the adversary weights easier bins than the data holds (it leads); < 0: harder.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in files]
    for r in runs:  # what the policy wrote, hardest bin first
        if r["samples"]:
            lines += ["", f"## {r['name']}: what the policy writes", "", samples_markdown(r["samples"])]
    return "\n".join(lines) + "\n"
