"""FSDP2 learner worker (gdro_ray.learner) on CPU/gloo with a tiny random untied Qwen3."""
import json
import math
import pickle
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load as st_load

from gdro_ray.algorithms.grpo import grpo_loss
from gdro_ray.algorithms.partition import rank_slice
from gdro_ray.errors import CheckpointError
from gdro_ray.learner import LearnerWorker
from gdro_ray.learner.batch import build_micro_batch, plan_micro_batches, validate_batch
from gdro_ray.learner.checkpoint import publishable
from gdro_ray.learner.worker import exit_rank_process

LR = 1e-2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_model(path, tie=False):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=tie)
    model = Qwen3ForCausalLM(cfg)
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_qwen3")
    _make_model(path)
    return str(path)


def _batch(old_logprobs=None):
    """7 responses of 3 prompts with different prompt and response lengths."""
    prompts = [[1, 2, 3]] * 3 + [[4, 5]] * 2 + [[6, 7, 8, 9]] * 2
    responses = [[10, 11, 12], [13], [14, 15, 16, 17, 18], [19, 20], [21, 22, 23], [24], [25, 26]]
    adv = [1.0, -1.0, 0.5, 1.0, -1.0, 2.0, -2.0]
    return {
        "prompt_token_ids": prompts,
        "response_token_ids": responses,
        "advantages": [1.5 * a for a in adv],  # as if multiplied by an adversary weight
        "signal_advantages": adv,
        "old_logprobs": old_logprobs,
        "prompt_index": [0, 0, 0, 1, 1, 2, 2],
    }


def _off_policy_logprobs(batch):
    """Fixed sampler log-probs near the random model's (≈ −log 128) so some ratios clip."""
    g = torch.Generator().manual_seed(1)
    return [(-math.log(128) + 0.8 * (torch.rand(len(r), generator=g) - 0.5)).tolist()
            for r in batch["response_token_ids"]]


def _worker(model_dir, rank=0, world=1, port=None, temperature=1.0, grpo=None, **kw):
    kw.setdefault("micro_batch", 3)
    return LearnerWorker(rank, world, "127.0.0.1", port or _free_port(), model_dir, lr=LR,
                         grpo={"clip_low": 0.2, "clip_high": 0.28, "kl_coef": 0.001, "temperature": temperature,
                               **(grpo or {})},
                         **kw)


