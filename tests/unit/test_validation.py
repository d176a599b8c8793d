"""Validation while training (eval.every, checkpoint.keep_best) without Ray: the config keys, the
metric names, the best checkpoint's pin against rotation, and the validation loop driven by a
stand-in trainer whose pool returns scripted evaluation results. The live run is in
test_validation_live.py."""
from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.config import ConfigError, load_config
from gdro_ray.metrics.eval_names import flat_metrics, metric_value, parse_eval_metric
from gdro_ray.protocol import EvalResult
from gdro_ray.service.checkpoint import mark_best, read_best, write_checkpoint
from gdro_ray.service.run_log import RunLog
from gdro_ray.service.validation import ValidationLoop, is_eval_record


def _result(pooled_pass: float, pooled_mean: float, tiers: dict[str, float] | None = None, k: int = 4) -> dict:
    per_tier = {t: {"n_prompts": 2, "pass_at_k": v, "mean_at_k": v / 2} for t, v in (tiers or {}).items()}
    worst = min(per_tier, key=lambda t: per_tier[t]["pass_at_k"]) if per_tier else None
    return {"k": k, "pooled": {"n_prompts": 4, "n_rollouts": 16, "pass_at_k": pooled_pass, "mean_at_k": pooled_mean},
            "per_tier": per_tier, "worst_tier": {"tier": worst, **per_tier[worst]} if worst else None,
            "per_prompt": [{"id": 0, "n": 4, "c": 1}]}


# ---- config ----------------------------------------------------------------------------------
def test_eval_section_and_legacy_sampler_keys():
    assert load_config(overrides=["eval.every=5", "eval.k=3"]).eval.every == 5
    old = load_config(overrides=["sampler.eval_k=3", "sampler.eval_temperature=0.2", "sampler.eval_top_p=0.5"])
    assert (old.eval.k, old.eval.temperature, old.eval.top_p) == (3, 0.2, 0.5)
    # a later layer's old spelling still beats an earlier layer's new one (smollm2 sets eval.k: 4)
    assert load_config(preset="smollm2").eval.k == 4
    assert load_config(preset="smollm2", overrides=["sampler.eval_k=1"]).eval.k == 1


def test_legacy_keys_in_a_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("sampler: {eval_k: 2, num_samplers: 1}\n")
    cfg = load_config(f)
    assert cfg.eval.k == 2 and cfg.sampler.num_samplers == 1


@pytest.mark.parametrize("overrides,key", [
    (["eval.every=-1"], "eval.every"),
    (["eval.k=0"], "eval.k"),
    (["eval.top_p=0"], "eval.top_p"),
    (["sampler.eval_k=2", "eval.k=3"], "sampler.eval_k"),
    (["checkpoint.keep_best=pooled/pass_at_k"], "checkpoint.keep_best"),  # without eval.every
    (["eval.every=2", "checkpoint.keep_best=pooled"], "checkpoint.keep_best"),
    (["eval.every=2", "checkpoint.keep_best=pooled/mean@4"], "checkpoint.keep_best"),  # eval.k is 8
    (["eval.every=2", "checkpoint.keep_best=everything/pass_at_k"], "checkpoint.keep_best"),
    (["eval.every=2", "checkpoint.keep_best=pooled/median"], "checkpoint.keep_best"),
])
def test_bad_eval_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    msg = str(e.value)
    assert msg.startswith(f"{key}:") and "\n" not in msg


# ---- metric names ----------------------------------------------------------------------------
def test_metric_names_resolve_against_a_result():
    res = _result(0.5, 0.25, {"0": 0.9, "3": 0.1}, k=4)
    assert parse_eval_metric("pooled/mean@4", 4) == ("pooled", "mean_at_k")
    assert metric_value(res, "pooled/pass@4", 4) == 0.5
    assert metric_value(res, "worst_tier/pass_at_k", 4) == 0.1
    assert metric_value(res, "tier0/mean_at_k", 4) == 0.45
    assert metric_value(res, "tier7/pass_at_k", 4) is None
    assert set(flat_metrics(res)) == {f"{g}/{s}" for g in ("pooled", "worst_tier", "tier0", "tier3")
                                      for s in ("pass_at_k", "mean_at_k")}


