"""Weight transport: the choice logic, bucket packing, and the private gloo group in one process.

Fast tests (seconds): the group members run in threads of this process, each with its own
process group built from the store, exactly as learner rank 0 and the samplers build theirs.
"""
from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.config import ConfigError, load_config
from gdro_ray.errors import UserError
from gdro_ray.protocol import SamplerInfo
from gdro_ray.service.weight_transport import choose_weight_sync
from gdro_ray.transfer.weight_group import (
    WeightReceiver,
    WeightSender,
    flatten_buckets,
    unflatten_buckets,
)


# ---- choice ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("transport, backend, gpus, cuda, want", [
    ("auto", "auto", (1, 1), (True, True), ("collective", "nccl")),
    ("auto", "auto", (0, 0), (False, False), ("object_store", None)),
    ("auto", "auto", (1, 0), (True, False), ("object_store", None)),     # samplers on CPU
    ("auto", "auto", (1, 1), (True, False), ("object_store", None)),     # GPU asked, no CUDA there
    ("auto", "gloo", (1, 1), (True, True), ("collective", "gloo")),
    ("auto", "gloo", (0, 0), (False, False), ("object_store", None)),    # auto never broadcasts on CPU
    ("collective", "auto", (0, 0), (False, False), ("collective", "gloo")),
    ("collective", "gloo", (0, 0), (False, False), ("collective", "gloo")),
    ("collective", "auto", (1, 1), (True, True), ("collective", "nccl")),
    ("object_store", "auto", (1, 1), (True, True), ("object_store", None)),
    ("object_store", "nccl", (1, 1), (True, True), ("object_store", None)),
])
def test_choice(transport, backend, gpus, cuda, want):
    c = choose_weight_sync(transport, backend, gpus[0], gpus[1], cuda[0], cuda[1])
    assert (c.transport, c.backend) == want
    assert c.reason  # logged once at start


def test_a_tensor_parallel_sampler_takes_its_weights_through_the_object_store():
    c = choose_weight_sync("auto", "auto", 1, 2, True, True, tensor_parallel=2)
    assert c.transport == "object_store" and "tensor_parallel_size=2" in c.reason
    with pytest.raises(UserError, match=r"^weight_sync.transport=collective: a sampler split over 2 GPUs"):
        choose_weight_sync("collective", "auto", 1, 2, True, True, tensor_parallel=2)


def test_nccl_without_cuda():
    with pytest.raises(UserError, match="nccl"):  # forced: refused with the reason
        choose_weight_sync("collective", "nccl", 1, 1, True, False)
    c = choose_weight_sync("auto", "nccl", 1, 1, True, False)  # auto: the object store, and why
    assert c.transport == "object_store" and "CUDA no" in c.reason


@pytest.mark.parametrize("backend, cards, want", [
    ("auto", ["GPU-a", "GPU-b", "GPU-c"], "nccl"),           # one card each
    ("auto", ["GPU-a", "GPU-a"], "gloo"),                    # a sampler on learner rank 0's card
    ("auto", ["GPU-a", "GPU-b", "GPU-b"], "gloo"),           # two samplers on one card
    ("gloo", ["GPU-a", "GPU-a"], "gloo"),
])
def test_choice_with_shared_cards(backend, cards, want):
    c = choose_weight_sync("auto", backend, 1, 1, True, True, cards)
    assert (c.transport, c.backend) == ("collective", want)
    if want == "gloo" and backend == "auto":
        assert "share GPU" in c.reason and "NCCL needs one GPU per rank" in c.reason  # the log says why


def test_forced_nccl_on_a_shared_card_fails_at_start():
    with pytest.raises(UserError, match=r"^weight_sync.backend=nccl: .*share GPU GPU-a"):
        choose_weight_sync("collective", "nccl", 1, 1, True, True, ["GPU-a", "GPU-a"])


