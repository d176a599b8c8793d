"""The compact data plane (gdro_ray.transfer.rollout_arrays): samplers' per-prompt arrays, the driver's
reference-only batch, each learner rank fetching only the groups of its own rows, and a two-rank
FSDP2 step on a `LearnerBatch` equal to the same step in one process on the rows' token lists."""
import pickle

import numpy as np
import pytest
import torch.multiprocessing as mp
from safetensors.torch import load as st_load
from test_learner import LR, _assert_state_close, _free_port, _worker, model_dir  # noqa: F401 - fixture

from gdro_ray.algorithms.partition import rank_slice
from gdro_ray.algorithms.schedule import StepSchedule
from gdro_ray.learner.worker import exit_rank_process
from gdro_ray.service.step_batch import assemble_batch
from gdro_ray.transfer.rollout_arrays import (
    groups_of_rows,
    materialise,
    pack_batch,
    pack_group,
    prompt_rollouts,
    rank_rows,
    response_of,
    split_for_ranks,
)

PROMPTS = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [3, 4]]
RESPONSES = [[[10, 11, 12], [13], [14, 15, 16, 17, 18]], [[19, 20], [21, 22, 23]], [[24], [25, 26]],
             [[27, 28, 29], [30]]]


def _logprobs(resp):
    return [[-0.1 * (t % 7) - 4.0 for t in r] for r in resp]


def _slots() -> dict:
    """What the pool hands the driver per slot; the arrays stand where a sampler's ObjectRefs would be."""
    return {i: prompt_rollouts(i, [0.0] * len(resp), p, resp, _logprobs(resp))
            for i, (p, resp) in enumerate(zip(PROMPTS, RESPONSES))}


def _batches(slots, sampler_logprobs):
    """The driver's `LearnerBatch` of the trained `slots`, and the same rows as the worker's
    in-process working batch, with every row's token lists taken from the source lists."""
    ids = np.arange(4, dtype=np.int64)
    sched = StepSchedule(0, ids, np.zeros(4, dtype=np.int64), np.array([len(r) for r in RESPONSES]),
                         np.array([1.0, 2.0, 0.5, 1.0]), np.ones(1))
    adv = [np.linspace(-1.0, 1.0, len(r)) for r in RESPONSES]
    batch = assemble_batch(sched, _slots(), adv, slots, sampler_logprobs)
    rows = list(zip(batch.prompt_index, batch.member))
    lists = {"prompt_token_ids": [PROMPTS[i] for i, _ in rows], "response_token_ids": [RESPONSES[i][j] for i, j in rows],
             "old_logprobs": [_logprobs(RESPONSES[i])[j] for i, j in rows] if sampler_logprobs else None,
             "advantages": list(batch.advantages), "signal_advantages": list(batch.signal_advantages),
             "prompt_index": list(batch.prompt_index)}
    return batch, lists


def test_pack_group_round_trip_and_dtypes():
    g, lps = pack_group(PROMPTS[0], RESPONSES[0], _logprobs(RESPONSES[0]))
    assert g["tokens"].dtype == np.int32 and lps.dtype == np.float32 and g["prompt"].dtype == np.int32
    for j, r in enumerate(RESPONSES[0]):
        ids, lp = response_of(g, j, lps)
        assert ids.tolist() == r and lp.tolist() == pytest.approx(_logprobs(RESPONSES[0])[j], abs=1e-6)
    assert response_of(g, 0)[1] is None  # no log-probs asked for
    empty, _ = pack_group([1], [[], [2]], [[], [-1.0]])
    assert response_of(empty, 0)[0].size == 0 and response_of(empty, 1)[0].tolist() == [2]


@pytest.mark.parametrize("mini_batches", [1, 2, 3])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_rank_rows_cover_every_row_once_and_follow_the_mini_batches(mini_batches, world):
    from gdro_ray.algorithms.partition import mini_batch_partition

    prompt_index = [p for p in range(9) for _ in range(1 + p % 4)]
    rows = [rank_rows(prompt_index, mini_batches, r, world) for r in range(world)]
    assert sorted(sum(rows, [])) == list(range(len(prompt_index)))
    parts = mini_batch_partition(prompt_index, mini_batches)
    for r in range(world):  # the worker's slicing: rank r's contiguous share of each part
        assert rows[r] == [part[i] for part in parts for i in rank_slice(len(part), r, world)]