def test_log_probs_are_of_the_tempered_sampling_policy(model_dir):
    """Samples come from softmax(logits / T): the learner's log-probs must be of that policy."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    batch = _batch()
    for temperature in (1.0, 2.0):
        w = _worker(model_dir, temperature=temperature)
        try:
            got = w.response_logprobs(batch)
        finally:
            w.shutdown()
        for i, (p, r) in enumerate(zip(batch["prompt_token_ids"], batch["response_token_ids"])):
            with torch.no_grad():
                logits = hf(input_ids=torch.tensor([p + r])).logits[0, len(p) - 1 : -1] / temperature
            want = torch.log_softmax(logits, -1).gather(1, torch.tensor(r)[:, None])[:, 0]
            assert got[i] == pytest.approx(want.tolist(), abs=1e-4), (temperature, i)


def _seq_surrogate(new_lp, old_lp, adv):
    _, _, per_seq = grpo_loss(torch.tensor([new_lp]), torch.tensor([old_lp]), None, torch.tensor([adv]),
                              torch.ones(1, len(new_lp)), kl_coef=0.0)
    return float(per_seq[0])


def test_batch_validation_and_rank_slices():
    assert validate_batch(_batch()) == 7
    bad = _batch()
    bad["advantages"] = bad["advantages"][:-1]
    with pytest.raises(ValueError, match="advantages"):
        validate_batch(bad)
    with pytest.raises(ValueError, match="old log-probs"):
        validate_batch(_batch(old_logprobs=[[0.0]] * 7))
    for n in range(0, 12):
        for w in (1, 2, 3):
            parts = [list(rank_slice(n, r, w)) for r in range(w)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_micro_batch_plan_and_layout():
    batch = _batch()  # sequence lengths 6, 4, 8, 4, 5, 5, 6
    assert plan_micro_batches(batch, list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    # ≤ 12 padded tokens: [6, 4] → 2×6; adding 8 would give 3×8; a lone 8 fits alone, ...
    assert plan_micro_batches(batch, list(range(7)), 64, max_tokens=12) == [[0, 1], [2], [3, 4], [5, 6]]
    mb = build_micro_batch(batch | {"old_logprobs": [[float(t) for t in r] for r in batch["response_token_ids"]]},
                           [3, 5], pad_id=0, device=torch.device("cpu"))
    # prompts of length 2 and 4: kept logits start at position 1, the sequences have length 5 and 5
    assert mb.start == 1 and mb.keep == 4 and mb.input_ids.shape == (2, 5)
    assert mb.targets.tolist() == [[19, 20, 0], [8, 9, 24]]
    assert mb.mask.tolist() == [[1, 1, 0], [0, 0, 1]]
    assert mb.old_logp.tolist() == [[19, 20, 0], [0, 0, 24]]  # old log-probs sit on their tokens
    assert mb.advantages.tolist() == [1.5, 3.0] and mb.signal_advantages.tolist() == [1.0, 2.0]


def test_tied_config_still_publishes_lm_head(tmp_path):
    model = _make_model(tmp_path, tie=True)
    out = publishable(model.state_dict(), model.config, torch.float32)
    assert torch.equal(out["lm_head.weight"], out["model.embed_tokens.weight"])
    assert out["lm_head.weight"].data_ptr() != out["model.embed_tokens.weight"].data_ptr()


def test_single_rank_step_raises_positive_advantage_logprobs(model_dir):
    w = _worker(model_dir)
    try:
        base = _batch()
        lp0 = w.response_logprobs(base)
        batch = _batch(old_logprobs=lp0)
        first = w.train_step(batch)
        assert first.ratio_mean == pytest.approx(1.0, abs=1e-5)  # old log-probs are the policy's
        assert first.version == 1 and w.version() == 1 and first.tokens == 17
        assert set(first.per_prompt_surrogate) == {0, 1, 2}
        # the policy's entropy per response token: positive, at most log(vocab)
        assert 0 < first.entropy <= math.log(w.config.vocab_size)
        assert [u.entropy for u in first.updates] == [pytest.approx(first.entropy)]  # one update here
        lp1 = w.response_logprobs(batch)
        second = w.train_step(batch)
        assert second.loss < first.loss
        lp2 = w.response_logprobs(batch)
        for i, a in enumerate(batch["advantages"]):
            gain = sum(lp2[i]) - sum(lp0[i])
            assert gain > 0 if a > 0 else gain < 0
        # The per-prompt surrogate is the mean of the per-sequence clipped surrogate with the
        # UNWEIGHTED advantages, at the pre-update policy of the step (lp1 here).
        seqs = [_seq_surrogate(lp1[i], lp0[i], a) for i, a in enumerate(batch["signal_advantages"])]
        for p in (0, 1, 2):
            mine = [s for s, q in zip(seqs, batch["prompt_index"]) if q == p]
            assert second.per_prompt_surrogate[p] == pytest.approx(sum(mine) / len(mine), abs=1e-5)
        assert second.kl > 0 and second.grad_norm > 0
        ref = w.response_logprobs(batch, reference=True)
        assert sum(ref, []) == pytest.approx(sum(lp0, []), abs=1e-5)  # the reference stays the initial model
    finally:
        w.shutdown()


def test_checkpoint_round_trip_restores_weights_and_optimizer(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    batch = _batch(old_logprobs=_off_policy_logprobs(_batch()))
    w = _worker(model_dir, micro_batch_tokens=12)
    try:
        w.train_step(batch)
        saved = w.state_dict_bytes()
        w.save_checkpoint(str(tmp_path / "ck"))
        w.train_step(batch)
        after_two = w.state_dict_bytes()
        assert after_two != saved
        w.load_checkpoint(str(tmp_path / "ck"))
        assert w.version() == 1
        _assert_state_close(st_load(w.state_dict_bytes()), st_load(saved), atol=0)
        w.train_step(batch)  # needs the restored AdamW moments to reproduce step two
        _assert_state_close(st_load(w.state_dict_bytes()), st_load(after_two), atol=1e-6)
        with pytest.raises(CheckpointError, match="does not exist"):
            w.load_checkpoint(str(tmp_path / "nope"))
    finally:
        w.shutdown()
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "ck")
    _assert_state_close(hf.state_dict(), st_load(saved), atol=0)
    assert json.loads((tmp_path / "ck" / "learner_state.json").read_text())["version"] == 1


def _assert_state_close(a, b, atol):
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0), k


def _two_rank_main(rank, port, model_dir, out_dir, batch, grpo, learner_kw):
    w = _worker(model_dir, rank=rank, world=2, port=port, grpo=grpo, **learner_kw)
    try:
        stats = w.train_step(batch)
        blob = w.state_dict_bytes()
        w.save_checkpoint(f"{out_dir}/ck")
        w.train_step(batch)
        w.load_checkpoint(f"{out_dir}/ck")
        reloaded = w.state_dict_bytes()
        with open(f"{out_dir}/rank{rank}.pkl", "wb") as f:
            pickle.dump((stats, w.version()), f)
        if rank == 0:
            with open(f"{out_dir}/step1.safetensors", "wb") as f:
                f.write(blob)
            with open(f"{out_dir}/reloaded.safetensors", "wb") as f:
                f.write(reloaded)
        else:
            assert blob is None and reloaded is None
    finally:
        w.shutdown()
    exit_rank_process()


@pytest.mark.slow
@pytest.mark.parametrize("grpo,learner_kw", [({}, {}), ({"mini_batches": 2, "loss_agg": "prompt_mean"}, {}),
                                             ({"mini_batches": 2}, {"reshard_after_forward": False}),
                                             # LoRA: the published weights are merged, W + (alpha/rank)·B·A;
                                             # alpha = rank keeps Adam's rounding slack (below) unscaled
                                             ({"mini_batches": 2}, {"lora": {"rank": 4, "alpha": 4.0}})],
                         ids=["one_step", "two_mb_prompt_mean", "two_mb_keep_gathered", "two_mb_lora"])
def test_two_ranks_match_one_rank(model_dir, tmp_path, grpo, learner_kw):
    """Two FSDP2 ranks give the single rank's update (also when the gathered weights are kept
    from forward to backward, `learner.reshard_after_forward=false`)."""
    from transformers import AutoModelForCausalLM

    batch = _batch(old_logprobs=_off_policy_logprobs(_batch()))
    mp.spawn(_two_rank_main, args=(_free_port(), model_dir, str(tmp_path), batch, grpo, learner_kw), nprocs=2,
             join=True)
    stats, versions_after_load = zip(*(pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in (0, 1)))
    assert stats[0].loss == pytest.approx(stats[1].loss, abs=1e-7)
    assert stats[0].per_prompt_surrogate == stats[1].per_prompt_surrogate
    assert versions_after_load[0] == 1

    w = _worker(model_dir, micro_batch=64, grpo=grpo, lora=learner_kw.get("lora"))  # one micro-batch: checks the accumulation too
    try:
        single = w.train_step(batch)
        single_sd = st_load(w.state_dict_bytes())
    finally:
        w.shutdown()
    assert single.clip_frac > 0  # the batch exercises the clipped branch
    for key in ("loss", "kl", "entropy", "clip_frac", "grad_norm"):
        assert getattr(stats[0], key) == pytest.approx(getattr(single, key), rel=1e-4, abs=1e-7), key
    for p, v in single.per_prompt_surrogate.items():
        assert stats[0].per_prompt_surrogate[p] == pytest.approx(v, abs=1e-6)
    two_rank_sd = st_load((tmp_path / "step1.safetensors").read_bytes())
    # Why LR/100 and not a float epsilon: the ranks sum the gradient in another order (two partial
    # sums + an all-reduce vs one pass), so an element's gradient differs by some δ of float
    # rounding. Adam's first step is u(g) = lr·g/(|g|+ε) (ε = 1e-8), whose slope is at most lr/ε
    # (at g = 0): an element whose gradient nearly cancels moves by up to lr·δ/ε more or less.
    # LR/100 allows δ ≤ ε/100 = 1e-10 there (elements with |g| ≫ ε move by ≈ lr·sign(g) in both).
    # Measured on the tiny model, both sides on 1 torch thread: worst element 1.1e-3·lr
    # (|g| ≈ 0.35ε, δ ≈ 2e-11): 9× inside; two mini-batches: 4.3e-4·lr. The old 1e-5 = 1e-3·lr
    # was inside float noise.
    # Both sides must run the thread count they ask for (gdro_ray/utils/threads.py): with
    # another count, kernels split reductions differently again.
    _assert_state_close(two_rank_sd, single_sd, atol=LR / 100)
    _assert_state_close(st_load((tmp_path / "reloaded.safetensors").read_bytes()), two_rank_sd, atol=0)

    fresh = AutoModelForCausalLM.from_pretrained(model_dir)
    result = fresh.load_state_dict(two_rank_sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def _reference_update(model_dir, batch):
    """Today's update written out independently: one AdamW step on the batch token mean with
    the on-policy ratio (1), the k3 KL to the initial model, and the grad-norm clip."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    total = sum(len(r) for r in batch["response_token_ids"])
    loss = 0.0
    for p, r, a in zip(batch["prompt_token_ids"], batch["response_token_ids"], batch["advantages"]):
        ids = torch.tensor([p + r])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, len(p) - 1 : -1], -1)
        logp = logp.gather(1, torch.tensor(r)[:, None])[:, 0]
        with torch.no_grad():
            ref_lp = torch.log_softmax(ref(input_ids=ids).logits[0, len(p) - 1 : -1], -1)
            ref_lp = ref_lp.gather(1, torch.tensor(r)[:, None])[:, 0]
        d = ref_lp - logp
        kl = torch.exp(d) - d - 1
        loss = loss + (-a * torch.exp(logp - logp.detach()) + 0.001 * kl).sum() / total
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
    opt.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