@given(st.sampled_from(["pooled", "worst_tier", "tier2", "tierhard"]), st.sampled_from(["pass", "mean"]),
       st.integers(1, 64), st.integers(1, 64))
def test_at_k_names_accepted_only_for_the_evaluated_k(group, stat, asked, k):
    name = f"{group}/{stat}@{asked}"
    if asked == k:
        assert parse_eval_metric(name, k) == (group, f"{stat}_at_k")
    else:
        with pytest.raises(ValueError):
            parse_eval_metric(name, k)


# ---- the best checkpoint survives rotation ---------------------------------------------------
def _fake_learner(path):
    os.makedirs(path)
    for name in ("config.json", "model.safetensors"):
        Path(path, name).write_text("{}")


def _run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml").write_text("steps: 3\n")
    return d


def _names(d):
    return sorted(p.name for p in (d / "checkpoints").glob("step_*"))


def test_keep_rotation_spares_the_best_and_releases_it_when_it_moves(tmp_path):
    d = _run_dir(tmp_path)
    for s in (1, 2):
        write_checkpoint(d, s, _fake_learner, {}, {"step": s}, keep=1)
    assert _names(d) == ["step_000002"]
    mark_best(d, 2, "pooled/pass_at_k", 0.4, keep=1)
    for s in (3, 4):
        write_checkpoint(d, s, _fake_learner, {}, {"step": s}, keep=1)
    assert _names(d) == ["step_000002", "step_000004"]  # newest + best
    mark_best(d, 4, "pooled/pass_at_k", 0.5, keep=1)
    assert _names(d) == ["step_000004"]  # the old best is no longer pinned
    assert read_best(d) == {"name": "step_000004", "step": 4, "metric": "pooled/pass_at_k", "value": 0.5}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8), st.integers(1, 3))
def test_best_pin_is_the_argmax_and_always_on_disk(tmp_path_factory, values, keep):
    """Whatever the sequence of evaluations, the pinned checkpoint is the first step holding the
    maximum, it exists, and besides it only the newest `keep` checkpoints remain."""
    d = _run_dir(tmp_path_factory.mktemp("pin"))
    best = None
    for step, v in enumerate(values, 1):
        write_checkpoint(d, step, _fake_learner, {}, {"step": step}, keep=keep)
        if best is None or v > best[1]:
            best = (step, v)
            mark_best(d, step, "pooled/pass_at_k", v, keep=keep)
    pin = read_best(d)
    assert pin["step"] == best[0] and pin["value"] == best[1]
    want = {f"step_{s:06d}" for s in range(max(1, len(values) - keep + 1), len(values) + 1)} | {pin["name"]}
    assert set(_names(d)) == want


# ---- the validation loop with a stand-in trainer ---------------------------------------------
class _Pool:
    def __init__(self, results):
        self.results, self.calls, self.version = list(results), [], 0

    def evaluate(self, examples, **kw):
        self.calls.append(kw)
        return EvalResult(**self.results.pop(0))


class _Trainer:
    """The driver's side of a run as ValidationLoop sees it, with a synchronous step."""

    def __init__(self, run_dir, cfg, results, resume=False):
        self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
        self.step = self.version = 0
        self.pool, self.eval_set = _Pool(results), [{"prompt": "p"}]
        self.checkpoints = []
        self.base_signature = self.base_reuse = None

    def sync_weights(self):
        self.pool.version = self.version

    def checkpoint(self):
        self.checkpoints.append(self.step)
        write_checkpoint(self.run_dir, self.step, _fake_learner, {}, {"step": self.step}, keep=self.cfg.checkpoint.keep)

    def validation(self):
        return ValidationLoop(self.cfg, self.run_dir, pool=self.pool, eval_set=self.eval_set, log=RunLog(self.run_dir),
                              sync_weights=self.sync_weights, checkpoint=self.checkpoint, start_step=self.step,
                              resume=self.resume, base_reuse=self.base_reuse, base_signature=self.base_signature)

    def train(self, evals, steps):
        """The driver's loop: step, regular checkpoint, periodic evaluation; then final."""
        while self.step < steps:
            self.step += 1
            self.version += 1
            self.sync_weights()
            if self.cfg.checkpoint.every and self.step % self.cfg.checkpoint.every == 0 and self.step < steps:
                self.checkpoint()
            evals.after_step(self.step)
        self.checkpoint()
        return evals.final(self.step)