def test_config_section():
    cfg = load_config(overrides=["weight_sync.transport=collective", "weight_sync.backend=gloo"])
    assert (cfg.weight_sync.transport, cfg.weight_sync.backend) == ("collective", "gloo")
    assert load_config().weight_sync.transport == "auto"
    with pytest.raises(ConfigError, match="weight_sync.backend"):
        load_config(overrides=["weight_sync.backend=nccl"])  # the toy preset has no GPUs
    with pytest.raises(ConfigError, match="weight_sync.transport"):
        load_config(overrides=["weight_sync.transport=rdma"])
    with pytest.raises(ConfigError, match="weight_sync.timeout_s"):
        load_config(overrides=["weight_sync.timeout_s=0"])
    gpu = load_config(preset="qwen3-1.7b-dapo", overrides=["weight_sync.backend=nccl"])
    assert gpu.weight_sync.backend == "nccl"


# ---- buckets --------------------------------------------------------------------------------------
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int8, torch.bool]


@st.composite
def state_dicts(draw):
    n = draw(st.integers(0, 8))
    out = []
    for i in range(n):
        shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
        dtype = draw(st.sampled_from(DTYPES))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        t = torch.randn(shape, generator=g, dtype=torch.float64) * 50
        out.append((f"layer{i}.w", t > 0 if dtype == torch.bool else t.to(dtype)))
    return out


@settings(max_examples=60, deadline=None)
@given(named=state_dicts(), bucket_bytes=st.integers(1, 400))
def test_flatten_round_trip(named, bucket_bytes):
    buffers, layout = flatten_buckets(named, bucket_bytes)
    got = unflatten_buckets(buffers, layout)
    assert sorted(n for n, _ in got) == sorted(n for n, _ in named)
    for dtype in DTYPES:  # grouped by dtype, original order inside a dtype
        assert [n for n, t in got if t.dtype == dtype] == [n for n, t in named if t.dtype == dtype]
    byname = dict(got)
    for name, t in named:
        assert byname[name].dtype == t.dtype and byname[name].shape == t.shape
        assert torch.equal(byname[name], t)
    assert len(buffers) == len(layout["buckets"])
    for bucket in layout["buckets"]:
        assert {str(t.dtype) for n, t in named if any(e[0] == n for e in bucket["tensors"])} == {f"torch.{bucket['dtype']}"}
        # a bucket passes the cap only when it holds a single tensor
        assert bucket["nbytes"] <= bucket_bytes or len(bucket["tensors"]) == 1
    assert layout["nbytes"] == sum(t.numel() * t.element_size() for _, t in named)
    # what travels is the byte view; the receiver rebuilds typed views from it
    again = unflatten_buckets([b.reshape(-1).view(torch.uint8) if b.numel() else torch.empty(0, dtype=torch.uint8)
                               for b in buffers], layout)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(again, got))


# ---- the group, in threads ------------------------------------------------------------------------
def _spec(sender, prefix, rank, size, timeout_s=20.0):
    host, port = sender.address
    return {"host": host, "port": port, "prefix": prefix, "rank": rank, "world_size": size,
            "backend": "gloo", "timeout_s": timeout_s}


