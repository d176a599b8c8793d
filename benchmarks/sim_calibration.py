"""Calibrate `gdro-ray simulate` against real GRPO runs on toy world v2, then predict GDRO.

1. Start point (measured, not fitted): `sim.start_from` = the base evaluations of the real GRPO
   runs (the same base model; 200 held-out prompts per tier, their samples pooled), so the
   simulator's tiers, tier shares and per-prompt base success are the toy world's.
2. Single-pass fit (`--fit-runs`, GRPO, 40 steps × 64 × 8 from the 14,100-prompt pool, no prompt
   revisited): a grid over the learning rate per unit of signal (only lr · transfer matters when
   nothing is revisited) and the transfer width over tiers, scored by the squared error of the
   per-tier held-out mean@8 (steps 10/20/30 of the curve run, step 40 of every seed), per-tier
   final pass@8 and the training reward in blocks of 10 steps.
3. Revisit fit (`--revisit-runs`, GRPO with data.max_prompts=640, when present): with lr·transfer
   fixed, a grid over the transfer fraction (the rest is per-prompt memorisation) and the
   revisit cost, scored the same way on those runs (final evaluation and training reward).
4. Predictions: the four algorithms in the revisit setting (the lead's main runs) and in the
   single-pass default (already measured: a check, not a blind prediction), mean over `--sim-seeds`.
5. Sensitivity: one knob at a time around the fit (start point, learning rate, transfer width,
   update size α, transfer fraction, revisit cost), each GDRO variant's pooled mean@8 vs GRPO.

The update size α (`sim.rollout_exponent`) is not identifiable from GRPO runs (every group has
n = 8); it is set by the loss aggregation: token_mean sums a group's rollouts (α = 1),
prompt_mean averages them (α = 0), at the same lr · 8^α.

    python benchmarks/sim_calibration.py [--sim-seeds 0,1,2,3,4] [--quick]
    python benchmarks/sim_calibration.py --compare benchmarks/out/sim_calibration.json   # vs measured

Prints tables; writes benchmarks/out/sim_calibration.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from gdro_ray.algorithms.passk import pass_at_k_array
from gdro_ray.config.loader import load_config
from gdro_ray.sim.compare import resolve_sim_config
from gdro_ray.sim.runner import run_algorithm

OUT = Path(__file__).resolve().parent / "out"
ALGS = ("grpo", "prompt_gdro", "rollout_gdro", "both")
# Transfer geometries over the six tiers: tier order, or the task's operation families (addition:
# add3, add_carry, carry_out; subtraction: sub3, sub_borrow, sub_neg), each in order of difficulty.
GEOMETRIES = {"tier order": None, "operation families": (0.0, 0.1, 0.5, 0.6, 0.2, 0.7)}
# Measured, not fitted: of the base model's T = 1 samples on carry_out 17% and on sub_neg 5% are
# right or slipped (RESULTS.md, toy world v2), so their choice rates are base mean / that share.
PINNED_RATES = {4: round(0.025 / 0.17, 3), 5: round(0.035 / 0.05, 3)}
DEMO_RATES = (0.75, 0.5, 0.3, 0.15, 0.05, 0.03)  # gdro_ray/models/prepare.py, world v2
K, TIERS = 8, ("add3", "add_carry", "sub3", "sub_borrow", "carry_out", "sub_neg")


# ---------------------------------------------------------------------------------- real runs
def _final(run: Path) -> tuple[list[float], list[float]]:
    rows = json.loads((run / "eval_final.json").read_text())["per_prompt"]
    t = np.array([r["tier"] for r in rows])
    n = np.array([r["n"] for r in rows], dtype=np.int64)
    c = np.array([r["c"] for r in rows], dtype=np.int64)
    mean, pk = c / n, pass_at_k_array(n, c, K)
    return [float(mean[t == i].mean()) for i in range(6)], [float(pk[t == i].mean()) for i in range(6)]


def _rewards(run: Path) -> list[float]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("type") is None and "reward_mean" in r:
            out.append(float(r["reward_mean"]))
    return out


def load_real(runs: list[Path], curve_run: Path | None) -> dict:
    finals = [_final(r) for r in runs]
    rewards = np.array([_rewards(r) for r in runs])
    real = {"runs": [str(r) for r in runs],
            "final_mean": np.mean([f[0] for f in finals], axis=0).tolist(),
            "final_pass": np.mean([f[1] for f in finals], axis=0).tolist(),
            "reward_blocks": rewards.reshape(len(runs), -1, 10).mean(axis=(0, 2)).tolist(),
            "curve": {}}
    if curve_run is not None and (curve_run / "metrics.jsonl").is_file():
        for line in (curve_run / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r.get("type") == "eval" and r.get("label") == "periodic" and r["steps_done"] < 40:
                real["curve"][int(r["steps_done"])] = [r["metrics"][f"tier{i}/mean_at_k"] for i in range(6)]
    return real


# ---------------------------------------------------------------------------------- simulator
def sim_cfg(start: str, params: dict, steps: int = 40, extra: tuple[str, ...] = ()):
    over = [f"steps={steps}", "batch_size=64", "budget_mean=8", f"sim.start_from={start}", "sim.eval_every=10",
            *[f"sim.{k}={v}" for k, v in params.items()], *extra]
    return resolve_sim_config(load_config(None, over), {"steps", "batch_size", "budget_mean"})


def simulate(cfg, alg: str, seeds: list[int]) -> dict:
    """Mean over seeds of one algorithm's per-tier curve, final metrics and training reward."""
    acc = []
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        for s in seeds:
            acc.append(run_algorithm(dataclasses.replace(cfg, seed=s), alg, Path(tmp) / alg, log=lambda _m: None))
    curve = {}
    for point in acc[0]["eval_curve"]:
        st = point["step"]
        curve[st] = np.mean([[p for p in a["eval_curve"] if p["step"] == st][0]["tier_mean_at_k"] for a in acc], axis=0)
    final_mean = np.mean([a["final_tier_mean_at_k"] for a in acc], axis=0)
    final_pass = np.mean([a["final_tier_pass_at_k"] for a in acc], axis=0)
    rew = np.mean([a["train_reward_curve"] for a in acc], axis=0)
    per_seed = {"mean": [float(np.mean(a["final_tier_mean_at_k"])) for a in acc],
                "pass": [float(np.mean(a["final_tier_pass_at_k"])) for a in acc],
                "hard2_mean": [float(np.mean(a["final_tier_mean_at_k"][4:])) for a in acc],
                "hard2_pass": [float(np.mean(a["final_tier_pass_at_k"][4:])) for a in acc],
                "worst_mean": [float(a["final_tier_mean_at_k"][4]) for a in acc],
                "worst_pass": [float(a["final_tier_pass_at_k"][4]) for a in acc]}
    return {"curve": curve, "final_mean": final_mean, "final_pass": final_pass,
            "reward_blocks": rew.reshape(-1, 10).mean(axis=1) if rew.size % 10 == 0 else rew,
            "per_seed": per_seed, "distinct": float(np.mean([a["distinct_prompts_trained"] for a in acc])),
            "useful": float(np.mean([a["useful_rollout_fraction"] for a in acc]))}


