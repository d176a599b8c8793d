"""The compact data plane (gdro_ray.transfer.rollout_arrays): samplers' per-prompt arrays, the driver's
reference-only batch, each learner rank fetching only the groups of its own rows, and a two-rank
FSDP2 step on a compact batch equal to the same step on today's list batch."""
import json

import numpy as np
import pytest
import torch.multiprocessing as mp
from safetensors.torch import load as st_load
from test_learner import LR, _assert_state_close, _free_port, _worker, model_dir  # noqa: F401 - fixture

from gdro_ray.algorithms.partition import rank_slice
from gdro_ray.learner.worker import exit_rank_process
from gdro_ray.service.step_batch import assemble_batch
from gdro_ray.transfer.rollout_arrays import (
    groups_of_rows,
    materialise,
    pack_group,
    rank_rows,
    response_of,
    split_for_ranks,
)

PROMPTS = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [3, 4]]
RESPONSES = [[[10, 11, 12], [13], [14, 15, 16, 17, 18]], [[19, 20], [21, 22, 23]], [[24], [25, 26]],
             [[27, 28, 29], [30]]]


def _logprobs(resp):
    return [[-0.1 * (t % 7) - 4.0 for t in r] for r in resp]


def _slots(compact: bool) -> dict:
    """What the pool hands the driver per slot: compact (lengths + the group) or lists."""
    out = {}
    for i, (p, resp) in enumerate(zip(PROMPTS, RESPONSES)):
        if compact:  # the arrays stand where a sampler's ObjectRefs would be
            ids, lps = pack_group(p, resp, _logprobs(resp))
            out[i] = {"rollouts": ids, "logprobs_ref": lps, "prompt_len": len(p),
                      "response_lens": [len(r) for r in resp], "nbytes": ids["tokens"].nbytes}
        else:
            out[i] = {"prompt_token_ids": p, "response_token_ids": resp, "logprobs": _logprobs(resp)}
    return out


def _batches(slots, sampler_logprobs):
    sched = {"adv_weights": [1.0, 2.0, 0.5, 1.0], "rollouts": [len(r) for r in RESPONSES], "prompt_ids": [0, 1, 2, 3]}
    adv = [np.linspace(-1.0, 1.0, len(r)) for r in RESPONSES]
    return (assemble_batch(sched, _slots(True), adv, slots, sampler_logprobs),
            assemble_batch(sched, _slots(False), adv, slots, sampler_logprobs))


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
    assert "response_token_ids" not in compact and len(compact["groups"]) == 3
    for key in ("advantages", "signal_advantages", "prompt_index"):
        assert compact[key] == pytest.approx(lists[key])
    meta, per_rank = split_for_ranks(compact, mini_batches=1, world_size=2)
    assert "groups" not in meta and "logprob_groups" not in meta
    total = sum(sum(a.nbytes for a in g.values()) for g in compact["groups"])
    if sampler_logprobs:
        total += sum(lp.nbytes for lp in compact["logprob_groups"])
    for rank, refs in enumerate(per_rank):
        own = rank_rows(meta["prompt_index"], 1, rank, 2)
        assert sorted(refs) == groups_of_rows(meta, own)
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
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        f.write(json.dumps(stats))
    exit_rank_process()


@pytest.mark.slow
@pytest.mark.parametrize("sampler_logprobs", [False, True], ids=["on_policy", "off_policy"])
def test_two_ranks_on_the_compact_batch_match_one_rank_on_the_list_batch(model_dir, tmp_path, sampler_logprobs):  # noqa: F811 - fixture
    grpo = {"mini_batches": 2}  # on-policy: the behaviour pass over the second mini-batch runs per rank
    compact, lists = _batches([0, 1, 2, 3], sampler_logprobs)
    meta, per_rank = split_for_ranks(compact, grpo["mini_batches"], 2)
    mp.spawn(_compact_rank_main, args=(_free_port(), model_dir, str(tmp_path), meta, per_rank, grpo),
             nprocs=2, join=True)
    stats = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    total = sum(sum(a.nbytes for a in g.values()) for g in compact["groups"])
    total += sum(lp.nbytes for lp in compact["logprob_groups"]) if sampler_logprobs else 0
    assert all(0 < s["fetched_bytes"] < total for s in stats)
    w = _worker(model_dir, micro_batch=64, grpo=grpo)
    try:
        single = w.train_step(lists)
        single_sd = st_load(w.state_dict_bytes())
    finally:
        w.shutdown()
    assert single["optimizer_steps"] == stats[0]["optimizer_steps"] == 2
    for key in ("loss", "kl", "clip_frac", "ratio_max", "ratio_min"):
        assert stats[0][key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), key
    # same tolerance and reason as test_learner.test_two_ranks_match_one_rank
    _assert_state_close(st_load((tmp_path / "compact.safetensors").read_bytes()), single_sd, atol=LR / 100)
