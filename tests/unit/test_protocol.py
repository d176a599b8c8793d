"""The step's messages (gdro_ray.protocol): what the driver writes to metrics.jsonl from a
`StepRecord`, what the learner group's `LearnStats` hands the adversary, and a `Shard` bound to
a weights version without changing the shard it came from."""
import json

import pytest

from gdro_ray.protocol import LearnStats, RankStats, Shard, StepRecord


def _record(**kw) -> StepRecord:
    base = dict(adversary={"step": 4, "reward_mean": 0.25, "rollouts": 16}, schedule_digest="ab", weights_version=5,
                samplers=2, tokens=300, staleness=0, pass_rate=0.25, rollouts_sampled=16, rollouts_trained=8,
                prompts_trained=2, response_len_mean=18.75, response_len_max=32, truncation_rate=0.125,
                learn={"loss": 0.5, "kl": None}, stage_time_s={"schedule": 0.00012345, "learn": 1.0},
                step_time_s=2.0)
    return StepRecord(**{**base, **kw})


def test_the_step_record_is_one_flat_json_line_with_the_adversary_fields_first():
    line = _record().to_json()
    assert list(line)[:3] == ["step", "reward_mean", "rollouts"]
    assert line["step"] == 4 and line["loss"] == 0.5 and line["kl"] is None
    assert (line["response_len_mean"], line["response_len_max"], line["truncation_rate"]) == (18.75, 32, 0.125)
    assert line["stage_time_s"] == {"schedule": 0.0001, "learn": 1.0} and line["tokens_per_s"] == 150.0
    assert "refill_rounds" not in line  # dynamic sampling's fields only when it ran
    json.dumps(line)  # every value serialises


def test_a_custom_reward_mean_replaces_the_adversarys_success_rate():
    assert _record().to_json()["reward_mean"] == 0.25
    assert _record(custom_reward_mean=3.5).to_json()["reward_mean"] == 3.5
    line = _record(refill={"refill_rounds": 2, "refill_short": False, "refill_pool_spent": False}).to_json()
    assert line["refill_rounds"] == 2


def test_learn_stats_take_rank_zero_statistics_and_every_ranks_timing():
    ranks = [RankStats(loss=1.0, per_prompt_surrogate={"1": 0.5}, time_s=2.0, phase_s={"forward": 1.0}),
             RankStats(loss=9.0, time_s=3.0, fetched_bytes=7)]
    stats = LearnStats.from_ranks(ranks, rollout_bytes=10)
    assert stats.loss == 1.0 and stats.rank_time_s == [2.0, 3.0] and stats.fetched_bytes_per_rank == [None, 7]
    assert stats.surrogate(3) == [0.0, 0.5, 0.0]  # keyed by slot, whatever the key's type on the wire


def test_a_shard_bound_to_a_version_is_a_new_shard():
    shard = Shard(shard_id=1, slots=[0], prompts=["p"], answers=["1"], n=[2], max_new_tokens=4, temperature=1.0,
                  top_p=1.0)
    bound = shard.for_version(3)
    assert bound.weights_version == 3 and shard.weights_version is None
    with pytest.raises(AttributeError):
        shard.seed = 5  # frozen: a shard in a queue cannot change under the pool