def loss(sim: dict, real: dict) -> float:
    err = [np.asarray(sim["final_mean"]) - real["final_mean"], np.asarray(sim["final_pass"]) - real["final_pass"],
           np.asarray(sim["reward_blocks"]) - real["reward_blocks"]]
    err += [np.asarray(sim["curve"][st]) - v for st, v in real["curve"].items() if st in sim["curve"]]
    return float(sum(np.sum(e ** 2) for e in err))


def tier_table(label: str, sim: dict, real: dict) -> str:
    lines = [f"{label}: per-tier final mean@8 / pass@8, simulator vs real",
             "| tier | real mean@8 | sim mean@8 | real pass@8 | sim pass@8 |", "|---|---:|---:|---:|---:|"]
    for i, name in enumerate(TIERS):
        lines.append(f"| {name} | {real['final_mean'][i]:.3f} | {sim['final_mean'][i]:.3f} | "
                     f"{real['final_pass'][i]:.3f} | {sim['final_pass'][i]:.3f} |")
    lines.append("train reward per 10 steps: real " + " ".join(f"{x:.3f}" for x in real["reward_blocks"])
                 + " | sim " + " ".join(f"{x:.3f}" for x in sim["reward_blocks"]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- fits
def coordinate_search(f, x0: np.ndarray, step: float, rounds: int, fixed=()) -> tuple[np.ndarray, float]:
    """Minimise f by trying ±step on one coordinate at a time; halve the step after each round."""
    x, fx = np.array(x0, dtype=np.float64), f(x0)
    for _ in range(rounds):
        for i in (i for i in range(x.size) if i not in fixed):
            for sign in (1.0, -1.0):
                y = x.copy()
                y[i] += sign * step
                fy = f(y)
                if fy < fx:
                    x, fx = y, fy
                    break
        step /= 2.0
    return x, float(fx)


def fit_single_pass(start: str, real: dict, seeds: list[int], alpha: float, quick: bool,
                    positions: tuple[float, ...] | None = None) -> tuple[dict, list]:
    """lr·transfer (transfer fixed at 1: nothing is revisited), transfer width and the tier ceilings.

    A coarse grid over (lr, width) with the choice rates at the warm start's demonstration rates
    (carry_out and sub_neg pinned at their measured rates, PINNED_RATES),
    then a coordinate search over log lr, log width, log ceiling_lr, log interference and the
    rates' logits from the best grid point.
    """
    ceil0 = np.array(DEMO_RATES)  # the warm start's rate of right answers per tier: a first guess
    for t, r in PINNED_RATES.items():
        ceil0[t] = r

    def params(lr, w, ceil, clr=0.2, inter=0.1):
        return {"learning_rate": float(lr), "transfer": 1.0, "transfer_width": float(w), "rollout_exponent": alpha,
                "revisit_scale": 0, "tier_choice_rate": "[" + ",".join(f"{c:.4f}" for c in ceil) + "]",
                "ceiling_lr": round(float(clr), 5), "interference": round(float(inter), 5),
                **({"tier_positions": "[" + ",".join(f"{x:g}" for x in positions) + "]"} if positions else {})}

    def score(p):
        return loss(simulate(sim_cfg(start, p), "grpo", seeds), real)

    grid = []
    for w in ((0.1, 0.3, 1.0) if quick else (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 3.0)):
        for lr in np.geomspace(0.01, 0.3, 6 if quick else 11):
            p = params(lr, w, ceil0)
            grid.append((score(p), p))
    grid.sort(key=lambda g: g[0])
    g0 = grid[0][1]

    def unpack(x):
        return params(np.exp(x[0]), np.exp(x[1]), 1.0 / (1.0 + np.exp(-x[4:])), np.exp(x[2]), np.exp(x[3]))

    def objective(x):
        return score(unpack(x))

    x0 = np.concatenate([[np.log(g0["learning_rate"]), np.log(g0["transfer_width"]), np.log(0.2), np.log(0.1)],
                         np.log(ceil0 / (1 - ceil0))])
    x, fx = coordinate_search(objective, x0, step=0.5, rounds=3 if quick else 6,
                              fixed={4 + t for t in PINNED_RATES})
    best = unpack(x)
    grid.append((fx, best))
    grid.sort(key=lambda g: g[0])
    return dict(grid[0][1]), [(round(l_, 5), p) for l_, p in grid[:8]]


def fit_revisit(start: str, real: dict, seeds: list[int], eff: dict, num_prompts: int) -> tuple[dict, list]:
    """With lr·transfer and width fixed: the transfer fraction and the revisit cost."""
    grid = []
    for tr in (0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0):
        for rs in (0, 1.0, 3.0, 10.0, 30.0):
            p = {**eff, "learning_rate": eff["learning_rate"] / tr, "transfer": tr, "revisit_scale": rs}
            s = simulate(sim_cfg(start, p, extra=(f"sim.num_prompts={num_prompts}",)), "grpo", seeds)
            grid.append((loss(s, real), p))
    grid.sort(key=lambda g: g[0])
    return dict(grid[0][1]), [(round(l_, 5), p) for l_, p in grid[:8]]


# ---------------------------------------------------------------------------------- predictions
def predict(start: str, params: dict, seeds: list[int], extra: tuple[str, ...]) -> dict:
    cfg = sim_cfg(start, params, extra=extra)
    res = {a: simulate(cfg, a, seeds) for a in ALGS}
    out = {}
    for a, s in res.items():
        row = {"distinct_prompts": s["distinct"], "useful": s["useful"]}
        for key, vals in s["per_seed"].items():
            row[key] = float(np.mean(vals))
            if a != "grpo":
                d = np.array(vals) - np.array(res["grpo"]["per_seed"][key])
                row[f"{key}_diff"] = float(d.mean())
                row[f"{key}_diff_sd"] = float(d.std(ddof=1)) if d.size > 1 else 0.0
                row[f"{key}_rel"] = float(d.mean() / np.mean(res["grpo"]["per_seed"][key]))
        row["tier_mean"] = [float(x) for x in s["final_mean"]]
        out[a] = row
    return out


def prediction_table(pred: dict) -> str:
    lines = ["| algorithm | pooled mean@8 | vs GRPO | pooled pass@8 | vs GRPO | hardest-2 mean@8 | vs GRPO | "
             "hardest-2 pass@8 | vs GRPO | worst (carry_out) pass@8 | vs GRPO | distinct prompts |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def c(a: str, r: dict, key: str) -> tuple[str, str]:
        if a == "grpo":
            return f"{r[key]:.3f}", "—"
        return f"{r[key]:.3f}", f"{r[key + '_diff']:+.3f} ({100 * r[key + '_rel']:+.0f}%)"

    for a, r in pred.items():
        cells = [x for key in ("mean", "pass", "hard2_mean", "hard2_pass", "worst_pass") for x in c(a, r, key)]
        lines.append(f"| {a} | " + " | ".join(cells) + f" | {r['distinct_prompts']:.0f} |")
    return "\n".join(lines)


def sensitivity(start: str, params: dict, seeds: list[int], extra: tuple[str, ...]) -> list[dict]:
    eff = params["learning_rate"] * params["transfer"]
    variants = [("fit", {})]
    variants += [(f"start shift {s:+g} logit", {"start_shift": s}) for s in (-1.0, 1.0)]
    variants += [(f"learning rate ×{f:g}", {"learning_rate": params["learning_rate"] * f}) for f in (0.5, 2.0)]
    variants += [(f"transfer width {w:g}", {"transfer_width": w}) for w in (0.05, 0.3, 3.0) if w != params["transfer_width"]]
    variants += [(f"update size α={a:g} (same lr·8^α)", {"rollout_exponent": a,
                  "learning_rate": params["learning_rate"] * 8.0 ** (params["rollout_exponent"] - a)})
                 for a in (0.0, 0.5, 1.0) if a != params["rollout_exponent"]]
    variants += [(f"transfer fraction {t:g} (same lr·transfer)", {"transfer": t, "learning_rate": eff / t})
                 for t in (0.3, 1.0) if t != params["transfer"]]
    variants += [(f"revisit scale {r:g}", {"revisit_scale": r}) for r in (0, 3.0, 30.0) if r != params["revisit_scale"]]
    variants += [("interference 0", {"interference": 0.0}),
                 ("interference ×3", {"interference": 3 * params.get("interference", 0.0)}),
                 ("no skill ceilings (every tier learnable)", {"tier_choice_rate": "[]", "ceiling_lr": 0.0}),
                 ("transfer over tier order", {"tier_positions": "[]"})]
    rows = []
    for label, change in variants:
        pred = predict(start, {**params, **change}, seeds, extra)
        rows.append({"variant": label, "params": {**params, **change}, "grpo_mean": pred["grpo"]["mean"],
                     **{f"{a}_rel": pred[a]["mean_rel"] for a in ALGS[1:]},
                     **{f"{a}_hard2_pass_diff": pred[a]["hard2_pass_diff"] for a in ALGS[1:]}})
        print(f"  {label:<36} GRPO {pred['grpo']['mean']:.3f}  " + "  ".join(
            f"{a} {100 * pred[a]['mean_rel']:+.1f}%" for a in ALGS[1:]), flush=True)
    return rows


def _per_prompt(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = sorted(json.loads((run / "eval_final.json").read_text())["per_prompt"], key=lambda r: r["id"])
    n = np.array([r["n"] for r in rows], dtype=np.int64)
    c = np.array([r["c"] for r in rows], dtype=np.int64)
    return np.array([r["tier"] for r in rows]), c / n, pass_at_k_array(n, c, K)


def compare(pred_path: Path, root: Path) -> None:
    """Predicted (saved JSON) against measured paired differences to GRPO on the seeds present."""
    from gdro_ray.eval.stats import paired_bootstrap

    pred = json.loads(pred_path.read_text())["predictions_revisit"]
    slices = {"mean": ("pooled", 0), "pass": ("pooled", 1), "hard2_mean": ("hard2", 0),
              "hard2_pass": ("hard2", 1), "worst_pass": ("worst", 1)}
    print("| variant | seeds | metric | predicted | measured [95% CI] |\n|---|---:|---|---:|---|")
    for alg in ALGS[1:]:
        seeds = sorted(int(p.name.rsplit("-s", 1)[1]) for p in root.glob(f"{alg}-s*")
                       if (p / "eval_final.json").is_file() and (root / f"grpo-{p.name.rsplit('-', 1)[1]}" / "eval_final.json").is_file())
        if not seeds:
            continue
        g = [_per_prompt(root / f"grpo-s{s}") for s in seeds]
        a = [_per_prompt(root / f"{alg}-s{s}") for s in seeds]
        tiers = g[0][0]
        for key, (slice_, m) in slices.items():
            sel = np.ones(tiers.size, bool) if slice_ == "pooled" else (tiers >= 4 if slice_ == "hard2" else tiers == 4)
            x = np.array([r[1 + m][sel] for r in g])
            y = np.array([r[1 + m][sel] for r in a])
            ci = paired_bootstrap(x, y, kind="difference", strata=tiers[sel])
            print(f"| {alg} | {len(seeds)} | {key} | {pred[alg][key + '_diff']:+.3f} | "
                  f"{ci.estimate:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit-runs", default="benchmarks/out/grpo_gain/grpo-s*")
    ap.add_argument("--curve-run", default="runs/curve-grpo-s0")
    ap.add_argument("--revisit-runs", default="benchmarks/out/gdro_vs_grpo_runs/toy-data.max_prompts640/grpo-s*")
    ap.add_argument("--revisit-prompts", type=int, default=640)
    ap.add_argument("--sim-seeds", default="0,1,2,3,4,5,6,7", help="seeds of the predictions and sensitivity")
    ap.add_argument("--fit-seeds", default="0,1,2", help="seeds averaged in every fit evaluation")
    ap.add_argument("--no-revisit-fit", action="store_true", help="keep transfer 0.3 / revisit_scale 20 (defaults)")
    ap.add_argument("--quick", action="store_true", help="coarser grids (a smoke run)")
    ap.add_argument("--reuse-fit", default="", help="take the single-pass fit from an earlier output JSON "
                                                    "(the fit is deterministic in its seeds; saves minutes)")
    ap.add_argument("--out", default=str(OUT / "sim_calibration.json"))
    ap.add_argument("--compare", default="", help="only compare: predictions of this output JSON against the "
                                                  "measured runs under --compare-root")
    ap.add_argument("--compare-root", default="benchmarks/out/gdro_vs_grpo_runs/toy-data.max_prompts640")
    args = ap.parse_args()
    if args.compare:
        compare(Path(args.compare), Path(args.compare_root))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    seeds = [int(s) for s in args.sim_seeds.split(",")]
    fseeds = [int(s) for s in args.fit_seeds.split(",")]
    fit_runs = sorted(Path(p) for p in glob.glob(args.fit_runs) if (Path(p) / "eval_final.json").is_file())
    start = ",".join(str(r / "eval_base.json") for r in fit_runs)
    real = load_real(fit_runs, Path(args.curve_run))
    print(f"start point: {len(fit_runs)} base evaluations ({start})")

    # token_mean (α = 1) in the single-pass fit runs; the revisit runs use prompt_mean (α = 0)
    if args.reuse_fit:
        old = json.loads(Path(args.reuse_fit).read_text())
        eff, top, geometry = old["single_pass_fit"], old["single_pass_top"], old["geometry"]
        fits = {g: (None, [(v, None)]) for g, v in old["geometry_losses"].items()}
        print(f"single-pass fit reused from {args.reuse_fit}")
    else:
        fits = {}
        for name, positions in GEOMETRIES.items():
            fits[name] = fit_single_pass(start, real, fseeds, alpha=1.0, quick=args.quick, positions=positions)
            print(f"  geometry {name}: loss {fits[name][1][0][0]:.4f}  {fits[name][0]}", flush=True)
        geometry = min(fits, key=lambda g: fits[g][1][0][0])
        eff, top = fits[geometry]
    fit_sim = simulate(sim_cfg(start, eff), "grpo", fseeds)
    print(f"single-pass fit (α = 1, transfer 1, geometry {geometry}): {eff}  loss {loss(fit_sim, real):.4f}")
    print(tier_table("single pass, GRPO", fit_sim, real))
    curve_rows = {st: {"real": real["curve"][st], "sim": [float(x) for x in fit_sim["curve"][st]]} for st in real["curve"]}
    for st, r in curve_rows.items():
        print(f"  step {st}: real " + " ".join(f"{x:.3f}" for x in r["real"]) + " | sim " + " ".join(f"{x:.3f}" for x in r["sim"]))

    # the same effective step in prompt_mean units (α = 0): lr · 8^α kept
    eff0 = {**eff, "rollout_exponent": 0.0, "learning_rate": eff["learning_rate"] * 8.0}
    params = {**eff0, "transfer": 0.3, "learning_rate": eff0["learning_rate"] / 0.3, "revisit_scale": 20.0}
    rev_runs = sorted(Path(p) for p in glob.glob(args.revisit_runs) if (Path(p) / "eval_final.json").is_file())
    revisit = {"runs": [str(r) for r in rev_runs]}
    if rev_runs and not args.no_revisit_fit:
        real_rev = load_real(rev_runs, None)
        params, rtop = fit_revisit(start, real_rev, fseeds, eff0, args.revisit_prompts)
        rev_sim = simulate(sim_cfg(start, params, extra=(f"sim.num_prompts={args.revisit_prompts}",)), "grpo", fseeds)
        print(f"revisit fit on {len(rev_runs)} GRPO runs: {params}  loss {loss(rev_sim, real_rev):.4f}")
        print(tier_table("revisit setting, GRPO", rev_sim, real_rev))
        revisit.update(top=rtop, real=real_rev, sim_final_mean=rev_sim["final_mean"].tolist(),
                       sim_final_pass=rev_sim["final_pass"].tolist(), sim_reward_blocks=list(rev_sim["reward_blocks"]))
    else:
        print("revisit fit: no revisit-setting GRPO runs (or --no-revisit-fit): transfer 0.3, revisit_scale 20 (defaults)")

    rev_extra = (f"sim.num_prompts={args.revisit_prompts}",)
    print(f"\npredictions, revisit setting (data.max_prompts={args.revisit_prompts}, prompt_mean, α = 0), "
          f"{len(seeds)} sim seeds:")
    pred_rev = predict(start, params, seeds, rev_extra)
    print(prediction_table(pred_rev))
    spread = []  # the revisit cost is weakly identified: predictions of the near-best revisit fits
    if revisit.get("top"):
        best_loss = revisit["top"][0][0]
        for l_, p in revisit["top"][1:6]:
            if l_ <= 1.15 * best_loss:
                pr = predict(start, p, seeds, rev_extra)
                spread.append({"loss": l_, "transfer": p["transfer"], "revisit_scale": p["revisit_scale"],
                               **{f"{a}_{k}": pr[a][f"{k}_diff"] for a in ALGS[1:] for k in ("mean", "hard2_pass", "worst_pass")},
                               **{f"{a}_rel": pr[a]["mean_rel"] for a in ALGS[1:]}})
                print(f"  near-best revisit fit (loss {l_:.4f}, transfer {p['transfer']}, revisit_scale "
                      f"{p['revisit_scale']}): " + "  ".join(f"{a} {100 * pr[a]['mean_rel']:+.1f}%" for a in ALGS[1:]))
    single = {**params, "rollout_exponent": 1.0, "learning_rate": params["learning_rate"] / 8.0}
    print("\npredictions, single-pass default (14,100 prompts, token_mean, α = 1) — already measured, a check:")
    pred_single = predict(start, single, seeds, ())
    print(prediction_table(pred_single))
    print("\nsensitivity (revisit setting): pooled mean@8 of each GDRO variant vs GRPO")
    sens = sensitivity(start, params, seeds, rev_extra)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sim_seeds": seeds, "fit_seeds": fseeds, "start_from": start,
              "real_single_pass": real, "single_pass_fit": eff, "single_pass_top": top, "geometry": geometry,
              "geometry_losses": {g: f[1][0][0] for g, f in fits.items()},
              "single_pass_sim": {"final_mean": fit_sim["final_mean"].tolist(), "final_pass": fit_sim["final_pass"].tolist(),
                                  "reward_blocks": list(fit_sim["reward_blocks"]), "curve": curve_rows},
              "revisit": revisit, "params": params, "predictions_revisit": pred_rev,
              "predictions_single_pass": pred_single, "revisit_fit_spread": spread, "sensitivity": sens, "wall_s": time.time() - t0}
    Path(args.out).write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