def _records(d):
    return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]


def test_loop_evaluates_at_the_right_steps_and_keeps_the_best(tmp_path, capsys):
    d = _run_dir(tmp_path)
    cfg = load_config(overrides=["steps=7", "eval.every=2", "eval.k=4", "checkpoint.every=3", "checkpoint.keep=1",
                                 "checkpoint.keep_best=pooled/mean@4", "eval.temperature=0.3"])
    # base, after 2, 4, 6, final (7): the best mean@4 is after step 4
    means = [0.1, 0.3, 0.6, 0.2, 0.4]
    tr = _Trainer(d, cfg, [_result(0.5, m) for m in means])
    evals = tr.validation()
    evals.base(tr.step)
    tr.train(evals, cfg.steps)
    recs = _records(d)
    assert all(is_eval_record(r) for r in recs)
    assert [(r["label"], r["steps_done"], r["step"]) for r in recs] == [
        ("base", 0, -1), ("periodic", 2, 1), ("periodic", 4, 3), ("periodic", 6, 5), ("final", 7, 6)]
    assert [r["metrics"]["pooled/mean_at_k"] for r in recs] == means
    assert [r["weights_version"] for r in recs] == [0, 2, 4, 6, 7]  # what the samplers held
    assert all(c["k"] == 4 and c["temperature"] == 0.3 for c in tr.pool.calls)
    # a new best between checkpoint steps (2, 4) writes a checkpoint there; 3 and 6 are regular
    assert tr.checkpoints == [2, 3, 4, 6, 7]
    assert read_best(d)["name"] == "step_000004" and read_best(d)["value"] == 0.6
    assert _names(d) == ["step_000004", "step_000007"]
    assert [r["best"]["improved"] for r in recs[1:]] == [True, True, False, False]
    assert recs[0]["best"] is None and recs[-1]["best"]["best_step"] == 4
    assert json.loads((d / "eval_base.json").read_text())["pooled"]["mean_at_k"] == 0.1
    assert json.loads((d / "eval_final.json").read_text())["pooled"]["mean_at_k"] == 0.4
    assert "new best pooled/mean@4 = 0.600" in capsys.readouterr().out
    # every periodic evaluation keeps its full result (per prompt), for a peak picked on held-out halves
    assert sorted(p.name for p in (d / "evals").iterdir()) == ["step000002.json", "step000004.json", "step000006.json"]
    assert json.loads((d / "evals" / "step000004.json").read_text())["pooled"]["mean_at_k"] == 0.6


def test_loop_without_periodic_eval_only_base_and_final(tmp_path):
    d = _run_dir(tmp_path)
    cfg = load_config(overrides=["steps=3", "checkpoint.every=0"])
    tr = _Trainer(d, cfg, [_result(0.1, 0.1), _result(0.2, 0.2)])
    evals = tr.validation()
    evals.base(tr.step)
    tr.train(evals, cfg.steps)
    assert [(r["label"], r["steps_done"]) for r in _records(d)] == [("base", 0), ("final", 3)]
    assert read_best(d) is None and tr.checkpoints == [3]