@pytest.mark.parametrize("sampler_logprobs", [False, True])
def test_compact_batch_materialises_to_the_list_batch_on_own_rows(sampler_logprobs):
    compact, lists = _batches([0, 1, 3], sampler_logprobs)
    assert len(compact.groups) == 3 and len(compact) == 7
    # × weights 1, 2, 1, renormalised over the 7 trained responses (slot 2 is left out): 7 / 9
    assert compact.advantages == pytest.approx([x * 7 / 9 for x in (-1.0, 0.0, 1.0, -2.0, 2.0, -1.0, 1.0)])
    meta, per_rank = split_for_ranks(compact, mini_batches=1, world_size=2)
    assert "groups" not in meta and "logprob_groups" not in meta
    total = sum(sum(a.nbytes for a in g.values()) for g in compact.groups)
    if sampler_logprobs:
        total += sum(lp.nbytes for lp in compact.logprob_groups)
    for rank, refs in enumerate(per_rank):
        own = rank_rows(meta["prompt_index"], 1, rank, 2)
        assert sorted(refs) == groups_of_rows(meta["group"], own)
        assert all((lp is not None) == sampler_logprobs for _, lp in refs.values())  # log-probs only off-policy
        got, nbytes = materialise(meta, refs, own)
        assert 0 < nbytes < total  # this rank fetched only some of the groups
        for i in range(len(meta["prompt_index"])):
            if i in own:
                assert got["response_token_ids"][i].tolist() == lists["response_token_ids"][i]
                assert got["prompt_token_ids"][i].tolist() == lists["prompt_token_ids"][i]
                if sampler_logprobs:
                    assert got["old_logprobs"][i].tolist() == pytest.approx(lists["old_logprobs"][i], abs=1e-6)
            else:  # another rank's row: no tokens here
                assert got["response_token_ids"][i] is None
        assert (got["old_logprobs"] is None) != sampler_logprobs


def _compact_rank_main(rank, port, model_path, out_dir, meta, per_rank, grpo):
    w = _worker(model_path, rank=rank, world=2, port=port, grpo=grpo)
    try:
        stats = w.train_step(meta, per_rank[rank])
        blob = w.state_dict_bytes()
    finally:
        w.shutdown()
    if rank == 0:
        with open(f"{out_dir}/compact.safetensors", "wb") as f:
            f.write(blob)
    with open(f"{out_dir}/rank{rank}.pkl", "wb") as f:
        pickle.dump(stats, f)
    exit_rank_process()


@pytest.mark.slow
@pytest.mark.parametrize("sampler_logprobs", [False, True], ids=["on_policy", "off_policy"])
def test_two_ranks_on_the_compact_batch_match_one_rank_on_the_list_batch(model_dir, tmp_path, sampler_logprobs):  # noqa: F811 - fixture
    grpo = {"mini_batches": 2}  # on-policy: the behaviour pass over the second mini-batch runs per rank
    compact, lists = _batches([0, 1, 2, 3], sampler_logprobs)
    meta, per_rank = split_for_ranks(compact, grpo["mini_batches"], 2)
    mp.spawn(_compact_rank_main, args=(_free_port(), model_dir, str(tmp_path), meta, per_rank, grpo),
             nprocs=2, join=True)
    stats = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in (0, 1)]
    total = sum(sum(a.nbytes for a in g.values()) for g in compact.groups)
    total += sum(lp.nbytes for lp in compact.logprob_groups) if sampler_logprobs else 0
    assert all(0 < s.fetched_bytes < total for s in stats)
    w = _worker(model_dir, micro_batch=64, grpo=grpo)
    try:
        single = w.train_step(lists)
        single_sd = st_load(w.state_dict_bytes())
    finally:
        w.shutdown()
    assert single.optimizer_steps == stats[0].optimizer_steps == 2
    for key in ("loss", "kl", "entropy", "clip_frac", "ratio_max", "ratio_min"):
        assert getattr(stats[0], key) == pytest.approx(getattr(single, key), rel=1e-4, abs=1e-6), key
    # same tolerance and reason as test_learner.test_two_ranks_match_one_rank
    _assert_state_close(st_load((tmp_path / "compact.safetensors").read_bytes()), single_sd, atol=LR / 100)


@pytest.mark.parametrize("sampler_logprobs", [False, True])
def test_pack_batch_gives_the_batch_the_driver_would_build(sampler_logprobs):
    """A batch made up row by row (tests, benchmarks) becomes the same `LearnerBatch` the driver
    assembles from the samplers' rollouts, and materialises to its rows."""
    driver, lists = _batches([0, 1, 2, 3], sampler_logprobs)
    packed = pack_batch(lists)
    for key in ("group", "member", "prompt_lengths", "response_lengths", "advantages", "signal_advantages",
                "prompt_index", "group_nbytes", "sampler_logprobs"):
        assert getattr(packed, key) == pytest.approx(getattr(driver, key)), key
    meta, per_rank = split_for_ranks(packed, 1, 1)
    got, _ = materialise(meta, per_rank[0], range(len(packed)))
    assert [r.tolist() for r in got["response_token_ids"]] == lists["response_token_ids"]
