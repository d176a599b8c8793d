"""LoRA on the FSDP2 learner (`learner.lora`, gdro_ray/learner/lora.py), with real peft on CPU/gloo."""

import json

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import load_file
from test_learner import _assert_state_close, _batch, _make_model, _off_policy_logprobs, _worker

from gdro_ray.errors import CheckpointError
from gdro_ray.learner import lora as lora_io

# alpha ≠ rank, so a merge that forgot the scale would be caught
LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["all-linear"]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_qwen3_lora")
    _make_model(path)
    return str(path)


def _batch_off():
    return _batch(old_logprobs=_off_policy_logprobs(_batch()))


def _hf_logprobs(model, batch):
    """Token log-probs of every response under a plain HF model, one sequence at a time."""
    out = []
    for p, r in zip(batch["prompt_token_ids"], batch["response_token_ids"]):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + r])).logits[0, len(p) - 1 : -1]
        out.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(r)[:, None])[:, 0].tolist())
    return out


def _peft_base(model_dir):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return get_peft_model(base, lora_io.LoraSettings.from_dict(LORA).peft_config())


def test_only_the_adapters_train_and_the_reference_is_the_base(model_dir):
    from transformers import AutoModelForCausalLM

    batch = _batch_off()
    w = _worker(model_dir, lora=LORA)  # kl_coef 0.001: the reference is used in every step
    try:
        assert w.ref_model is None  # no second model copy
        names = {id(p): n for n, p in w.model.named_parameters()}
        in_optimizer = [names[id(p)] for g in w.optimizer.param_groups for p in g["params"]]
        adapters = [n for n, p in w.model.named_parameters() if lora_io.is_adapter_key(n)]
        assert sorted(in_optimizer) == sorted(adapters) and len(adapters) == 2 * 7 * 2  # A, B × 7 linears × 2 layers
        assert all(p.requires_grad == lora_io.is_adapter_key(n) for n, p in w.model.named_parameters())

        def snapshot():  # on one rank the gathered state can share storage with the live parameters
            return {k: v.clone() for k, v in w._full_state_dict().items()}

        before = snapshot()
        for _ in range(2):  # the second step moves lora_A too (B = 0 before the first)
            stats = w.train_step(batch)
        after = snapshot()
        assert stats.kl > 0 and w.version() == 2
        assert set(before) == set(after)
        for key in before:
            if lora_io.is_adapter_key(key):
                assert not torch.equal(before[key], after[key]), key
            else:
                assert torch.equal(before[key], after[key]), key  # bit-identical base

        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        want = _hf_logprobs(base, batch)
        ref = w.response_logprobs(batch, reference=True)
        policy = w.response_logprobs(batch)
    finally:
        w.shutdown()
    assert sum(ref, []) == pytest.approx(sum(want, []), abs=1e-5)  # adapters disabled = the base model
    assert max(abs(a - b) for a, b in zip(sum(policy, []), sum(want, []))) > 1e-3  # the policy has moved


def test_merged_weights_and_checkpoint_load_in_peft_and_plain_transformers(model_dir, tmp_path):
    """What the samplers get and the checkpoint's folder are peft's own merge of the adapter,
    and are the policy the learner trains."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    batch = _batch_off()
    w = _worker(model_dir, lora=LORA)
    try:
        for _ in range(2):
            w.train_step(batch)
        published = st_load(w.state_dict_bytes())
        policy = w.response_logprobs(batch)
        w.save_checkpoint(str(tmp_path / "ck"))
    finally:
        w.shutdown()
    ck = tmp_path / "ck"
    assert json.loads((ck / "learner_state.json").read_text())["lora"] == LORA
    assert not (ck / "adapter_config.json").exists()  # else transformers would load the folder as an adapter

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(ck / "adapter")).merge_and_unload()
    peft_sd = merged.state_dict()
    _assert_state_close(published, peft_sd, atol=1e-6)
    plain = AutoModelForCausalLM.from_pretrained(ck, dtype=torch.float32)
    _assert_state_close(plain.state_dict(), peft_sd, atol=1e-6)
    _assert_state_close(load_file(str(ck / "model.safetensors")), published, atol=0)
    assert sum(_hf_logprobs(plain, batch), []) == pytest.approx(sum(policy, []), abs=1e-5)
    start = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()  # merging changed `base`
    moved = max(float((published[k] - start[k]).abs().max()) for k in published)
    assert moved > 1e-3  # the merge is not the base


def test_merge_matches_peft_merge_and_unload_exactly():
    """The publication's merge on its own, against peft's, with non-zero A and B everywhere."""
    import copy

    from _tiny import tiny_model
    from peft import get_peft_model

    model = tiny_model(3, tied=True)
    peft_model = get_peft_model(model, lora_io.LoraSettings.from_dict(LORA).peft_config())
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if lora_io.is_adapter_key(name):
                p.normal_(0, 0.3)
    base = lora_io.base_weights(peft_model)
    adapters = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    ours = lora_io.merged_state(base, adapters, lora_io.scalings(peft_model))
    want = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert set(ours) == set(want)
    for key in want:
        assert torch.equal(ours[key], want[key]), key


def test_gradient_checkpointing_gives_the_same_lora_update(model_dir):
    batch = _batch_off()
    states = []
    for ckpt in (False, True):
        w = _worker(model_dir, lora=LORA, gradient_checkpointing=ckpt)
        try:
            assert w.gradient_checkpointing == ckpt
            w.train_step(batch)
            w.train_step(batch)
            states.append(st_load(w.state_dict_bytes()))
        finally:
            w.shutdown()
    _assert_state_close(states[0], states[1], atol=1e-6)


def test_lora_checkpoint_resumes_exactly_and_refuses_other_settings(model_dir, tmp_path):
    batch = _batch_off()
    ck = str(tmp_path / "ck")
    w = _worker(model_dir, lora=LORA)
    try:
        w.train_step(batch)
        saved = w.state_dict_bytes()
        w.save_checkpoint(ck)
        w.train_step(batch)
        after_two = w.state_dict_bytes()
        assert after_two != saved
        w.load_checkpoint(ck)
        assert w.version() == 1
        _assert_state_close(st_load(w.state_dict_bytes()), st_load(saved), atol=0)
        w.train_step(batch)  # needs the restored AdamW moments of the adapters to reproduce step two
        _assert_state_close(st_load(w.state_dict_bytes()), st_load(after_two), atol=1e-6)
    finally:
        w.shutdown()

    for kw, match in (
        ({"lora": dict(LORA, rank=8)}, "learner.lora.rank=4"),
        ({"lora": dict(LORA, target_modules=["q_proj"])}, "learner.lora.target_modules"),
        ({}, "holds a LoRA adapter"),
    ):
        other = _worker(model_dir, **kw)
        try:
            with pytest.raises(CheckpointError, match=match):
                other.load_checkpoint(ck)
            if not kw:  # and the other way round: a full fine-tuning checkpoint into a LoRA learner
                other.save_checkpoint(str(tmp_path / "ck_full"))
        finally:
            other.shutdown()
    w = _worker(model_dir, lora=LORA)
    try:
        with pytest.raises(CheckpointError, match="without LoRA"):
            w.load_checkpoint(str(tmp_path / "ck_full"))
    finally:
        w.shutdown()


def test_lora_target_that_matches_nothing_is_refused(model_dir):
    import torch.distributed as dist

    try:
        with pytest.raises(ValueError, match="learner.lora.target_modules"):
            _worker(model_dir, lora=dict(LORA, target_modules=["no_such_proj"])).shutdown()
    finally:  # the worker failed after joining its process group
        if dist.is_initialized():
            dist.destroy_process_group()