def test_resume_continues_the_best_and_does_not_redo_base(tmp_path):
    d = _run_dir(tmp_path)
    over = ["steps=4", "eval.every=1", "eval.k=4", "checkpoint.every=2", "checkpoint.keep=1",
            "checkpoint.keep_best=pooled/pass_at_k"]
    cfg = load_config(overrides=over)
    tr = _Trainer(d, cfg, [_result(0.0, 0), _result(0.5, 0), _result(0.3, 0)])
    evals = tr.validation()
    evals.base(tr.step)
    tr.step = tr.version = 0
    for _ in range(2):  # two steps, then the process dies after the checkpoint of step 2
        tr.step += 1
        tr.version += 1
        tr.sync_weights()
        if tr.step == 2:
            tr.checkpoint()
        evals.after_step(tr.step)
    assert read_best(d)["step"] == 1
    again = _Trainer(d, cfg, [_result(0.4, 0), _result(0.9, 0)], resume=True)
    again.step = again.version = 2
    evals = again.validation()
    assert evals.base(again.step)["pooled"]["pass_at_k"] == 0.0 and not again.pool.calls  # read back, not re-run
    assert evals.best["value"] == 0.5
    again.train(evals, 4)
    assert read_best(d)["step"] == 4 and read_best(d)["value"] == 0.9
    labels = [(r["label"], r["steps_done"]) for r in _records(d)]
    assert labels == [("base", 0), ("periodic", 1), ("periodic", 2), ("periodic", 3), ("final", 4)]


def test_a_best_from_redone_steps_or_another_metric_is_not_carried_over(tmp_path):
    d = _run_dir(tmp_path)
    write_checkpoint(d, 6, _fake_learner, {}, {"step": 6}, keep=3)
    mark_best(d, 6, "pooled/pass_at_k", 0.9, keep=3)
    cfg = load_config(overrides=["eval.every=1", "eval.k=4", "checkpoint.keep_best=pooled/pass_at_k"])
    tr = _Trainer(d, cfg, [], resume=True)
    tr.step = 4  # resumed from an earlier checkpoint: step 6 is redone
    assert tr.validation().best is None
    tr.step = 6
    assert tr.validation().best["value"] == 0.9
    other = load_config(overrides=["eval.every=1", "eval.k=4", "checkpoint.keep_best=pooled/mean_at_k"])
    tr2 = _Trainer(d, other, [], resume=True)
    tr2.step = 6
    assert tr2.validation().best is None


def test_keep_best_on_a_group_the_held_out_set_lacks_fails_in_one_line(tmp_path):
    from gdro_ray.errors import UserError

    d = _run_dir(tmp_path)
    cfg = load_config(overrides=["eval.every=1", "eval.k=4", "checkpoint.keep_best=tier9/pass_at_k"])
    tr = _Trainer(d, cfg, [_result(0.1, 0.1, {"0": 0.2})])
    with pytest.raises(UserError) as e:
        tr.validation().base(tr.step)
    assert str(e.value).startswith("checkpoint.keep_best: the held-out set has no tier9/pass_at_k")


def test_off_policy_sync_waits_for_the_sampling_ahead_then_publishes(tmp_path):
    """Trainer.sync_weights, what the loop calls before an evaluation: the sampling launched ahead
    finishes first (its result stays for the next step), then the current weights are published."""
    from concurrent.futures import Future

    from gdro_ray.service.driver import Trainer
    from gdro_ray.service.run_parts import RunParts

    d = _run_dir(tmp_path)
    cfg = load_config(overrides=["steps=4", "eval.every=2"])
    published = []

    class Weights:
        def publish(self, version):
            assert fut.done()  # the sampling ahead has finished before the samplers change weights
            published.append(version)

    class Pool:
        version = 0

    fut = Future()
    fut.set_result(("rollouts", 1.0))
    trainer = Trainer(cfg, d, RunParts(adversary=None, pool=Pool(), learner=None, weights=Weights()), version=2)
    trainer.inflight = ({"step": 2}, fut)
    trainer.sync_weights()
    assert published == [2] and trainer.inflight[1].result() == ("rollouts", 1.0)  # left for the next step