def test_one_mini_batch_is_the_single_on_policy_update(model_dir):
    batch = _batch()
    w = _worker(model_dir, grpo={"mini_batches": 1, "epochs": 1, "loss_agg": "token_mean"})
    try:
        stats = w.train_step(batch)
        got = st_load(w.state_dict_bytes())
    finally:
        w.shutdown()
    assert stats.optimizer_steps == 1 and len(stats.updates) == 1
    assert stats.ratio_min == stats.ratio_max == 1.0 and stats.clip_frac == 0.0
    want = _reference_update(model_dir, batch)
    init = st_load(open(f"{model_dir}/model.safetensors", "rb").read())
    # Adam's first step is about lr·sign(g): a gradient within float noise of 0 may flip a few
    # elements by a fraction of lr, so compare at 1% of the step (a different update moves ~lr).
    for k in want:
        assert float((want[k] - init[k].float()).abs().max()) > LR / 2, k  # the step is real
        assert torch.allclose(got[k].float(), want[k], atol=LR / 100, rtol=0), k


def test_second_mini_batch_sees_a_real_ratio_and_the_clip(model_dir):
    """The same group twice (as a resampled batch may hold it): the first mini-batch's update
    moves the policy on exactly the tokens the second trains, so its ratio leaves the clip."""
    batch = {"prompt_token_ids": [[1, 2, 3]] * 4, "response_token_ids": [[10, 11, 12], [13, 14]] * 2,
             "advantages": [1.0, -1.0] * 2, "prompt_index": [0, 0, 1, 1]}
    w = _worker(model_dir, grpo={"mini_batches": 2}, grad_clip=0.0)
    try:
        lp0 = w.response_logprobs(batch)
        stats = w.train_step(batch)
        lp1 = w.response_logprobs(batch)
    finally:
        w.shutdown()
    first, second = stats.updates
    assert stats.optimizer_steps == 2 and stats.version == 1
    assert first.ratio_min == first.ratio_max == 1.0 and first.clip_frac == 0.0  # exactly on-policy
    assert second.clip_frac > 0 and second.ratio_max > 1.28 and second.ratio_min < 0.8
    assert (first.tokens, second.tokens) == (5, 5)
    assert stats.clip_frac == pytest.approx(second.clip_frac / 2)
    assert stats.ratio_max == second.ratio_max and stats.ratio_min == second.ratio_min
    # The behaviour policy is the pre-update one: the positive-advantage response gained.
    assert sum(lp1[0]) > sum(lp0[0]) and sum(lp1[1]) < sum(lp0[1])


