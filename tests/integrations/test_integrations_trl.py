"""GDRO inside TRL: the framework-neutral curriculum bridge, TRL's sampler contract and the reward
observer here (no TRL needed), and GRPOTrainer end to end in TRL's own virtual environment."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.integrations.curriculum import PromptCurriculum
from gdro_ray.integrations.trl import (
    AsyncGDRORewardObserver,
    GDROPromptSampler,
    GDRORewardObserver,
    add_row_ids,
    check_trl_setup,
    is_async_callable,
    observer_for,
)

ROOT = Path(__file__).resolve().parents[2]
TRL_PYTHON = ROOT / "benchmarks" / ".venv-trl" / "bin" / "python"


def _curriculum(rows=30, B=4, G=3, **kw):
    return PromptCurriculum.create(rows, B, G, overrides=["classifier.k=2"], **kw)


# ---- the bridge ------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["prompt_gdro", "grpo", "both"]))
def test_groups_in_any_order_give_the_same_step(seed, algorithm):
    """However the host framework orders a block's groups (verl rebalances rows), the Adversary
    sees the same step; a group with a wrong row or rollout count is refused and changes nothing."""
    rng = np.random.default_rng(seed)
    a, b = _curriculum(algorithm=algorithm, seed=seed % 7), _curriculum(algorithm=algorithm, seed=seed % 7)
    for _ in range(3):
        sa, sb = a.next_block(), b.next_block()
        assert sa.prompt_ids.tolist() == sb.prompt_ids.tolist()
        groups = [(int(r), rng.integers(0, 2, int(n)).astype(float)) for r, n in zip(sa.prompt_ids, sa.rollouts)]
        before = json.dumps(b.state_dict(), sort_keys=True)
        bad = list(groups)
        i = int(rng.integers(len(bad)))
        if rng.random() < 0.5:
            bad[i] = (bad[i][0], np.append(bad[i][1], 1.0))  # one rollout too many
        else:
            bad[i] = (a.adversary.num_prompts + 5, bad[i][1])  # a row the block does not hold
        assert b.observe_groups(bad) is None and b.refused == 1
        assert json.dumps(b.state_dict() | {"refused": 0}, sort_keys=True) == before
        b.refused = 0
        ra = a.observe_groups(groups)
        rb = b.observe_groups([groups[j] for j in rng.permutation(len(groups))])
        assert ra is not None and rb is not None
        for key in ("bin_weights", "bin_pass_at_k", "bin_rollouts", "reward_mean", "bin_scores"):
            assert ra[key] == rb[key], key


def test_rewards_become_successes_at_the_threshold():
    c = _curriculum(G=2, success_threshold=0.7)
    s = c.next_block()
    rec = c.observe_groups([(int(r), [0.69, 0.71]) for r in s.prompt_ids])
    assert rec["reward_mean"] == 0.5 and rec["useful_rollout_fraction"] == 1.0


def test_a_framework_that_never_reports_fails_loudly():
    c = _curriculum()
    c.next_block()
    c.next_block()  # one ahead: a prefetching dataloader
    with pytest.raises(RuntimeError, match="none of their rewards came back"):
        c.next_block()


def test_state_round_trip_keeps_the_outstanding_blocks():
    c = _curriculum()
    s0 = c.next_block()
    c.observe_groups([(int(r), [1.0, 0.0, 0.0]) for r in s0.prompt_ids])
    s1 = c.next_block()
    state = json.loads(json.dumps(c.state_dict()))
    d = _curriculum()
    d.load_state_dict(state)
    assert [p.prompt_ids.tolist() for p in d.pending] == [s1.prompt_ids.tolist()]
    groups = [(int(r), [0.0, 1.0, 1.0]) for r in s1.prompt_ids]
    assert c.observe_groups(groups)["bin_weights"] == d.observe_groups(groups)["bin_weights"]
    assert c.next_block().prompt_ids.tolist() == d.next_block().prompt_ids.tolist()


# ---- TRL's sampler contract and the reward observer --------------------------------------------
def test_sampler_keeps_trls_repeat_sampler_layout():
    c = _curriculum(rows=30, B=4, G=3)
    s = GDROPromptSampler(c, 30, mini_repeat_count=3, batch_size=4, repeat_count=2)
    it = iter(s)
    block = [next(it) for _ in range(12)]
    assert [next(it) for _ in range(12)] == block  # the block again (num_iterations × steps_per_generation)
    assert block == [r for r in c.pending[0].prompt_ids.tolist() for _ in range(3)]
    assert len(s) == (30 // 4) * 4 * 3 * 2
    with pytest.raises(ValueError, match="blocks of 5 prompts"):
        GDROPromptSampler(c, 30, 3, 5)


def test_observer_returns_rewards_unchanged_and_reports_training_blocks_only():
    c = _curriculum(rows=30, B=4, G=3)
    seen = []

    def correct(prompts, completions, answer, **kw):
        seen.append(kw.get("trainer_state"))
        return [1.0 if comp == ans else 0.0 for comp, ans in zip(completions, answer)]

    obs = GDRORewardObserver(correct, c, num_generations=3)
    assert obs.__name__ == "correct"
    sampler = iter(GDROPromptSampler(c, 30, 3, 4))
    rows = [next(sampler) for _ in range(12)]
    answers = ["x"] * 12
    completions = ["x" if i % 3 == 0 else "y" for i in range(12)]
    # an evaluation pass (rows of no outstanding block) is ignored
    assert obs(prompts=["p"] * 3, completions=["x"] * 3, answer=["x"] * 3, gdro_row=[29, 29, 29]) == [1.0] * 3
    assert c.refused == 1 and not obs.records
    out = obs(prompts=["p"] * 12, completions=completions, answer=answers, gdro_row=rows, trainer_state="S")
    assert out == [1.0 if i % 3 == 0 else 0.0 for i in range(12)] and seen[-1] == "S"
    assert len(obs.records) == 1 and obs.records[0]["reward_mean"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="add_row_ids"):
        obs(prompts=["p"], completions=["x"], answer=["x"])


def test_a_none_reward_is_left_out_not_failed():
    """TRL's None ("not applicable"): the curriculum neither visits a prompt scored None throughout
    nor counts its completions as failures; the trainer still gets the None back."""
    c = _curriculum(rows=30, B=4, G=3, algorithm="grpo")
    obs = GDRORewardObserver(lambda prompts, completions, answer, **kw: [None if a == "skip" else 1.0 for a in answer],
                             c, num_generations=3)
    sampler = iter(GDROPromptSampler(c, 30, 3, 4))
    rows = [next(sampler) for _ in range(12)]
    answers = ["skip"] * 3 + ["x"] * 9  # the first prompt is another task's
    out = obs(prompts=["p"] * 12, completions=["x"] * 12, answer=answers, gdro_row=rows)
    assert out[:3] == [None] * 3
    rec = obs.records[0]
    assert rec["rollouts"] == 12 and rec["rollouts_observed"] == 9 and rec["reward_mean"] == 1.0
    state = c.adversary.classifier.state_dict()
    assert state["visits"][rows[0]] == 0 and state["visits"][rows[3]] == 1


def test_an_async_reward_gets_an_observer_trl_awaits():
    import asyncio

    c = _curriculum(rows=30, B=4, G=3)

    async def correct(prompts, completions, answer, **kw):
        await asyncio.sleep(0)
        return [1.0 if comp == ans else 0.0 for comp, ans in zip(completions, answer)]

    class Judge:  # an object whose __call__ is async: TRL awaits it too
        async def __call__(self, prompts, completions, **kw):
            return [0.5] * len(completions)

    obs = observer_for(correct, c, 3)
    assert isinstance(obs, AsyncGDRORewardObserver) and is_async_callable(obs) and is_async_callable(Judge())
    assert not is_async_callable(observer_for(lambda **kw: [], c, 3))
    sampler = iter(GDROPromptSampler(c, 30, 3, 4))
    rows = [next(sampler) for _ in range(12)]  # one block
    completions = ["x" if i % 3 == 0 else "y" for i in range(12)]
    out = asyncio.run(obs(prompts=["p"] * 12, completions=completions, answer=["x"] * 12, gdro_row=rows))
    assert out == [1.0 if i % 3 == 0 else 0.0 for i in range(12)]
    assert len(obs.records) == 1 and obs.records[0]["reward_mean"] == pytest.approx(1 / 3)


def test_setups_the_curriculum_cannot_drive_are_refused_in_one_line():
    from datasets import Dataset, IterableDataset

    rows = add_row_ids(Dataset.from_dict({"prompt": ["a", "b"], "answer": ["1", "2"]}))
    assert check_trl_setup(len, rows, 0, {}) == [len]
    stream = IterableDataset.from_generator(lambda: iter([{"prompt": "a"}]))
    for funcs, data, kwargs, why in ((None, rows, {}, "environment"), ([len], rows, {"environment_factory": object},
                                                                       "environment"),
                                     ([len], stream, {}, "IterableDataset"), ([len], None, {}, "IterableDataset")):
        with pytest.raises(ValueError, match=why) as e:
            check_trl_setup(funcs, data, 0, kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"^gdro_observe=1: must index a reward function"):
        check_trl_setup([len], rows, 1, {})


# ---- end to end in TRL's environment -----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not TRL_PYTHON.is_file() and not os.environ.get("GDRO_REQUIRE_TRL_VENV"),
                    reason="TRL's venv benchmarks/.venv-trl is absent (build it once: "
                           "`python -c 'import sys; sys.path.insert(0, \"benchmarks\"); "
                           "import vs_trl; vs_trl.ensure_trl_venv()'`, a few minutes)")
# grad_accum 2: each block generated once, trained in two slices; async: the correctness reward is `async def`
@pytest.mark.parametrize("grad_accum, async_reward", [(1, False), (2, False), (1, True)])
def test_grpo_trainer_trains_on_the_curriculums_blocks(tmp_path, grad_accum, async_reward):
    from gdro_ray.data.toy_task import make_train_pool
    from gdro_ray.models import prepare

    model = prepare.model_dir()
    if not prepare.is_prepared(model):  # an untrained model of the same architecture will do
        from gdro_ray.models import tiny

        model = tmp_path / "standin"
        tok = tiny.build_tokenizer()
        tiny.save(tiny.build_model("tiny", seed=0, tokenizer=tok), tok, model)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": e["prompt"], "answer": e["answer"]}) + "\n"
                               for e in make_train_pool(size=40, seed=0)))
    out = tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run([str(TRL_PYTHON), str(ROOT / "tests" / "_trl_gdro_worker.py"), "--model", str(model),
                        "--prompts", str(prompts), "--workdir", str(tmp_path), "--out", str(out), "--steps", "3",
                        "--grad-accum", str(grad_accum), *(["--async-reward"] if async_reward else [])],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["global_step"] == 3 and r["refused"] == 0
    # TRL generated for, and rewarded, exactly the blocks the curriculum handed out, in order
    assert len(r["reward_calls"]) == 3
    for call, block in zip(r["reward_calls"], r["handed"]):
        assert call == [row for row in block for _ in range(4)]
    # each step reached the adversary once; the prefetched next block is the one outstanding
    assert [x["step"] for x in r["records"]] == [0, 1, 2] and r["adversary_step"] == 3
    assert all(x["rollouts"] == 16 and x["prompts"] == 4 for x in r["records"])
    assert r["pending"] == r["handed"][3:]
    # the curriculum's state rides along with TRL's checkpoint-2
    assert r["saved_state"]["adversary"]["step"] == 2
    assert r["logged_reward_names"] == ["correct", "short"]