# ---- readers of metrics.jsonl ----------------------------------------------------------------
def test_exporter_serves_eval_gauges():
    from gdro_ray.metrics.exporter import Exporter
    from gdro_ray.service.validation import eval_record

    ex = Exporter("127.0.0.1", 0)
    try:
        rec = eval_record(_result(0.5, 0.25, {"0": 0.9, "3": 0.1}), "periodic", 6, 6, 1.0,
                          best={"metric": "pooled/pass_at_k", "value": 0.5, "best_value": 0.7, "best_step": 4,
                                "improved": False})
        ex.update_eval(rec)
        text = urllib.request.urlopen(ex.address, timeout=5).read().decode()
    finally:
        ex.close()
    assert 'gdro_eval_pass_at_k{group="pooled"} 0.5' in text
    assert 'gdro_eval_mean_at_k{group="tier0"} 0.45' in text
    assert 'gdro_eval_pass_at_k{group="worst_tier"} 0.1' in text
    assert "gdro_eval_steps 6.0" in text and "gdro_eval_best 0.7" in text


def test_status_shows_the_last_evaluation():
    from gdro_ray.metrics.status import render_status
    from gdro_ray.protocol import StatusReport
    from gdro_ray.service.validation import eval_record

    rec = eval_record(_result(0.5, 0.25), "periodic", 6, 6, 1.0,
                      best={"metric": "pooled/pass_at_k", "value": 0.5, "best_value": 0.7, "best_step": 4,
                            "improved": False})
    out = render_status(StatusReport(run_dir="r", algorithm="both", eval=rec))
    assert "eval after 6 steps: pooled pass@4 0.500  mean@4 0.250  best pooled/pass_at_k 0.700 (step 4)" in out


def test_report_and_tensorboard_skip_eval_records_and_plot_the_curve(tmp_path):
    from gdro_ray.metrics.report import load_run, render
    from gdro_ray.service.validation import eval_record

    d = tmp_path / "run"
    d.mkdir()
    step = {"step": 0, "algorithm": "both", "rollouts": 8, "reward_mean": 0.5,
            "bin_weights": [0.5, 0.5], "bin_share": [0.5, 0.5], "bin_rollouts": [4, 4], "bin_pass_at_k": [0.2, None]}
    lines = [eval_record(_result(0.2, 0.1, {"0": 0.3, "1": 0.1}), "base", 0, 0, 1.0).to_json()]
    for s in range(4):
        lines.append(dict(step, step=s))
        if s % 2 == 1:
            lines.append(eval_record(_result(0.2 + 0.1 * s, 0.1, {"0": 0.3, "1": 0.1 * s}), "periodic", s + 1, s + 1,
                                     1.0).to_json())
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    run = load_run(d)
    assert [r["step"] for r in run["records"]] == [0, 1, 2, 3]
    assert [c[0] for c in run["eval_curve"]] == [0, 2, 4]
    assert run["eval_curve"][-1][1] == pytest.approx(0.5) and run["eval_curve"][-1][2] == pytest.approx(0.3)
    out = render([str(d)], str(tmp_path / "rep"))
    assert (out / "eval.png").stat().st_size > 5000
    assert "| 0.500 (4) |" in (out / "report.md").read_text()
    # a replay of metrics.jsonl into TensorBoard: eval lines add no step scalars, their eval/* come via write_eval
    from _tensorboard import read_scalars

    from gdro_ray.metrics.tensorboard import TensorBoardWriter

    tb = TensorBoardWriter(tmp_path / "tb")
    for rec in lines:
        tb.write_record(rec)
    tb.write_eval(_result(0.25, 0.1), 2)
    tb.close()
    tags = read_scalars(tmp_path / "tb" / "tensorboard")
    assert [s for s, _ in tags["reward_mean"]] == [1, 2, 3, 4]
    assert tags["eval/pooled/pass_at_k"] == [(2, 0.25)]
    assert not any(t.startswith("metrics") or t in ("steps_done", "eval_s") for t in tags)


# ---- eval.base_from: one base evaluation shared by runs of the same base model ----------------
def _model(tmp_path):
    m = tmp_path / "model"
    m.mkdir(exist_ok=True)
    (m / "config.json").write_text("{}")
    (m / "model.safetensors").write_bytes(b"\0" * 64)
    return m


def _sub(tmp_path, name):
    (tmp_path / name).mkdir()
    return tmp_path / name


