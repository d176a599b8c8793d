"""Validation while training, live: a short real run (Ray actors, a vLLM sampler, an FSDP2 learner,
the prepared toy model) with eval.every=2 in one-step off-policy mode, the harder case: the
evaluation must wait for the sampling launched ahead and publish the current weights first."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_eval_records_at_their_steps_and_the_best_checkpoint_is_kept(tmp_path):
    import ray
    from _tensorboard import read_scalars

    from gdro_ray.config import load_config
    from gdro_ray.service.build import build_trainer
    from gdro_ray.service.checkpoint import read_best

    run = tmp_path / "run"
    cfg = load_config(overrides=[
        "model.path=toy", "algorithm=both", "steps=4", "batch_size=8", "sampler.num_samplers=1",
        "learner.world_size=1", "data.eval=toy", "data.max_eval_prompts=12", "eval.k=2", "eval.every=2",
        "checkpoint.every=0", "checkpoint.keep=1", "checkpoint.keep_best=pooled/mean@2", "cluster.off_policy=true",
        "metrics.tensorboard=true", f"out={run}"])
    try:
        build_trainer(cfg, run).run()
    finally:
        ray.shutdown()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if r.get("type") != "eval"]
    evals = [r for r in lines if r.get("type") == "eval"]
    assert [r["step"] for r in steps] == [0, 1, 2, 3]
    assert [(r["label"], r["steps_done"]) for r in evals] == [("base", 0), ("periodic", 2), ("final", 4)]
    # each evaluation ran on the weights of its step, although sampling ran one step ahead
    assert [r["weights_version"] for r in evals] == [0, 2, 4]
    assert all(r["k"] == 2 and r["n_prompts"] == 12 for r in evals)
    final = json.loads((run / "eval_final.json").read_text())
    assert evals[-1]["metrics"]["pooled/mean_at_k"] == final["pooled"]["mean_at_k"]

    # the best of the evaluations after training steps (ties: the earlier) is kept beside the newest
    trained = {r["steps_done"]: r["metrics"]["pooled/mean_at_k"] for r in evals[1:]}
    best_step = max(trained, key=lambda s: (trained[s], -s))
    best = read_best(run)
    assert best["step"] == best_step and best["value"] == trained[best_step]
    kept = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert kept == sorted({"step_000004", f"step_{best_step:06d}"})
    assert (run / "checkpoints" / best["name"] / "learner" / "model.safetensors").is_file()
    assert evals[-1]["best"]["best_step"] == best_step

    tb = read_scalars(run / "tensorboard")
    assert [s for s, _ in tb["eval/pooled/mean_at_k"]] == [0, 2, 4]