def _run(*fns):
    """Run the callables concurrently (each is one group member); return their results or raise."""
    out, errors = [None] * len(fns), []

    def call(i, fn):
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001
            errors.append((i, e))

    threads = [threading.Thread(target=call, args=(i, f)) for i, f in enumerate(fns)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    return out, errors


def test_broadcast_reaches_every_member_and_joiner():
    sender = WeightSender("cpu")
    sender.host("127.0.0.1")
    state = {"a": torch.randn(3, 4), "b": torch.randn(7).to(torch.bfloat16), "c": torch.arange(5)}
    layout = sender.stage(state, version=3, bucket_bytes=32)
    receivers = [None, None]

    def join(i):
        receivers[i] = WeightReceiver(_spec(sender, "g1/", i + 1, 3), "cpu")

    _, errors = _run(lambda: sender.open(_spec(sender, "g1/", 0, 3)), lambda: join(0), lambda: join(1))
    assert not errors
    out, errors = _run(sender.broadcast, lambda: receivers[0].receive(layout), lambda: receivers[1].receive(layout))
    assert not errors and out[0]["nbytes"] == layout["nbytes"]
    for got in out[1:]:
        assert [n for n, _ in got] == list(state)
        assert all(torch.equal(t, state[n]) for n, t in got)
    # a late joiner gets the same staged weights through its own two-member group
    late = {}
    out, errors = _run(lambda: sender.catch_up(_spec(sender, "g2/", 0, 2)),
                       lambda: late.setdefault("w", WeightReceiver(_spec(sender, "g2/", 1, 2), "cpu").receive(layout)))
    assert not errors and all(torch.equal(t, state[n]) for n, t in late["w"])
    # the object-store fallback serialises what is staged, without a new gather
    from safetensors.torch import load

    blob = load(sender.staged_bytes())
    assert all(torch.equal(blob[n], state[n]) for n in state)
    sender.shutdown()


def test_a_member_that_left_makes_the_broadcast_fail_not_hang():
    sender = WeightSender("cpu")
    sender.host("127.0.0.1")
    sender.stage({"w": torch.randn(1 << 16)}, version=1, bucket_bytes=1 << 20)
    box = {}
    _, errors = _run(lambda: sender.open(_spec(sender, "g/", 0, 2, timeout_s=10)),
                     lambda: box.setdefault("r", WeightReceiver(_spec(sender, "g/", 1, 2, timeout_s=10), "cpu")))
    assert not errors
    box["r"].close()  # the sampler went away
    with pytest.raises(RuntimeError):
        sender.broadcast()
    assert sender.main is None  # torn down: the next publish forms a new group
    sender.shutdown()


def test_hf_engine_receives_into_its_model(tmp_path):
    from _tiny import save_tiny, tiny_model

    from gdro_ray.engines.hf_engine import HFEngine

    engine = HFEngine(str(save_tiny(tmp_path / "m", seed=0)))
    new = {k: v.detach().clone() for k, v in tiny_model(seed=1).state_dict().items()}
    want = sum(v.double().sum().item() for v in new.values())
    assert engine.weights_checksum() != pytest.approx(want)
    sender = WeightSender("cpu")
    sender.host("127.0.0.1")
    layout = sender.stage(new, version=5, bucket_bytes=1 << 16)
    _, errors = _run(lambda: sender.open(_spec(sender, "h/", 0, 2)),
                     lambda: engine.join_weight_group(_spec(sender, "h/", 1, 2)))
    assert not errors
    _, errors = _run(sender.broadcast, lambda: engine.receive_weights(layout, 5))
    assert not errors
    assert engine.weights_version == 5
    assert engine.weights_checksum() == pytest.approx(want, rel=1e-12)
    assert all(torch.equal(engine.model.state_dict()[k], v) for k, v in new.items())
    engine.close()
    sender.shutdown()


# ---- set-up safety: where the store listens, time limits, catch-up decisions -----------------------
def test_store_listens_only_on_the_given_address():
    import psutil

    sender = WeightSender("cpu")
    host, port = sender.host("127.0.0.1")
    listening = [c.laddr for c in psutil.Process().net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)  # not 0.0.0.0 / ::
    box = {}
    out, errors = _run(lambda: sender.open(_spec(sender, "b/", 0, 2)),
                       lambda: box.setdefault("r", WeightReceiver(_spec(sender, "b/", 1, 2), "cpu")))
    assert not errors  # and the samplers still reach it there
    box["r"].close()
    sender.shutdown()


def test_start_up_that_hangs_is_cut_at_the_time_limit():
    import time

    from gdro_ray.transfer.weight_group import start_within

    class Group:
        closed = False

        def shutdown(self):
            self.closed = True

    pg, release = Group(), threading.Event()
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match="NCCL start-up did not finish within 0.5 s"):
        start_within(pg, lambda: release.wait(30), 0.5, "NCCL start-up")
    assert time.perf_counter() - t0 < 5 and pg.closed  # aborted, the caller freed
    release.set()
    pg2 = Group()
    with pytest.raises(ValueError, match="boom"):  # an error in the start-up is raised as itself
        start_within(pg2, lambda: (_ for _ in ()).throw(ValueError("boom")), 5, "x")
    assert pg2.closed
    start_within(Group(), lambda: None, 5, "x")  # a quick start-up passes