def test_base_signature_tracks_what_decides_the_result(tmp_path):
    from gdro_ray.service.validation import base_signature

    m, rows = _model(tmp_path), [{"id": 0, "prompt": "1+1", "answer": "2"}]
    sig = base_signature(load_config(), str(m), rows)
    assert sig == base_signature(load_config(overrides=["algorithm=grpo", "learner.lr=0.5"]), str(m), rows)
    assert sig["seed"] != base_signature(load_config(overrides=["seed=1"]), str(m), rows)["seed"]
    assert sig["temperature"] != base_signature(load_config(overrides=["eval.temperature=0.1"]), str(m), rows)["temperature"]
    assert sig["eval_set"] != base_signature(load_config(), str(m), [{"id": 0, "prompt": "1+1", "answer": "3"}])["eval_set"]
    (m / "model.safetensors").write_bytes(b"\1" * 65)  # new weights file: never reused
    assert sig["model_files"] != base_signature(load_config(), str(m), rows)["model_files"]


def test_base_from_is_checked_and_reused_instead_of_evaluating(tmp_path):
    from gdro_ray.errors import UserError
    from gdro_ray.service.validation import base_signature, load_base_from

    m, rows = _model(tmp_path), [{"prompt": "p"}]
    first = _Trainer(_run_dir(_sub(tmp_path, "a")), load_config(overrides=["steps=1"]), [_result(0.5, 0.25)])
    first.base_signature = base_signature(first.cfg, str(m), rows)
    first.validation().base(first.step)
    written = json.loads((first.run_dir / "eval_base.json").read_text())
    assert written["signature"] == first.base_signature

    cfg = load_config(overrides=["steps=1", "algorithm=grpo", f"eval.base_from={first.run_dir}"])
    second = _Trainer(_run_dir(_sub(tmp_path, "b")), cfg, [_result(0.9, 0.9)])
    second.base_signature = base_signature(cfg, str(m), rows)
    second.base_reuse = load_base_from(cfg.eval.base_from, second.base_signature)
    res = second.validation().base(second.step)
    assert second.pool.calls == [] and res["pooled"]["mean_at_k"] == 0.25  # not evaluated again
    assert json.loads((second.run_dir / "eval_base.json").read_text())["reused_from"] == str(first.run_dir)
    assert [(r["label"], r["metrics"]["pooled/mean_at_k"]) for r in _records(second.run_dir)] == [("base", 0.25)]

    with pytest.raises(UserError, match=r"eval.base_from: .* seed=0, this run has 3"):
        load_base_from(str(first.run_dir), base_signature(load_config(overrides=["seed=3"]), str(m), rows))
    with pytest.raises(UserError, match="eval.base_from: no base evaluation"):
        load_base_from(str(tmp_path / "missing"), first.base_signature)
    (tmp_path / "old.json").write_text(json.dumps(_result(0.1, 0.1)))
    with pytest.raises(UserError, match="has no signature"):
        load_base_from(str(tmp_path / "old.json"), first.base_signature)


def test_base_from_that_is_not_an_evaluation_is_refused_before_ray(tmp_path):
    """--dry-run (and the driver, before Ray) reads eval.base_from: a missing path, a JSON list, a JSON
    object that is no evaluation, each one line (a list used to end in AttributeError after Ray started)."""
    from gdro_ray.errors import UserError
    from gdro_ray.service.start_checks import check_start

    cases = {"missing": (tmp_path / "nope" / "run", "no such file or folder"),
             "list": (tmp_path / "list.json", "it is a JSON list"),
             "object": (tmp_path / "obj.json", "an object without 'pooled'"),
             "torn": (tmp_path / "torn.json", "not a readable evaluation")}
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "obj.json").write_text('{"a": 1}')
    (tmp_path / "torn.json").write_text('{"pooled": ')
    for path, why in cases.values():
        cfg = load_config(overrides=[f"eval.base_from={path}"])
        with pytest.raises(UserError) as e:
            check_start(cfg, tmp_path / "run", resume=False, network=False)
        assert str(e.value).startswith("eval.base_from:") and why in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()
    # a resumed run that has its own eval_base.json does not need the source any more
    run = _run_dir(_sub(tmp_path, "resumed"))
    (run / "eval_base.json").write_text("{}")
    check_start(load_config(overrides=[f"eval.base_from={tmp_path / 'list.json'}"]), run, resume=True, network=False)


