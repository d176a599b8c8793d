"""Held-out evaluation of a training run: before step 1, every `eval.every` steps, and at the end.

Evaluation runs on one sampler of the pool, between steps, on the weights the learner has at
that moment (in off-policy mode the sampling launched ahead is let finish first and the current
weights are published, so an evaluation and the checkpoint of its step hold the same weights).

Every evaluation leaves through `ValidationLoop.emit`, the single place that fans a result out:
an `eval` record appended to metrics.jsonl through the run's `RunLog` (docs/metrics.md), the adversary actor's gdro_eval_*
gauges, TensorBoard's eval/* scalars. A further sink (wandb, MLflow) is one more line there.

With `checkpoint.keep_best` the loop also tracks the best value of that metric over the
evaluations after training steps (the base model has no checkpoint to keep) and pins its
checkpoint in `checkpoints/best.json`, so `checkpoint.keep` rotation never removes it.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from gdro_ray.errors import UserError
from gdro_ray.metrics.eval_names import flat_metrics, metric_value
from gdro_ray.protocol import EVAL_RECORD, EvalRecord
from gdro_ray.service.run_log import RunLog
from gdro_ray.utils.io import atomic_write_json


def is_eval_record(record: dict) -> bool:
    return record.get("type") == EVAL_RECORD


def eval_record(result: dict, label: str, steps_done: int, weights_version: int, seconds: float,
                best: dict | None = None) -> EvalRecord:
    """The compact record of one evaluation `result` (per-prompt detail stays out of it)."""
    return EvalRecord(
        label=label,
        # the index of the step this evaluation follows (-1: before training), so a resume that
        # trims the records of redone steps keeps exactly the evaluations it does not redo
        step=steps_done - 1,
        steps_done=steps_done,
        weights_version=weights_version,
        k=result.get("k"),
        n_prompts=(result.get("pooled") or {}).get("n_prompts"),
        metrics=flat_metrics(result),
        eval_s=round(seconds, 3),
        best=best,
    )


def base_signature(cfg, model_path: str, eval_set: list[dict], prompt_format=None) -> dict:
    """What decides a base evaluation's result: the model's files, the held-out set, the eval
    settings, engine, dtype and seed. Two runs with equal signatures evaluate the base model
    identically (evaluation is seeded), so one may reuse the other's (`eval.base_from`)."""
    root = Path(model_path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    # names, sizes and modification times: cheap for any model size, and a re-prepared model
    # (same content, new files) only ever makes a reuse fail, never a wrong one succeed
    model = hashlib.sha256(json.dumps([(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                                       for p in files]).encode()).hexdigest()[:16]
    # a chat row's context joins its tuple only when it has one, so signatures of plain sets stay as they were
    rows = hashlib.sha256(json.dumps([(r.get("id"), r.get("prompt"), r.get("answer"))
                                      + ((r["context"],) if r.get("context") else ()) for r in eval_set],
                                     default=str).encode()).hexdigest()[:16]
    e = cfg.eval
    out = {"model": str(model_path), "model_files": model, "eval_set": rows, "n_prompts": len(eval_set),
           "k": e.k, "temperature": e.temperature, "top_p": e.top_p, "max_new_tokens": cfg.sampler.max_new_tokens,
           "engine": cfg.sampler.engine, "dtype": cfg.model.dtype, "seed": cfg.seed}
    if prompt_format is not None and not prompt_format.is_default:  # (absent: signatures made before it existed)
        out["prompt_format"] = prompt_format.to_dict()
    return out


def read_base_from(path: str) -> tuple[Path, dict]:
    """(file, result) of the base evaluation `eval.base_from` names (a file or a run folder), checked
    for being one: the driver calls it before Ray starts, `--dry-run` too. One-line UserError."""
    src = Path(path).expanduser()
    src = src / "eval_base.json" if src.is_dir() else src
    if not src.is_file():
        what = "no such file or folder" if not src.exists() else "not a regular file"
        raise UserError(f"eval.base_from: no base evaluation at {src} ({what}); "
                        "give a run folder or its eval_base.json")
    try:
        res = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"eval.base_from: {src} is not a readable evaluation ({str(e).splitlines()[0]})") from None
    if not isinstance(res, dict) or not isinstance(res.get("pooled"), dict):
        got = f"a JSON {type(res).__name__}" if not isinstance(res, dict) else "an object without 'pooled'"
        raise UserError(f"eval.base_from: {src} is not a run's base evaluation (eval_base.json), it is {got}")
    if not isinstance(res.get("signature"), dict):
        raise UserError(f"eval.base_from: {src} has no signature (written before base reuse existed); evaluate again")
    return src, res


def load_base_from(path: str, signature: dict) -> dict:
    """The base evaluation named by `eval.base_from`, checked against this run's signature; a
    one-line UserError names the first field that differs."""
    src, res = read_base_from(path)
    theirs = res["signature"]
    for key, value in signature.items():
        if theirs.get(key) != value:
            raise UserError(f"eval.base_from: {src} was evaluated with {key}={theirs.get(key)!r}, this run has {value!r}")
    return res


def check_keep_best_on(metric: str, k: int, eval_set: list[dict]) -> None:
    """Refuse a `checkpoint.keep_best` the held-out set cannot have (a tier it lacks) before any
    evaluation: the metric names an evaluation of this set would have, as the evaluation makes them."""
    if not metric or not eval_set:
        return
    from gdro_ray.eval.evaluate import aggregate

    shape = aggregate(eval_set, [[False] * k for _ in eval_set], k)
    if metric_value(shape, metric, k) is None:
        have = ", ".join(sorted(flat_metrics(shape))) or "none"
        raise UserError(f"checkpoint.keep_best: the held-out set has no {metric} (it has: {have})")


class ValidationLoop:
    """The evaluations of one run, given what they need: the sampler pool that evaluates, the
    run's log, and two actions of the driver's (`sync_weights`: make the samplers hold the
    learner's current weights; `checkpoint`: write the checkpoint of the step just done). Each
    method takes `step`, the number of training steps done."""

    def __init__(self, cfg, run_dir: Path, *, pool, eval_set: list[dict], log: RunLog,
                 sync_weights: Callable[[], None], checkpoint: Callable[[], None], start_step: int = 0,
                 resume: bool = False, adversary=None, base_reuse: dict | None = None,
                 base_signature: str | None = None, tensorboard=None):
        from gdro_ray.service.checkpoint import read_best

        self.cfg, self.run_dir, self.pool, self.eval_set, self.log = cfg, Path(run_dir), pool, eval_set, log
        self.sync_weights, self.checkpoint, self.resume, self.adversary = sync_weights, checkpoint, resume, adversary
        self.base_reuse, self.base_signature, self.tb = base_reuse, base_signature, tensorboard
        self.metric = self.cfg.checkpoint.keep_best
        prev = read_best(self.run_dir) if self.metric else None
        # a resumed run continues the comparison it was making (the same metric only, and not a
        # best from steps after the checkpoint it resumed from: those steps are redone)
        ok = prev and prev.get("metric") == self.metric and int(prev.get("step", 0)) <= start_step
        self.best = prev if ok else None

    # ---- evaluation -----------------------------------------------------------------------
    def _run_eval(self) -> tuple[dict, float]:
        """One evaluation on the pool, as the JSON-ready dict the loop writes and reads back, and its seconds."""
        e = self.cfg.eval
        t0 = time.perf_counter()
        res = self.pool.evaluate(self.eval_set, k=e.k, max_new_tokens=self.cfg.sampler.max_new_tokens,
                                 temperature=e.temperature, top_p=e.top_p, seed=self.cfg.seed)
        return res.to_dict(), time.perf_counter() - t0

    def base(self, step: int) -> dict:
        """The base model's evaluation: evaluated and emitted once, read back on resume."""
        path = self.run_dir / "eval_base.json"
        if self.resume and path.is_file():
            res = json.loads(path.read_text())
        elif self.base_reuse is not None:  # eval.base_from: checked at start
            res = dict(self.base_reuse, reused_from=self.cfg.eval.base_from)
            atomic_write_json(path, res)
            self.emit(res, "base", step, 0.0)
        else:
            res, secs = self._run_eval()
            if self.base_signature:
                res["signature"] = self.base_signature
            atomic_write_json(path, res)
            self.emit(res, "base", step, secs)
        self._check_metric(res)
        return res

    def catch_up(self, step: int) -> dict | None:
        """On resume, the periodic evaluation of the checkpoint's own step when metrics.jsonl has no
        record of it (the run was killed during it): without it the eval curve has a hole there and
        `keep_best` never compares that step's checkpoint."""
        every = self.cfg.eval.every
        if not (self.resume and every and 0 < step < self.cfg.steps and step % every == 0):
            return None
        if step in _evaluated_steps(self.log.records()):
            return None
        return self.after_step(step)

    def after_step(self, step: int) -> dict | None:
        """Evaluate if `eval.every` says so after the step just done; the end of training is
        left to `final()` so the last step is not evaluated twice."""
        every = self.cfg.eval.every
        if not every or step % every or step >= self.cfg.steps:
            return None
        self.sync_weights()
        res, secs = self._run_eval()
        # per-prompt detail of each periodic evaluation (metrics.jsonl keeps the summary only): a
        # peak picked on one half of the held-out prompts and reported on the other half needs it
        atomic_write_json(self.run_dir / "evals" / f"step{step:06d}.json", res)
        self.emit(res, "periodic", step, secs, best=self._keep_best(res, step))
        return res

    def final(self, step: int) -> dict:
        """The final evaluation (after the last checkpoint is written)."""
        res, secs = self._run_eval()
        atomic_write_json(self.run_dir / "eval_final.json", res)
        self.emit(res, "final", step, secs, best=self._keep_best(res, step) if self.cfg.eval.every else None)
        return res

    # ---- the one place results leave -------------------------------------------------------
    def emit(self, result: dict, label: str, steps_done: int, seconds: float, best: dict | None = None) -> EvalRecord:
        # the version the samplers evaluated (after sync_weights: the learner's current one)
        record = eval_record(result, label, steps_done, self.pool.version, seconds, best)
        self.log.append(record.to_json())
        if self.tb is not None:  # TensorBoardWriter.write_eval, or a metrics.loggers set's log_eval
            (getattr(self.tb, "log_eval", None) or self.tb.write_eval)(result, steps_done)
        if self.adversary is not None:
            self.adversary.report_eval.remote(record)  # fire-and-forget: gauges only
        print(_summary_line(record), flush=True)
        return record

    # ---- the best checkpoint -----------------------------------------------------------------
    def _check_metric(self, result: dict) -> None:
        if self.metric and metric_value(result, self.metric, self.cfg.eval.k) is None:
            have = ", ".join(sorted(flat_metrics(result))) or "none"
            raise UserError(f"checkpoint.keep_best: the held-out set has no {self.metric} (it has: {have})")

    def _keep_best(self, result: dict, step: int) -> dict | None:
        from gdro_ray.service.checkpoint import checkpoint_name, checkpoint_root, mark_best

        if not self.metric:
            return None
        value = metric_value(result, self.metric, self.cfg.eval.k)
        if value is None:
            return None
        improved = self.best is None or value > float(self.best["value"])
        if improved:
            if not (checkpoint_root(self.run_dir) / checkpoint_name(step)).is_dir():
                self.checkpoint()  # a new best between checkpoint steps: write one here
            mark_best(self.run_dir, step, self.metric, value, self.cfg.checkpoint.keep)
            self.best = {"name": checkpoint_name(step), "step": step, "metric": self.metric, "value": value}
        return {"metric": self.metric, "value": value, "best_value": float(self.best["value"]),
                "best_step": int(self.best["step"]), "improved": improved}


def _evaluated_steps(records: list[dict]) -> set[int]:
    """steps_done of the evaluations after training steps among `records` (a final one counts: a
    run extended by `steps=` resumes from its last step)."""
    return {rec["steps_done"] for rec in records
            if is_eval_record(rec) and rec.get("label") in ("periodic", "final") and isinstance(rec.get("steps_done"), int)}


def _summary_line(record: EvalRecord) -> str:
    m, k = record.metrics, record.k
    parts = [f"eval ({record.label}, after {record.steps_done} steps): "
             f"pooled pass@{k} {m.get('pooled/pass_at_k', float('nan')):.3f}, "
             f"mean@{k} {m.get('pooled/mean_at_k', float('nan')):.3f}"]
    if "worst_tier/pass_at_k" in m:
        parts.append(f"worst tier pass@{k} {m['worst_tier/pass_at_k']:.3f}")
    if record.best and record.best.get("improved"):
        parts.append(f"new best {record.best['metric']} = {record.best['value']:.3f}")
    return "; ".join(parts)
