"""GPU-path decisions that CPU can test: memory shares, context lengths, shared cards, placement keys,
learner devices and the rendezvous address (gdro_ray/service/gpu_plan.py, learner_group.py)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.config import ConfigError, load_config
from gdro_ray.errors import UserError
from gdro_ray.service.gpu_plan import (
    CARD_CEILING,
    engine_max_model_len,
    learner_device,
    model_context,
    sampler_engine_kwargs,
    sampler_gpu_kwargs,
    sampler_memory_fraction,
    shared_cards,
)


# ---- vLLM's share of a card ---------------------------------------------------------------------
def test_memory_fraction_cases():
    assert sampler_memory_fraction(1, 16, 1, 0) == CARD_CEILING          # a card of its own
    assert sampler_memory_fraction(2, 16, 1, 0) == CARD_CEILING          # more than one: still one card's worth
    assert sampler_memory_fraction(0.5, 16, 0.5, 1) == pytest.approx(0.45)  # packed beside a learner rank
    assert sampler_memory_fraction(0.25, 16, 0, 0) == pytest.approx(0.225)
    # reserved nothing (Ray 2.60 shows it the card anyway): an equal part of what learners leave
    assert sampler_memory_fraction(0, 4, 0, 0) == pytest.approx(CARD_CEILING / 4)
    assert sampler_memory_fraction(0, 4, 0.5, 1) == pytest.approx(CARD_CEILING * 0.5 / 4)
    assert sampler_memory_fraction(0, 4, 0.5, 0) == pytest.approx(CARD_CEILING / 4)  # learners on other cards
    assert sampler_memory_fraction(0.5, 16, 1, 0, explicit=0.3) == 0.3   # sampler.gpu_memory_utilization wins
    with pytest.raises(UserError, match="sampler.num_gpus=0"):
        sampler_memory_fraction(0, 4, 1, 1)  # on a card a learner rank reserved whole


@settings(max_examples=200, deadline=None)
@given(sampler_gpus=st.sampled_from([0, 0.1, 0.25, 0.5, 1, 2]), max_samplers=st.integers(1, 64),
       learner_gpus=st.sampled_from([0, 0.25, 0.5, 1]), ranks=st.integers(0, 4))
def test_memory_fraction_properties(sampler_gpus, max_samplers, learner_gpus, ranks):
    try:
        f = sampler_memory_fraction(sampler_gpus, max_samplers, learner_gpus, ranks)
    except UserError:
        assert sampler_gpus == 0  # only an unreserved sampler can find its card taken
        return
    assert 0 < f <= CARD_CEILING
    if sampler_gpus > 0:  # Ray's accounting: the part it reserved, whoever else is on the card
        assert f == pytest.approx(CARD_CEILING * min(sampler_gpus, 1), abs=1e-4)
    else:  # max_samplers unreserved samplers plus the learner ranks on the card never ask for more than it
        held = min(1.0, ranks * learner_gpus)
        assert max_samplers * f + held * CARD_CEILING <= CARD_CEILING + max_samplers * 5e-5 + 1e-9  # rounding


def test_engine_kwargs_in_the_sampler():
    gpu = {"sampler_gpus": 0.5, "max_samplers": 4, "learner_gpus": 0, "learner_uuids": [], "explicit": 0.0}
    # on this CPU machine: only the context length reaches vLLM, nothing GPU-specific
    assert sampler_engine_kwargs("vllm", 4096, gpu) == {"max_model_len": 4096}
    assert sampler_engine_kwargs("vllm", None, gpu) == {}
    assert sampler_engine_kwargs("hf", 4096, gpu) == {}  # the transformers engine takes neither


# ---- context length -----------------------------------------------------------------------------
def test_max_model_len():
    assert engine_max_model_len(1024, 4096, 32768) == 5120
    assert engine_max_model_len(0, 4096, 32768) == 32768   # 0: what the context leaves
    assert engine_max_model_len(0, 24, 512) == 512          # the toy model: as before
    assert engine_max_model_len(512, 24, None) == 536
    assert engine_max_model_len(0, 24, None) is None
    with pytest.raises(ConfigError, match=r"^sampler.max_new_tokens: 4096 \+ sampler.max_prompt_tokens 30000"):
        engine_max_model_len(30000, 4096, 32768)
    with pytest.raises(ConfigError, match="^sampler.max_new_tokens: 4096 leaves no room"):
        engine_max_model_len(0, 4096, 2048)


def test_model_context(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 40960}))
    assert model_context(tmp_path) == 40960
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 8192}}))
    assert model_context(tmp_path) == 8192
    (tmp_path / "config.json").write_text("{not json")
    assert model_context(tmp_path) is None
    assert model_context(tmp_path / "nowhere") is None


def test_qwen3_preset_lengths_against_a_qwen3_context(tmp_path):
    """The paper preset asks for 4,096 new tokens: vLLM's length must cover them (it was capped at 2048)."""
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 32768}))
    cfg = load_config(preset="qwen3-1.7b-dapo")
    kw = sampler_gpu_kwargs(cfg, str(tmp_path), ["GPU-a", None])
    assert kw["max_model_len"] >= cfg.sampler.max_new_tokens + 1 and kw["max_model_len"] > 2048
    assert kw["gpu"] == {"sampler_gpus": 1.0, "max_samplers": 16, "learner_gpus": 1.0, "learner_uuids": ["GPU-a"],
                         "explicit": 0.0, "enforce_eager": False, "tensor_parallel_size": 1}
    too_long = load_config(preset="qwen3-1.7b-dapo", overrides=["sampler.max_prompt_tokens=30000"])
    with pytest.raises(ConfigError, match="^sampler.max_new_tokens"):
        sampler_gpu_kwargs(too_long, str(tmp_path))