def test_off_policy_log_probs_are_the_behaviour_policy_of_every_update(model_dir):
    """Rollouts drawn by an older policy (here: 0.3 nats less likely per token than the current
    one) are trained against it: the ratio is e^0.3 from the first update on, and it clips."""
    batch = _batch()
    w = _worker(model_dir, grpo={"mini_batches": 2})
    try:
        now = w.response_logprobs(batch)
        stats = w.train_step(dict(batch, old_logprobs=[[x - 0.3 for x in row] for row in now]))
    finally:
        w.shutdown()
    first = stats.updates[0]
    assert first.ratio_min == pytest.approx(math.exp(0.3), rel=1e-4)
    assert first.ratio_max == pytest.approx(math.exp(0.3), rel=1e-4)
    assert first.clip_frac > 0  # positive advantages beyond 1 + clip_high


def test_phase_timer_sums_each_phase_and_keeps_time_of_a_failed_block():
    import time as _time

    from gdro_ray.learner.phases import learner_phase_timer

    timer = learner_phase_timer("cpu")
    for _ in range(2):
        with timer("forward"):
            _time.sleep(0.02)
    with pytest.raises(RuntimeError), timer("backward"):
        _time.sleep(0.01)
        raise RuntimeError("boom")
    totals = timer.totals()
    assert set(totals) == {"forward", "backward"}
    assert 0.04 <= totals["forward"] < 0.5 and 0.01 <= totals["backward"] < 0.5
    timer.add("forward", 1.0)  # time measured elsewhere adds to the phase
    assert timer.seconds()["forward"] >= 1.04 and list(timer.seconds()) == ["forward", "backward"]