def test_keep_best_tier_the_held_out_set_lacks_is_refused_before_any_evaluation(tmp_path):
    from gdro_ray.errors import UserError
    from gdro_ray.service.start_checks import check_start
    from gdro_ray.service.validation import check_keep_best_on

    def refused(overrides):
        with pytest.raises(UserError) as e:
            check_start(load_config(overrides=["eval.every=1", *overrides]), tmp_path / "run", False, network=False)
        return str(e.value)

    assert refused(["checkpoint.keep_best=tier99/pass_at_k"]).startswith(
        "checkpoint.keep_best: the held-out set has no tier99/pass_at_k")
    # 3 prompts spread over the toy set's six tiers keep tiers 0, 2 and 4 only
    assert "tier4/pass_at_k" in refused(["checkpoint.keep_best=tier5/pass_at_k", "data.toy_eval_per_tier=2",
                                         "data.max_eval_prompts=3"])
    check_start(load_config(overrides=["eval.every=1", "checkpoint.keep_best=tier5/mean_at_k"]), tmp_path / "run",
                False, network=False)
    assert not (tmp_path / "run").exists()
    # a custom set: its own tier names (the driver checks as soon as it is loaded, before any actor)
    rows = [{"prompt": "p", "tier": "algebra"}, {"prompt": "q", "tier": 3}]
    check_keep_best_on("tieralgebra/pass_at_k", 4, rows)
    check_keep_best_on("tier3/mean@4", 4, rows)
    with pytest.raises(UserError, match="has no tier4/pass_at_k"):
        check_keep_best_on("tier4/pass_at_k", 4, rows)
    with pytest.raises(UserError, match="has no worst_tier/pass_at_k"):  # no tiers at all
        check_keep_best_on("worst_tier/pass_at_k", 4, [{"prompt": "p"}])


def test_an_evaluation_a_kill_interrupted_is_redone_on_resume(tmp_path):
    """Killed during the evaluation after step 2 (its checkpoint written): the resumed run evaluates
    step 2 before training on, so the curve has no hole and keep_best compares that checkpoint."""
    d = _run_dir(tmp_path)
    cfg = load_config(overrides=["steps=4", "eval.every=2", "eval.k=4", "checkpoint.every=2", "checkpoint.keep=1",
                                 "checkpoint.keep_best=pooled/pass_at_k"])
    tr = _Trainer(d, cfg, [_result(0.1, 0)])
    tr.validation().base(tr.step)
    for _ in range(2):
        tr.step += 1
        tr.version += 1
        tr.sync_weights()
    tr.checkpoint()  # step 2's checkpoint; the kill came during the evaluation that follows
    again = _Trainer(d, cfg, [_result(0.7, 0), _result(0.2, 0), _result(0.3, 0)], resume=True)
    again.step = again.version = 2
    evals = again.validation()
    evals.base(again.step)
    assert evals.catch_up(again.step)["pooled"]["pass_at_k"] == 0.7
    assert read_best(d)["step"] == 2 and read_best(d)["value"] == 0.7
    again.train(evals, 4)
    labels = [(r["label"], r["steps_done"]) for r in _records(d)]
    assert labels == [("base", 0), ("periodic", 2), ("final", 4)]
    # a further resume from step 2 finds that evaluation recorded and does not redo it
    third = _Trainer(d, cfg, [], resume=True)
    third.step = third.version = 2
    assert third.validation().catch_up(third.step) is None and third.pool.calls == []
    # a new run: nothing to catch up; a run extended past its final evaluation does not redo it
    fresh = _Trainer(d, cfg, [])
    assert fresh.validation().catch_up(fresh.step) is None
    longer = _Trainer(d, load_config(overrides=["steps=6", "eval.every=2", "eval.k=4"]), [], resume=True)
    longer.step = longer.version = 4
    assert longer.validation().catch_up(longer.step) is None and longer.pool.calls == []