# ---- cards and devices --------------------------------------------------------------------------
def test_shared_cards():
    assert shared_cards(["GPU-a", "GPU-b", None, None]) == []  # CPU members never collide
    assert shared_cards(["GPU-a", "GPU-b", "GPU-a"]) == ["GPU-a"]
    assert shared_cards([]) == []


def test_learner_device():
    assert learner_device(0) == "cpu"  # Ray shows the GPUs to ranks that reserved none: stay on CPU
    assert learner_device(1) is None and learner_device(0.5) is None  # the worker takes its card


# ---- placement keys ------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, key", [
    (["learner.world_size=2", "learner.num_gpus=0.5"], "learner.num_gpus"),
    (["learner.num_gpus=1.5"], "learner.num_gpus"),
    (["sampler.num_gpus=2.5"], "sampler.num_gpus"),
    (["sampler.gpu_memory_utilization=1.5"], "sampler.gpu_memory_utilization"),
    (["sampler.gpu_memory_utilization=-0.1"], "sampler.gpu_memory_utilization"),
    (["sampler.max_prompt_tokens=-1"], "sampler.max_prompt_tokens"),
])
def test_bad_placement_keys_fail_at_start(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    assert str(e.value).startswith(f"{key}:") and "\n" not in str(e.value)


def test_good_placement_keys():
    assert load_config(overrides=["learner.world_size=1", "learner.num_gpus=0.5", "sampler.num_gpus=0.5"])
    assert load_config(overrides=["learner.world_size=4", "learner.num_gpus=2", "sampler.gpu_memory_utilization=0.3"])
    d = load_config()  # the CPU defaults are unchanged
    assert (d.sampler.gpu_memory_utilization, d.sampler.max_prompt_tokens, d.learner.num_gpus) == (0.0, 0, 0.0)


# ---- the learner group's rendezvous ----------------------------------------------------------------
def test_master_address():
    from gdro_ray.service.learner_group import master_address

    assert master_address(["n1", "n1", "n1"], "10.0.0.7") == "127.0.0.1"  # one node: loopback, as before
    assert master_address(["n1", "n2"], "10.0.0.7") == "10.0.0.7"  # rank 0's node, not the driver's


@pytest.mark.slow
def test_rendezvous_is_found_on_rank0s_node():
    """Two nodes, one rank each: the address comes from the node holding bundle 0 (not the driver),
    and the port is free there; on one node the ranks meet on loopback."""
    import socket

    import ray
    from ray.cluster_utils import Cluster
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    from gdro_ray.service.learner_group import rendezvous

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                           "object_store_memory": 100 * 1024**2})
    worker = cluster.add_node(num_cpus=1, resources={"rank0_here": 1}, object_store_memory=100 * 1024**2)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        # rank 0 must land on the added node: its bundle asks for that node's resource
        pg = placement_group([{"CPU": 0.5, "rank0_here": 1}, {"CPU": 0.5}], strategy="STRICT_SPREAD")
        ray.get(pg.ready(), timeout=60)
        addr, port = rendezvous(pg)
        assert placement_group_table(pg)["bundles_to_node_id"][0] == worker.node_id
        assert addr == worker.node_ip_address and addr != "127.0.0.1"
        with socket.socket() as s:  # the port is usable on rank 0's node
            s.bind((addr, port))
        remove_placement_group(pg)
        one = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="STRICT_PACK")
        ray.get(one.ready(), timeout=60)
        assert rendezvous(one)[0] == "127.0.0.1"
        remove_placement_group(one)
    finally:
        ray.shutdown()
        cluster.shutdown()