def test_expired_catch_up_starts_no_group():
    import time

    sender = WeightSender("cpu")
    sender.host("127.0.0.1")
    sender.stage({"w": torch.ones(4)}, 1, 64)
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match="joiner's time limit has passed"):
        sender.catch_up(dict(_spec(sender, "late/", 0, 2, timeout_s=30), not_after=time.time() - 1))
    assert time.perf_counter() - t0 < 2  # not the 30 s a group with a missing member would wait
    sender.shutdown()


class _Handle:
    """A stand-in Ray actor handle: `.method.remote(*args)` records the call and returns it."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def __getattr__(self, method):
        outer = self

        class _M:
            @staticmethod
            def remote(*args):
                outer.calls.append((outer.name, method, args))
                return (outer.name, method)
        return _M


def _transport(busy: bool, cards: dict, backend="nccl"):
    from types import SimpleNamespace

    from gdro_ray.service.weight_transport import CollectiveTransport

    calls = []
    t = object.__new__(CollectiveTransport)  # no Ray: the decisions only
    members = {sid: SimpleNamespace(sampler_id=sid, info=SamplerInfo(sampler_id=sid, cuda_uuid=u), ready=True) for sid, u in cards.items()}
    t.learner = SimpleNamespace(busy=busy)
    t.pool = SimpleNamespace(blob_ref=None, blob_version=0, members=members)
    t.rank0, t.rank0_card = _Handle("rank0", calls), "GPU-0"
    t.backend, t.timeout_s, t.host, t.port, t._tag, t.generation = backend, 30.0, "h", 1, "x", 0
    t.layout = {"version": 3, "buckets": [], "nbytes": 0, "tensors": 0}
    from collections import Counter

    t._catch_up_tries, t.stats = Counter(), Counter()
    return t, calls


def test_no_collective_catch_up_while_the_learner_trains():
    import time

    t, calls = _transport(busy=True, cards={7: "GPU-7"})
    assert t.catch_up(7, _Handle("s7", calls), 3) == ("s7", "update_weights")  # the object store
    assert t.stats["catch_ups_object_store"] == 1 and t.stats["catch_ups"] == 0
    assert not any(m == "weight_sender" and a[0] == "catch_up" for _, m, a in calls)
    t, calls = _transport(busy=False, cards={7: "GPU-7"})  # idle learner: its own NCCL group, with a deadline
    assert t.catch_up(7, _Handle("s7", calls), 3) == ("s7", "catch_up_weights")
    (rank0_spec,) = [a[1] for n, m, a in calls if n == "rank0" and a[0] == "catch_up"]
    (joiner_spec,) = [a[0] for n, m, a in calls if m == "catch_up_weights"]
    assert rank0_spec["backend"] == joiner_spec["backend"] == "nccl"
    assert rank0_spec["not_after"] == joiner_spec["not_after"] <= time.time() + 30.0


def test_a_generation_on_a_shared_card_uses_gloo():
    t, _ = _transport(busy=False, cards={1: "GPU-1", 2: "GPU-2"})
    assert t._backend_for([1, 2]) == "nccl"
    t, _ = _transport(busy=False, cards={1: "GPU-1", 2: "GPU-0"})  # sampler 2 landed on rank 0's card
    assert t._backend_for([1, 2]) == "gloo" and t.stats["gloo_generations"] == 1
    assert t._backend_for([1]) == "nccl"
    t, _ = _transport(busy=False, cards={1: "GPU-0"}, backend="gloo")
    assert t._backend_for([1]) == "gloo"
