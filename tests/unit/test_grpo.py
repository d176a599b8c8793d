"""GRPO math with variable group sizes (gdro_ray.algorithms.grpo)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.algorithms.grpo import (
    group_advantages,
    grpo_loss,
    k3_kl,
    sequence_loss_weights,
    token_logprobs,
    token_logprobs_and_entropy,
)
from gdro_ray.algorithms.partition import mini_batch_partition

reward_groups = st.lists(
    st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=2, max_size=12), min_size=1, max_size=6
)


@settings(max_examples=200, deadline=None)
@given(reward_groups)
def test_advantages_are_zero_mean_unit_std_per_group(groups):
    advs = group_advantages([np.array(g) for g in groups])
    assert [len(a) for a in advs] == [len(g) for g in groups]
    for g, a in zip(groups, advs):
        r = np.asarray(g, dtype=np.float64)
        if np.all(r == r[0]):
            assert torch.all(a == 0)
            continue
        assert abs(float(a.double().mean())) < 1e-5
        std = r.std()
        # std/(std+eps) is 1 up to eps; a group of n has |A| ≤ √(n−1) < 5, so no clipping here.
        assert float(a.double().std(unbiased=False)) == pytest.approx(std / (std + 1e-6), abs=1e-4)
        # Order is kept: higher reward, higher advantage.
        assert np.all(np.diff(a.numpy()[np.argsort(r, kind="stable")]) >= -1e-6)


@settings(max_examples=100, deadline=None)
@given(reward_groups, st.floats(0.1, 2.0))
def test_advantages_respect_the_clip(groups, clip):
    for a in group_advantages(groups, adv_clip=clip):
        assert float(a.abs().max()) <= clip + 1e-6


def test_advantage_hand_values_and_degenerate_groups():
    a, b, c, d = group_advantages([[1.0, 0.0], [1, 1, 1], [0.5], torch.tensor([1.0, 0.0, 0.0, 0.0])])
    assert torch.allclose(a, torch.tensor([1.0, -1.0]), atol=1e-5)  # mean 0.5, std 0.5
    assert torch.all(b == 0) and torch.all(c == 0)
    # mean 0.25, population std √(3)/4: (1 − 0.25)/0.433 = √3, (0 − 0.25)/0.433 = −1/√3
    assert torch.allclose(d, torch.tensor([3**0.5, -(3**-0.5), -(3**-0.5), -(3**-0.5)]), atol=1e-4)
    big = group_advantages([[1.0] + [0.0] * 40], adv_clip=5.0)[0]  # √40 ≈ 6.3 gets clipped
    assert float(big[0]) == pytest.approx(5.0)


@pytest.mark.parametrize("block_elems", [1 << 24, 40, 5])  # whole, row blocks, token blocks
def test_token_logprobs_value_and_gradient_match_log_softmax(block_elems):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 7, 11, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, 11, (5, 7), generator=g)
    weights = torch.randn(5, 7, generator=g, dtype=torch.float64)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        x1 = base.to(dtype).requires_grad_(True)
        x2 = base.to(dtype).requires_grad_(True)
        ref = torch.log_softmax(x1.float(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        got = token_logprobs(x2[:, :, :], tokens, block_elems=block_elems)
        assert got.dtype == torch.float32 and got.shape == (5, 7)
        assert torch.allclose(got, ref, atol=1e-5)
        (ref * weights.float()).sum().backward()
        (got * weights.float()).sum().backward()
        assert x2.grad.dtype == dtype
        assert torch.allclose(x2.grad.float(), x1.grad.float(), atol=tol)
    sliced = base.float()[:, :-1]  # non-contiguous input, as the learner passes it
    assert torch.allclose(token_logprobs(sliced, tokens[:, :-1], block_elems=block_elems),
                          torch.log_softmax(sliced, -1).gather(-1, tokens[:, :-1, None]).squeeze(-1), atol=1e-5)
    with pytest.raises(ValueError):
        token_logprobs(base, tokens[:, :3])


@pytest.mark.parametrize("block_elems", [1 << 24, 40, 5])
def test_entropy_from_the_same_blocks_matches_the_softmax_and_leaves_the_gradient_alone(block_elems):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(3, 6, 13, generator=g, dtype=torch.float64) * 3
    tokens = torch.randint(0, 13, (3, 6), generator=g)
    x1 = base.float().requires_grad_(True)
    x2 = base.float().requires_grad_(True)
    logp, entropy = token_logprobs_and_entropy(x2, tokens, block_elems=block_elems)
    want = -(torch.softmax(base, -1) * torch.log_softmax(base, -1)).sum(-1)
    assert entropy.shape == (3, 6) and not entropy.requires_grad
    assert torch.allclose(entropy.double(), want, atol=1e-5)
    assert bool(((entropy >= -1e-6) & (entropy <= math.log(13) + 1e-5)).all())
    token_logprobs(x1, tokens, block_elems=block_elems).sum().backward()
    logp.sum().backward()
    assert torch.equal(x1.grad, x2.grad)
    peaked = torch.full((1, 2, 13), -1e4).index_fill_(-1, torch.tensor([4]), 0.0)  # one certain token
    assert float(token_logprobs_and_entropy(peaked, torch.full((1, 2), 4))[1].abs().max()) < 1e-4
    assert token_logprobs_and_entropy(x2, tokens, with_entropy=False)[1] is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-8, 0), st.floats(-8, 0)), min_size=1, max_size=20))
def test_k3_kl_is_nonnegative_and_zero_when_equal(pairs):
    logp = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
    ref = torch.tensor([r for _, r in pairs], dtype=torch.float64)
    assert torch.all(k3_kl(logp, ref) >= -1e-12)
    assert torch.all(k3_kl(logp, logp) == 0)


def test_clipped_surrogate_equals_hand_computation():
    # Two responses: lengths 3 and 1 (padding masked out).
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.4, 0.9], [0.3, 0.1, 0.1, 0.1]]))
    old = torch.log(torch.tensor([[0.25, 0.2, 0.5, 0.1], [0.5, 0.1, 0.1, 0.1]]))
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 0, 0, 0]])
    adv = torch.tensor([2.0, -1.0])
    loss, stats, per_seq = grpo_loss(logp, old, None, adv, mask, clip_low=0.2, clip_high=0.28, kl_coef=0.0)
    # ratios: seq0 = 2.0, 1.0, 0.8 (A>0: 2.0 clipped to 1.28); seq1 = 0.6 (A<0: clipped to 0.8)
    tok0 = [-2 * 1.28, -2 * 1.0, -2 * 0.8]
    tok1 = [max(1 * 0.6, 1 * 0.8)]
    assert float(loss) == pytest.approx(sum(tok0 + tok1) / 4, abs=1e-6)
    assert stats["clip_frac"] == pytest.approx(2 / 4)
    assert per_seq.tolist() == pytest.approx([sum(tok0) / 3, tok1[0]], abs=1e-6)
    # The surrogate signal uses the unweighted advantages when given (here: half of them).
    _, _, sig = grpo_loss(logp, old, None, adv, mask, kl_coef=0.0, signal_advantages=adv / 2)
    assert sig.tolist() == pytest.approx([sum(tok0) / 6, tok1[0] / 2], abs=1e-6)


def test_kl_term_is_added_with_its_coefficient():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    mask = torch.ones(1, 2)
    base, _, _ = grpo_loss(logp, logp, None, torch.tensor([1.0]), mask, kl_coef=0.1)
    with_kl, stats, _ = grpo_loss(logp, logp, ref, torch.tensor([1.0]), mask, kl_coef=0.1)
    k3 = 0.5 - np.log(0.5) - 1  # d = log(0.25/0.5)
    assert stats["kl"] == pytest.approx(k3 / 2, abs=1e-6)
    assert float(with_kl - base) == pytest.approx(0.1 * k3 / 2, abs=1e-6)


@pytest.mark.parametrize("adv,ratio,grad_zero", [
    (1.0, 1.5, True),    # A>0 above 1+ε_high: clipped, no push further up
    (1.0, 0.5, False),   # A>0 below 1−ε_low: unclipped side, still pushes up
    (-1.0, 0.5, True),   # A<0 below 1−ε_low: clipped
    (-1.0, 1.5, False),  # A<0 above: unclipped side
    (1.0, 1.1, False),   # inside the region
])
def test_gradient_vanishes_only_on_the_clipped_side(adv, ratio, grad_zero):
    old = torch.log(torch.tensor([[0.4]]))
    logp = (old + np.log(ratio)).clone().requires_grad_(True)
    loss, _, _ = grpo_loss(logp, old, None, torch.tensor([adv]), torch.ones(1, 1), kl_coef=0.0)
    loss.backward()
    assert (float(logp.grad.abs()) == 0.0) == grad_zero


def test_token_mean_weights_tokens_not_sequences():
    # A long response (3 tokens, A=+1) and a short one (1 token, A=−1), on-policy (ρ = 1).
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0]])
    loss, stats, _ = grpo_loss(logp, logp.detach(), None, torch.tensor([1.0, -1.0]), mask, kl_coef=0.0)
    assert float(loss.detach()) == pytest.approx((-3 + 1) / 4)  # a sequence mean would give 0
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, -0.25, -0.25], [0.25, 0, 0]]))
    assert stats["tokens"] == 4
    # An explicit global denominator (micro-batching) rescales the same sum.
    loss2, _, _ = grpo_loss(logp, logp.detach(), None, torch.tensor([1.0, -1.0]), mask, kl_coef=0.0, num_tokens=8)
    assert float(loss2.detach()) == pytest.approx(float(loss.detach()) / 2)


# Two prompts: prompt 0 has responses of 3 and 1 tokens, prompt 1 has 2, 2 and 4 tokens.
_LENGTHS, _PROMPTS = [3, 1, 2, 2, 4], [0, 0, 1, 1, 1]
_PER_TOKEN = [[1.0, 2.0, 3.0, 0.0], [4.0, 0, 0, 0], [5.0, 6.0, 0, 0], [7.0, 8.0, 0, 0], [1.0, 1.0, 1.0, 1.0]]


def _hand_loss(loss_agg):
    seq_sum = [sum(row[:n]) for row, n in zip(_PER_TOKEN, _LENGTHS)]  # 6, 4, 11, 15, 4
    if loss_agg == "token_mean":
        return sum(seq_sum) / 12
    seq_mean = [s / n for s, n in zip(seq_sum, _LENGTHS)]  # 2, 4, 5.5, 7.5, 1
    if loss_agg == "seq_mean_token_mean":
        return sum(seq_mean) / 5
    return ((2 + 4) / 2 + (5.5 + 7.5 + 1) / 3) / 2  # the paper's Eq. 17: prompts weigh equally


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "prompt_mean"])
def test_loss_aggregation_matches_hand_computation_in_any_micro_batch_split(loss_agg):
    """ρ = 1 and A = −1 make the per-token loss the number itself; the weights are computed once
    over the whole (mini-)batch, and any split into micro-batches sums to the same loss."""
    w = torch.tensor(sequence_loss_weights(_LENGTHS, _PROMPTS, loss_agg))
    table = torch.tensor(_PER_TOKEN)
    mask = (torch.arange(4)[None, :] < torch.tensor(_LENGTHS)[:, None]).float()
    logp = torch.log(table.clamp_min(1e-3))  # any values: the ratio is 1 on-policy
    adv = torch.full((5,), -1.0)

    def loss_of(rows):
        # with A = −1 and ρ = 1, max(−A·ρ, −A·clip ρ) = 1 per token: scale the weights instead
        r = list(rows)
        per_tok_w = w[r][:, None] * table[r]
        loss, _, _ = grpo_loss(logp[r], logp[r].detach(), None, adv[r], mask[r], kl_coef=0.0,
                               seq_weights=(per_tok_w * mask[r]).sum(-1) / mask[r].sum(-1))
        return float(loss)

    assert loss_of(range(5)) == pytest.approx(_hand_loss(loss_agg))
    assert loss_of([0, 1]) + loss_of([2]) + loss_of([3, 4]) == pytest.approx(_hand_loss(loss_agg))


def test_prompt_mean_does_not_weigh_a_prompt_by_its_rollouts():
    # Prompt 0 with 2 responses, prompt 1 with 6, all 5 tokens long: token_mean gives prompt 1
    # three times prompt 0's total weight, prompt_mean the same weight.
    lengths, prompts = [5] * 8, [0] * 2 + [1] * 6
    for agg, ratio in (("token_mean", 3.0), ("seq_mean_token_mean", 3.0), ("prompt_mean", 1.0)):
        w = sequence_loss_weights(lengths, prompts, agg)
        total = [sum(w[i] * lengths[i] for i in range(8) if prompts[i] == p) for p in (0, 1)]
        assert total[1] / total[0] == pytest.approx(ratio), agg
        assert sum(total) == pytest.approx(1.0), agg


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 9)), min_size=1, max_size=30),
       st.sampled_from(["token_mean", "seq_mean_token_mean", "prompt_mean"]))
def test_loss_weights_sum_to_one_per_token(rows, loss_agg):
    prompts, lengths = [p for p, _ in rows], [n for _, n in rows]
    w = sequence_loss_weights(lengths, prompts, loss_agg)
    assert np.all(w >= 0) and np.all(w[np.asarray(lengths) == 0] == 0)
    if sum(lengths):
        assert float(np.dot(w, lengths)) == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.integers(1, 5))
def test_mini_batch_partition_keeps_groups_whole_and_covers_every_row(prompt_index, parts):
    out = mini_batch_partition(prompt_index, parts)
    assert sorted(r for part in out for r in part) == list(range(len(prompt_index)))
    assert len(out) == min(parts, len(set(prompt_index))) and all(out)
    owner = {}
    for m, part in enumerate(out):
        for r in part:
            assert owner.setdefault(prompt_index[r], m) == m  # a prompt's group is never split
    sizes = [len({prompt_index[r] for r in part}) for part in out]
    assert max(sizes) - min(sizes) <= 1
