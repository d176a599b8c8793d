"""Custom reward, a dataset with its own column names, and the loggers through one real run:
the toy model on vLLM samplers and an FSDP2 learner, 2 steps, a periodic evaluation."""
from __future__ import annotations

import importlib.util
import json

import pytest
from _service import read_records
from _tensorboard import read_scalars

pytestmark = pytest.mark.slow

REWARD_FILE = '''
from gdro_ray.rewards.examples.format_and_correct import format_and_correct_reward
LOG = LOG_PATH

def reward(prompts, responses, answers, metadata):
    # the row's other columns arrive per response; losing them is a bug worth stopping for
    if any(m.get("topic") != "toy" or "question" in m for m in metadata):
        raise ValueError(f"metadata not as written: {metadata[0]}")
    scores = format_and_correct_reward(prompts, responses, answers, metadata)
    with open(LOG, "a") as f:  # one line per call: the test counts the rollouts scored here
        f.write(" ".join(map(str, scores)) + "\\n")
    return scores
'''


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rows(examples):
    return [{"question": e["prompt"], "gold": {"value": e["answer"]}, "level_name": f"L{e['tier']}",
             "uid": f"q{e['id']}", "topic": "toy"} for e in examples]


def test_custom_reward_own_columns_and_loggers_live(tmp_path, monkeypatch):
    import ray
    from _wandb import isolate

    isolate(monkeypatch, tmp_path)

    from gdro_ray.config import load_config
    from gdro_ray.data.eval_sets import spread_subset
    from gdro_ray.data.toy_task import make_eval_split, make_train_pool
    from gdro_ray.service.build import build_trainer

    data = tmp_path / "mydata"
    _write(data / "train.jsonl", _rows(make_train_pool()[:64]))
    _write(data / "test.jsonl", _rows(spread_subset(make_eval_split(), 12)))
    (tmp_path / "my_reward.py").write_text(REWARD_FILE.replace("LOG_PATH", repr(str(tmp_path / "scored.txt"))))
    loggers = ["tensorboard"] + [m for m in ("wandb", "mlflow") if importlib.util.find_spec(m) is not None]
    run = tmp_path / "run"
    cfg = load_config(overrides=[
        "model.path=toy", "algorithm=both", "steps=2", "batch_size=8", "sampler.num_samplers=1",
        "learner.world_size=1", f"data.train={data}", "data.prompt_key=question", "data.answer_key=gold.value",
        "data.tier_key=level_name", "data.id_key=uid", f"data.eval={data}", "data.eval_split=test",
        "data.eval_prompt_key=question", "data.eval_answer_key=gold.value", "data.eval_tier_key=level_name",
        "eval.k=2", "eval.every=1", f"reward.function={tmp_path / 'my_reward.py'}:reward", "reward.on_error=stop",
        f"metrics.loggers=[{','.join(loggers)}]", "metrics.samples_every=1", "checkpoint.every=0", f"out={run}"])
    try:
        result = build_trainer(cfg, run).run()
    finally:
        ray.shutdown()
    steps = read_records(run)
    assert [r["step"] for r in steps] == [0, 1]
    assert all(r["reward_errors"] == 0 and 0.0 <= r["reward_mean"] <= 1.0 for r in steps)
    scored = [[float(v) for v in line.split()] for line in (tmp_path / "scored.txt").read_text().splitlines()]
    # every training rollout, in one call per prompt slot
    assert len(scored) == 2 * 8 and sum(map(len, scored)) == 2 * 8 * cfg.budget_mean
    flat = [v for call in scored for v in call]
    assert set(flat) <= {0.0, 0.1, 0.9, 1.0}
    assert sum(flat) / len(flat) == pytest.approx(sum(r["reward_mean"] for r in steps) / 2)
    # the sample completions of every step, from the driver through samples.jsonl and TensorBoard
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert {r["step"] for r in samples} == {0, 1} and all(r["responses"] for r in samples)
    assert all(set(r) >= {"step", "bin", "prompt_id", "prompt", "answer", "responses"} for r in samples)
    final = result["final"]
    assert set(final["per_tier"]) <= {f"L{t}" for t in range(10)} and len(final["per_tier"]) >= 2
    assert final["pooled"]["n_prompts"] == 12
    tb = read_scalars(run / "tensorboard")
    assert [s for s, _ in tb["reward_errors"]] == [1, 2] and "bins/bin_weights/unseen" in tb
    assert any(tag.startswith("eval/tierL") for tag in tb)  # string tiers as eval/tier<t>/…
    if "wandb" in loggers:
        from _wandb import read_offline_run

        config, history = read_offline_run(run / "wandb")
        assert config["reward"]["function"].endswith("my_reward.py:reward")
        assert {row.get("_step") for row in history if "reward_mean" in row} == {1, 2}
    if "mlflow" in loggers:
        from gdro_ray.metrics.loggers import MlflowLogger

        lg = MlflowLogger(run, "", "gdro-ray")  # finds the run of this folder
        assert [m.step for m in lg.client.get_metric_history(lg.run_id, "reward_mean")] == [1, 2]
        assert lg.client.get_run(lg.run_id).data.params["data.prompt_key"] == "question"


def test_reward_on_error_stop_ends_the_run_with_one_line(tmp_path):
    import ray

    from gdro_ray.config import load_config
    from gdro_ray.errors import UserError
    from gdro_ray.service.build import build_trainer

    (tmp_path / "bad_reward.py").write_text(
        "def reward(prompts, responses, answers, metadata):\n    return [1.0] * (len(responses) + 1)\n")
    run = tmp_path / "run"
    cfg = load_config(overrides=[
        "model.path=toy", "steps=2", "batch_size=4", "sampler.num_samplers=1", "learner.world_size=1",
        "data.eval=dapo-fixture", "data.max_eval_prompts=2", "eval.k=1", "sampler.shard_size=4",
        f"reward.function={tmp_path / 'bad_reward.py'}:reward", "reward.on_error=stop", f"out={run}"])
    try:
        with pytest.raises(UserError) as err:
            build_trainer(cfg, run).run()
    finally:
        ray.shutdown()
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"the job stopped at step 1: reward.function {tmp_path / 'bad_reward.py'}:reward: row ")
    assert "scores for" in msg and msg.endswith("(reward.on_error=stop)")
    assert not read_records(run)  # no step was recorded
