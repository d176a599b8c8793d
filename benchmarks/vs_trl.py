"""RL step throughput: our pipeline (`gdro-ray train`) against TRL's `GRPOTrainer`, side by side.

Same model folder, same prompts (identical strings: both sides read what
`gdro_ray.data.eval_sets.load_train_set` makes of one jsonl), same rollouts per prompt n̄,
same `max_new_tokens`, same algorithm (GRPO: clip 0.2/0.28, k3 KL 0.001, token-mean loss,
group-normalised advantages, AdamW at a constant learning rate, grad clip 1.0, one optimizer
step per batch: ours with `grpo.mini_batches=1`, TRL's defaults), same reward
function (`gdro_ray.rewards.math_reward`), CPU, fp32, on the same machine in one run.

- Ours: `gdro-ray train algorithm=grpo` as a subprocess (Ray with a private temp root; vLLM
  samplers; an FSDP2 learner group); each sampler actor and learner rank runs as many torch
  threads as its `num_cpus` (1 unless a variant sets it). Variants (`--ours "ENGINE [key=value
  ...]"`, repeatable) by default (DEFAULT_OURS), each using both cores in each phase as TRL's
  2-thread row does: 2 samplers + 2 ranks keeping gathered weights (best on the toy model),
  1 sampler + 1 rank with 2 threads each (best on SmolLM2), and `vllm cluster.off_policy=true`
  (one-step off-policy: sampling of step t+1 overlaps learning of step t; a different
  algorithm, shown for what the overlap buys). A 1-thread row of ours against TRL's 1-thread
  row is a fair pair too; ours on 2 cores against TRL on 1 is not (RESULTS, "both cores"). Per-step `step_time_s`, `tokens` and `stage_time_s` come from
  `<out>/metrics.jsonl`; Ray and engine start-up and the base/final evaluation (made cheap:
  2 prompts, k = 1) are outside the step times.
- TRL: `benchmarks/vs_trl_worker.py` inside TRL's own virtual environment
  (`benchmarks/.venv-trl`, created here when missing from the pins in `TRL_VENV_PINS`),
  transformers `generate` (TRL's default without vLLM), one process with `--trl-threads`
  torch threads (each value is a separate TRL row; ratios are taken against TRL's best row).
  Geometry: `per_device_train_batch_size = B·n̄` (TRL counts completions), `num_generations = n̄`,
  `gradient_accumulation_steps = 1`, so one optimizer step = B prompts × n̄ rollouts, as ours.
- Throughput uses steady-state steps only (the first `--skip` steps of each run are dropped):
  tokens/s = generated response tokens (end-of-sequence token included, both sides) / step
  time; steps/min = 60 / mean step time. Responses stop at end-of-sequence on both sides, so
  tokens/s is the fair figure; steps/min depends on response lengths. `--repeats` alternates
  the order of the sides; the table gives the pooled mean, the median step and paired
  per-repeat ratios (see `compare`), because other processes on a shared box make single
  steps slow in bursts (multi-threaded torch suffers most: see the TRL 2-thread rows).

Models: the prepared toy model when cached (`gdro-ray prepare`), else an untrained model of
the same architecture (`gdro_ray.models.tiny.build_model("tiny")`, labelled `toy-standin`);
`--smollm2` adds SmolLM2-135M-Instruct (converted, untied) on the bundled DAPO-schema fixture.

    .venv/bin/python benchmarks/vs_trl.py [--smollm2] [--repeats 2] [--trl-threads 1,2] [--ours VARIANT ...]
        [--steps 8 --skip 2 --batch-size 8 --budget-mean 4 --max-new-tokens 24] [--resummarize JSON]

Writes benchmarks/out/vs_trl.json (machine, date, exact commands, per-step records). Target:
the minimum paired ratio over 5 repeats ≥ 2× TRL's tokens/s.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRL_VENV = ROOT / "benchmarks" / ".venv-trl"
# torch==2.13.0 resolves to the machine's local 2.13.0+cpu wheel (as for the project's venv);
# transformers is the project's own pin, so both sides run the same model code.
TRL_VENV_PINS = ("torch==2.13.0", "transformers==5.19.0", "tokenizers==0.23.3", "safetensors==0.8.0",
                 "accelerate==1.15.0", "datasets==5.2.0", "math-verify==0.9.0", "trl==1.16.0")
WORK = ROOT / "benchmarks" / "out" / "vs_trl_work"
OUT_JSON = ROOT / "benchmarks" / "out" / "vs_trl.json"
TARGET = 2.0  # the project's speed target: the minimum paired ratio over 5 repeats
# Both cores on our side in every default layout, as TRL's 2-thread row has them (ratios are taken
# against the faster TRL row): 2 samplers + 2 one-thread ranks (best on the toy model), and one
# sampler + one rank with 2 threads each (best on SmolLM2; RESULTS "both cores on both sides").
DEFAULT_OURS = ("vllm learner.reshard_after_forward=false",
                "vllm sampler.num_samplers=1 sampler.num_cpus=2 learner.world_size=1 learner.num_cpus=2",
                "vllm cluster.off_policy=true")


@dataclass
class Case:
    """One model's shared workload."""

    label: str
    model_dir: str
    model_note: str
    steps: int
    skip: int
    batch_size: int
    budget_mean: int
    max_new_tokens: int
    lr: float
    pool: int


def _env() -> dict:
    env = dict(os.environ)
    tmp = ROOT / ".tmp"
    for k, v in {"TMPDIR": str(tmp), "RAY_AUTH_MODE": "disabled",
                 "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
                 "TOKENIZERS_PARALLELISM": "false", "GDRO_RAY_CACHE": str(ROOT / ".cache" / "gdro_ray")}.items():
        env.setdefault(k, v)
    if "RAY_TMPDIR" not in env:  # short and private, wherever the checkout is
        from gdro_ray.utils.env import ray_tmpdir

        env["RAY_TMPDIR"] = ray_tmpdir()
    return env


# ---------------------------------------------------------------------------- TRL's venv
def ensure_trl_venv(venv: Path = TRL_VENV, rebuild: bool = False) -> Path:
    """TRL's own virtual environment (python path); built from `TRL_VENV_PINS` when missing."""
    python, marker = venv / "bin" / "python", venv / "gdro-ray-pins.txt"
    want = "\n".join(TRL_VENV_PINS) + "\n"
    if not rebuild and python.is_file() and marker.is_file() and marker.read_text() == want:
        return python
    if venv.exists():
        shutil.rmtree(venv)
    base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
    print(f"creating TRL venv {venv} ({', '.join(TRL_VENV_PINS)}) …", flush=True)
    t0 = time.perf_counter()
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    p = subprocess.run([str(python), "-m", "pip", "install", "-q", *TRL_VENV_PINS], capture_output=True, text=True)
    if p.returncode:  # pip's own lines, less the local index notes it prints for every package
        noise = "is ignored: it is neither"
        print("\n".join(ln for ln in (p.stdout + p.stderr).splitlines() if noise not in ln)[-4000:], file=sys.stderr)
        raise SystemExit(f"TRL venv: pip install failed (exit {p.returncode}): {' '.join(TRL_VENV_PINS)}")
    marker.write_text(want)
    print(f"TRL venv ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return python


# ---------------------------------------------------------------------------- workloads
def toy_case(args, choice: str) -> Case:
    from gdro_ray.models import prepare

    prepared = prepare.model_dir()
    if choice in ("auto", "prepared") and prepare.is_prepared(prepared):
        label, path, note = "toy", str(prepared), f"prepared toy model ({prepared.name})"
    elif choice == "prepared":
        raise SystemExit(f"--toy-model prepared: {prepared} is not prepared (run `gdro-ray prepare`)")
    else:
        from gdro_ray.models import tiny

        out = WORK / "toy-standin-model"
        if not (out / "config.json").is_file():
            tok = tiny.build_tokenizer()
            tiny.save(tiny.build_model("tiny", seed=0, tokenizer=tok), tok, out)
        label, path = "toy-standin", str(out)
        note = "untrained model of the toy architecture (tiny.build_model('tiny', seed=0)); toy not prepared"
    return Case(label, path, note, args.steps, args.skip, args.batch_size, args.budget_mean,
                args.max_new_tokens, 1e-4, args.pool)


def smollm2_case(args) -> Case:
    from gdro_ray.models.smollm2 import convert_smollm2

    path = convert_smollm2()
    return Case("smollm2-135m", str(path), "SmolLM2-135M-Instruct, converted untied (convert_smollm2)",
                args.smollm2_steps, args.smollm2_skip, args.smollm2_batch_size, args.budget_mean,
                args.smollm2_max_new_tokens, 1e-6, 0)


def write_data(case: Case, folder: Path) -> dict:
    """train.jsonl (DAPO schema, ours), eval.jsonl (2 rows), trl_prompts.jsonl (the same strings)."""
    from gdro_ray.data.eval_sets import load_train_set

    if case.label.startswith("toy"):
        from gdro_ray.data.toy_task import make_train_pool

        examples = make_train_pool(size=case.pool, seed=0)
    else:
        examples = load_train_set("dapo-fixture")
    folder.mkdir(parents=True, exist_ok=True)
    train, evalf, trl = folder / "train.jsonl", folder / "eval.jsonl", folder / "trl_prompts.jsonl"
    rows = [json.dumps({"prompt": e["prompt"], "solution": e["answer"]}) for e in examples]
    train.write_text("\n".join(rows) + "\n")
    evalf.write_text("\n".join(rows[:2]) + "\n")
    loaded = load_train_set(str(train))  # exactly what our driver will train on
    if [e["prompt"] for e in loaded] != [e["prompt"] for e in examples]:
        raise RuntimeError("the train loader rewrote the prompts; the two sides would differ")
    trl.write_text("\n".join(json.dumps({"prompt": e["prompt"], "answer": e["answer"]}) for e in loaded) + "\n")
    return {"train": str(train), "eval": str(evalf), "trl_prompts": str(trl), "num_prompts": len(loaded)}


# ---------------------------------------------------------------------------- the two sides
def _run(cmd: list[str], env: dict, log: Path, timeout: float) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, check=False, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{cmd[0]} … exited {proc.returncode}; log {log}:\n{tail}")
    return time.perf_counter() - t0


def run_ours(case: Case, data: dict, folder: Path, variant: str, args, env: dict) -> dict:
    """One `gdro-ray train` run; `variant` is "ENGINE [key=value ...]" (extra config overrides)."""
    engine, *extra = variant.split()
    extra_kv = dict(kv.split("=", 1) for kv in extra)
    samplers = int(extra_kv.get("sampler.num_samplers", args.num_samplers))
    ranks = int(extra_kv.get("learner.world_size", args.world_size))
    tag = "-".join([engine, *(kv.replace("=", "").replace(".", "_") for kv in extra)])
    out = folder / f"ours-{tag}"
    if out.exists():
        shutil.rmtree(out)
    B = case.batch_size
    cmd = [str(ROOT / ".venv" / "bin" / "gdro-ray"), "train", "algorithm=grpo", f"steps={case.steps}",
           f"batch_size={B}", f"budget_mean={case.budget_mean}", f"sampler.engine={engine}",
           f"sampler.num_samplers={samplers}",
           f"sampler.shard_size={-(-B // samplers)}",  # one shard per sampler
           f"learner.world_size={ranks}", f"learner.micro_batch={B * case.budget_mean}",
           f"learner.lr={case.lr}", f"sampler.max_new_tokens={case.max_new_tokens}", "sampler.temperature=1.0",
           "sampler.top_p=1.0", "grpo.kl_coef=0.001", "grpo.clip_low=0.2", "grpo.clip_high=0.28",
           # one optimizer step per batch, as TRL's (steps_per_generation = num_iterations = 1); the
           # service default of 2 mini-batches adds a behaviour pass and a second update
           "grpo.mini_batches=1", "grpo.loss_agg=token_mean",  # TRL: loss_type="dapo"
           f"model.path={case.model_dir}", "model.dtype=float32", f"data.train={data['train']}",
           f"data.eval={data['eval']}", "sampler.eval_k=1", "checkpoint.every=0", "metrics.enabled=false",
           f"seed={args.seed}", f"out={out}",
           *[kv for kv in extra if not kv.startswith(("sampler.num_samplers=", "learner.world_size="))]]
    # A private Ray temp root: a bare `ray.init()` would otherwise join any cluster another
    # process started under the shared one (its `ray_current_cluster` file) and fail or share it.
    ray_env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    from gdro_ray.utils.env import short_private_tmp

    ray_env["RAY_TMPDIR"] = short_private_tmp("vt")  # short: Ray's socket paths must fit in 107 bytes
    load0 = os.getloadavg()
    wall = _run(cmd, ray_env, folder / f"ours-{tag}.log", args.timeout)
    steps = [r for r in (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip())
             if r.get("type") != "eval"]  # step records only
    keep = ("step_time_s", "tokens", "stage_time_s", "reward_mean", "loss")
    label = ", ".join([engine, f"{samplers}s+{ranks}r", *(kv for kv in extra
                                                          if not kv.startswith(("sampler.num_samplers=",
                                                                                "learner.world_size=")))])
    return {"side": f"ours ({label})", "cmd": cmd, "wall_s": round(wall, 1), "loadavg_before": load0,
            "loadavg_after": os.getloadavg(), "threads": f"{samplers} sampler actors + {ranks} learner ranks, "
            "1 torch thread each; sampling and learning take turns (overlap only with off_policy=true)",
            "steps": [{k: s.get(k) for k in keep} for s in steps]}


def run_trl(case: Case, data: dict, folder: Path, python: Path, threads: int, args, env: dict) -> dict:
    out = folder / f"trl-t{threads}.json"
    cmd = [str(python), str(ROOT / "benchmarks" / "vs_trl_worker.py"), "--model", case.model_dir,
           "--prompts", data["trl_prompts"], "--steps", str(case.steps), "--prompts-per-step", str(case.batch_size),
           "--num-generations", str(case.budget_mean), "--max-completion-length", str(case.max_new_tokens),
           "--lr", str(case.lr), "--beta", "0.001", "--epsilon", "0.2", "--epsilon-high", "0.28",
           "--threads", str(threads), "--seed", str(args.seed), "--workdir", str(folder), "--out", str(out)]
    trl_env = dict(env, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    load0 = os.getloadavg()
    wall = _run(cmd, trl_env, folder / f"trl-t{threads}.log", args.timeout)
    res = json.loads(out.read_text())
    return {"side": f"TRL {res['versions']['trl']} ({threads} thr)", "cmd": cmd, "wall_s": round(wall, 1),
            "loadavg_before": load0, "loadavg_after": os.getloadavg(),
            "threads": f"1 process, torch.set_num_threads({threads}), OMP_NUM_THREADS={threads}",
            "trl_geometry": {k: res[k] for k in ("per_device_train_batch_size", "num_generations",
                                                 "generation_batch_size", "steps_per_generation")},
            "versions": res["versions"], "steps": res["steps"]}


def summarize(steps: list[dict], skip: int) -> dict:
    measured = steps[skip:]
    total = sum(s["step_time_s"] for s in measured)
    tokens = sum(s["tokens"] for s in measured)
    stages: dict[str, float] = {}
    for s in measured:
        for k, v in (s.get("stage_time_s") or {}).items():
            stages[k] = stages.get(k, 0.0) + v / len(measured)
    per_step_rate = sorted(s["tokens"] / s["step_time_s"] for s in measured)
    return {"measured_steps": len(measured), "mean_step_s": round(total / len(measured), 4),
            "median_step_s": round(statistics.median(s["step_time_s"] for s in measured), 4),
            "median_tokens_per_s": round(statistics.median(per_step_rate), 1),
            "steps_per_min": round(60 * len(measured) / total, 2), "tokens_per_s": round(tokens / total, 1),
            "tokens_per_step": round(tokens / len(measured), 1),
            "mean_stage_s": {k: round(v, 4) for k, v in stages.items()}}


def pooled(runs: list[dict], skip: int) -> dict:
    """Steady-state summary over all repeats of one side (each repeat drops its own first steps)."""
    steps = [s for r in runs for s in r["steps"][skip:]]
    return summarize(steps, 0)


def compare(label: str, sides: dict[str, list[dict]], skip: int, repeats: int) -> list[dict]:
    """One row per side; ratios against the best TRL row.

    Three views of the same steps: the pooled mean (all measured steps of all repeats), the
    median step (robust to the bursts other processes on a shared box cause), and paired
    ratios (each repeat against the best TRL row of the same repeat, i.e. the same stretch of
    time, so slow drifts in load cancel).
    """
    rows = [{"model": label, "side": side, **pooled(runs, skip),
             "tokens_per_s_by_repeat": [summarize(r["steps"], skip)["tokens_per_s"] for r in runs]}
            for side, runs in sides.items()]
    trl = [r for r in rows if r["side"].startswith("TRL")]
    best_mean = max(r["tokens_per_s"] for r in trl)
    best_steps = max(r["steps_per_min"] for r in trl)
    best_median = max(r["median_tokens_per_s"] for r in trl)
    best_by_rep = [max(r["tokens_per_s_by_repeat"][i] for r in trl) for i in range(repeats)]
    for r in rows:
        r["ratio_tokens_per_s"] = round(r["tokens_per_s"] / best_mean, 2)
        r["ratio_steps_per_min"] = round(r["steps_per_min"] / best_steps, 2)
        r["ratio_median_tokens_per_s"] = round(r["median_tokens_per_s"] / best_median, 2)
        r["paired_ratio_by_repeat"] = [round(v / b, 2) for v, b in zip(r["tokens_per_s_by_repeat"], best_by_rep)]
    return rows


def print_table(results: list[dict]) -> None:
    print(f"\n{'model':<13} {'side':<34} {'steps/min':>9} {'tok/s':>6} {'ratio':>6} {'med tok/s':>9} {'ratio':>6} "
          f"{'tok/step':>8}  {'paired ratios':<15} mean stage seconds")
    for res in results:
        for r in res["rows"]:
            stages = dict(r["mean_stage_s"])
            if "rollout_phase" in stages:  # TRL: what the rollout phase spends besides generate + reward
                rest = stages.pop("rollout_phase") - stages.get("generate", 0.0) - stages.get("reward", 0.0)
                stages = {**stages, "ref_logp+adv": rest}
            st = " ".join(f"{k} {v:.2f}" for k, v in stages.items())
            paired = "/".join(f"{v:.2f}" for v in r["paired_ratio_by_repeat"])
            print(f"{r['model']:<13} {r['side']:<34} {r['steps_per_min']:>9.1f} {r['tokens_per_s']:>6.0f} "
                  f"{r['ratio_tokens_per_s']:>5.2f}× {r['median_tokens_per_s']:>9.0f} "
                  f"{r['ratio_median_tokens_per_s']:>5.2f}× {r['tokens_per_step']:>8.0f}  {paired:<15} {st}")
    print(f"(tok/s: pooled mean over steady-state steps; med: median per-step tokens/s; ratios against the best "
          f"TRL row of the model; paired: per repeat against that repeat's best TRL row; target ≥ {TARGET}×)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--skip", type=int, default=2, help="first steps of each run left out (warm-up)")
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per step B")
    ap.add_argument("--budget-mean", type=int, default=4, help="rollouts per prompt n̄")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--pool", type=int, default=256, help="toy prompts in the shared training file")
    ap.add_argument("--toy-model", choices=["auto", "prepared", "stand-in"], default="auto")
    ap.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M (few steps, short responses)")
    ap.add_argument("--only-smollm2", action="store_true")
    ap.add_argument("--smollm2-steps", type=int, default=3)
    ap.add_argument("--smollm2-skip", type=int, default=1)
    ap.add_argument("--smollm2-batch-size", type=int, default=2)
    ap.add_argument("--smollm2-max-new-tokens", type=int, default=32)
    ap.add_argument("--smollm2-trl-threads", default="1,2",
                    help="TRL thread counts for SmolLM2 (each run is minutes; 2 threads is the fair row on 2 cores)")
    ap.add_argument("--smollm2-ours", action="append", default=None, metavar="VARIANT",
                    help="our variants for SmolLM2 (default: the same as --ours)")
    ap.add_argument("--smollm2-repeats", type=int, default=1)
    ap.add_argument("--num-samplers", type=int, default=2)
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--ours", action="append", default=None, metavar="VARIANT",
                    help="one of our configurations, \"ENGINE [key=value ...]\" (repeatable; default: DEFAULT_OURS), "
                         "e.g. --ours vllm --ours hf --ours 'vllm cluster.off_policy=true'")
    ap.add_argument("--trl-threads", default="1,2", help="comma list of torch thread counts for TRL rows")
    ap.add_argument("--repeats", type=int, default=2, help="alternate the sides this many times")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per side run")
    ap.add_argument("--rebuild-venv", action="store_true")
    ap.add_argument("--out", default=str(OUT_JSON))
    ap.add_argument("--resummarize", metavar="JSON", help="recompute and print the table of an earlier run's JSON")
    args = ap.parse_args()
    if args.resummarize:
        record = json.loads(Path(args.resummarize).read_text())
        for res in record["results"]:
            reps = max(len(v) for v in res["runs"].values())
            res["rows"] = compare(res["case"]["label"], res["runs"], res["case"]["skip"], reps)
        print_table(record["results"])
        Path(args.resummarize).write_text(json.dumps(record, indent=1))
        return 0

    env = _env()
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    trl_python = ensure_trl_venv(rebuild=args.rebuild_venv)
    cases = [] if args.only_smollm2 else [toy_case(args, args.toy_model)]
    if args.smollm2 or args.only_smollm2:
        cases.append(smollm2_case(args))
    results = []
    for case in cases:
        smol = case.label.startswith("smollm2")
        variants = ((args.smollm2_ours or args.ours) if smol else args.ours) or list(DEFAULT_OURS)
        trl_threads = [int(t) for t in (args.smollm2_trl_threads if smol else args.trl_threads).split(",") if t]
        repeats = args.smollm2_repeats if smol else args.repeats
        folder = WORK / case.label
        data = write_data(case, folder)
        sides: dict[str, list[dict]] = {}
        jobs = [("trl", t) for t in trl_threads] + [("ours", v) for v in variants]
        for rep in range(repeats):
            for kind, opt in (jobs if rep % 2 == 0 else jobs[::-1]):  # alternate order against drift
                print(f"[{case.label}] repeat {rep + 1}/{repeats}: {kind} {opt} …", flush=True)
                run = (run_trl(case, data, folder, trl_python, opt, args, env) if kind == "trl"
                       else run_ours(case, data, folder, opt, args, env))
                run["summary"] = summarize(run["steps"], case.skip)
                sides.setdefault(run["side"], []).append(run)
        results.append({"case": asdict(case), "data": data, "runs": sides,
                        "rows": compare(case.label, sides, case.skip, repeats)})
    print_table(results)
    record = {
        "benchmark": "vs_trl", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine()},
        "command": " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]), "target_ratio": TARGET,
        "env": {k: env[k] for k in ("TMPDIR", "RAY_TMPDIR", "RAY_AUTH_MODE", "HF_HUB_OFFLINE", "GDRO_RAY_CACHE",
                                    "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE")},
        "trl_venv_pins": list(TRL_VENV_PINS), "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
