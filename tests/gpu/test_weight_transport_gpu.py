"""benchmarks/gpu_check.py cannot rot (its CPU smoke runs here), plus the checks that need CUDA.

The `gpu` tests are skipped where no NVIDIA GPU is attached and fail where one is but CUDA is
unusable (tests/conftest.py); they are what to run when a card is lent
(benchmarks/gpu_setup_and_check.sh): the real script on one GPU, a one-rank NCCL weight group
(on one card the publish uses gloo, so this is what runs the NCCL code there), and an NCCL
broadcast between two GPUs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def _gpu_check_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    return gpu_check


def test_peak_table():
    peak_flops = _gpu_check_module().peak_flops

    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("NVIDIA GeForce RTX 4090") is None


def test_cpu_smoke_learner(tmp_path):
    out = tmp_path / "smoke.json"
    p = _run("--cpu-smoke", "--skip-vllm", "--out", str(out), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["mode"] == "cpu-smoke" and r["learner"]["backend"] == "gloo"
    assert r["learner"]["tokens_per_s"] > 0 and r["learner"]["mfu"] is None
    assert "MFU" in p.stdout and "n/a" in p.stdout


@pytest.mark.slow
def test_cpu_smoke_with_vllm_publish(tmp_path):
    out = tmp_path / "smoke.json"
    p = _run("--cpu-smoke", "--out", str(out), timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["publish"]["backend"] == "gloo" and r["publish"]["nbytes"] > 0
    assert r["sampler"]["weights_version"] == r["learner"]["steps"]  # the sampler holds the trained version
    assert r["sampler"]["generate_tokens"] > 0


@pytest.mark.slow
def test_cpu_smoke_of_the_sampler_modes(tmp_path):
    """benchmarks/gpu_sampler_modes.py: on CPU the engine runs eager and tensor parallel is refused
    with its one line; the GPU modes (CUDA graphs, TP 2) are the same code with other arguments."""
    out = tmp_path / "modes.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_sampler_modes.py"), "--cpu-smoke",
                        "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    eager, tp = json.loads(out.read_text())["modes"]
    assert eager["status"] == "ok" and eager["tokens"] > 0 and eager["speed_vs_eager"] == 1.0
    assert tp["status"] == "error" and "tensor parallel runs on CUDA GPUs only" in tp["error"]
    assert "| eager (CPU) |" in p.stdout


def test_sampler_modes_on_gpus():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_sampler_modes

    names = [m["name"] for m in gpu_sampler_modes.modes_for(1)]
    assert names == ["eager, 1 card", "CUDA graphs, 1 card"]
    two = gpu_sampler_modes.modes_for(2)
    assert two[-1]["tensor_parallel_size"] == 2 and not two[-1]["enforce_eager"]


def test_tmpdir_is_created_on_a_fresh_checkout(tmp_path):
    env = {}
    tmp = _gpu_check_module().prepare_tmpdir(env, tmp_path / "checkout")  # no .tmp there yet
    assert tmp == tmp_path / "checkout" / ".tmp" and tmp.is_dir() and env["TMPDIR"] == str(tmp)
    given = {"TMPDIR": str(tmp_path / "a" / "b")}
    assert _gpu_check_module().prepare_tmpdir(given, tmp_path).is_dir()  # an explicit TMPDIR is kept, and made


def test_mfu_counts_parameters_without_the_input_embedding():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    gc = _gpu_check_module()
    model = Qwen3ForCausalLM(Qwen3Config(**gc.TINY, tie_word_embeddings=False))
    total = sum(p.numel() for p in model.parameters())
    vocab, hidden = gc.TINY["vocab_size"], gc.TINY["hidden_size"]
    assert gc.flop_params(model) == total - vocab * hidden  # the LM head (a matmul) still counts


def test_vllm_that_cannot_be_imported_fails_the_check(tmp_path):
    fake = tmp_path / "site" / "vllm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('broken vllm for the test')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    p = _run("--cpu-smoke", "--steps", "1", "--out", str(tmp_path / "x.json"), timeout=120, env=env)
    assert p.returncode == 3 and "vLLM cannot be imported" in p.stderr and "broken vllm" in p.stderr
    assert not (tmp_path / "x.json").exists()


def test_without_gpu_it_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    p = _run(timeout=60)
    assert p.returncode == 2 and "no CUDA GPU" in p.stderr


@pytest.mark.gpu
def test_gpu_check_on_the_card(tmp_path):
    """The script on the card; benchmarks/gpu_setup_and_check.sh has just run it and names its JSON
    in GDRO_GPU_CHECK_JSON, which is then checked instead of a second run of several minutes."""
    given = os.environ.get("GDRO_GPU_CHECK_JSON")
    if given and Path(given).is_file():
        r = json.loads(Path(given).read_text())
    else:
        out = tmp_path / "gpu.json"
        p = _run("--steps", "3", "--out", str(out), timeout=330)
        assert p.returncode == 0, p.stderr[-3000:]
        r = json.loads(out.read_text())
    assert r["mode"] == "gpu" and r["learner"]["backend"] == "nccl" and r["learner"]["tokens_per_s"] > 0
    if r["learner"]["peak_bf16_flops"]:
        assert 0 < r["learner"]["mfu"] < 1
    assert r["nccl_smoke"]["ok"]
    assert isinstance(r["sampler"], dict), r["sampler"]  # vLLM ran: an import failure fails the script
    assert r["sampler"]["weights_version"] == r["learner"]["steps"]
    assert r["publish"]["backend"] == ("nccl" if r["gpus"] >= 2 else "gloo")  # one card: the ranks share it


@pytest.mark.gpu
def test_nccl_weight_group_of_one_rank():
    """Start-up, broadcast and abort of an NCCL weight group on one card (API misuse shows here)."""
    import torch

    from gdro_ray.transfer.weight_group import WeightSender, unflatten_buckets

    sender = WeightSender("cuda:0")
    host, port = sender.host("127.0.0.1", 60.0)
    state = {"w": torch.randn(300, 7), "b": torch.arange(5, dtype=torch.int64)}
    sender.stage(state, 1, 1 << 10)
    sender.open({"host": host, "port": port, "prefix": "one/", "rank": 0, "world_size": 1, "backend": "nccl",
                 "timeout_s": 60.0})
    assert sender.broadcast()["nbytes"] == 300 * 7 * 4 + 5 * 8
    got = dict(unflatten_buckets(sender.buffers, sender.layout))  # the staged copy is unchanged
    assert all(torch.equal(got[k], v) for k, v in state.items())
    sender.shutdown()


def _nccl_member(rank, to_receiver, results):
    import torch

    from gdro_ray.transfer.weight_group import WeightReceiver, WeightSender

    torch.cuda.set_device(rank)
    g = torch.Generator().manual_seed(0)
    state = {"a": torch.randn(1000, 64, generator=g).to(torch.bfloat16), "b": torch.randn(17, generator=g)}
    spec = {"prefix": "nccl/", "world_size": 2, "backend": "nccl", "timeout_s": 60, "rank": rank}
    if rank == 0:
        sender = WeightSender(f"cuda:{rank}")
        host, port = sender.host("127.0.0.1")
        layout = sender.stage(state, 1, 1 << 20)
        to_receiver.put((host, port, {k: layout[k] for k in ("buckets", "nbytes")}))
        sender.open(dict(spec, host=host, port=port))
        sender.broadcast()
        sender.shutdown()
        results.put(("sender", True))
    else:
        host, port, layout = to_receiver.get(timeout=60)
        got = dict(WeightReceiver(dict(spec, host=host, port=port), f"cuda:{rank}").receive(layout))
        results.put(("receiver", got["a"].is_cuda and all(torch.equal(got[k].cpu(), v) for k, v in state.items())))


@pytest.mark.gpu
def test_nccl_broadcast_between_two_gpus():
    import multiprocessing as mp

    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("NCCL needs one GPU per rank: this needs two")
    ctx = mp.get_context("spawn")
    to_receiver, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_nccl_member, args=(r, to_receiver, results)) for r in (0, 1)]
    [p.start() for p in procs]
    [p.join(120) for p in procs]
    assert dict(results.get(timeout=5) for _ in procs) == {"sender": True, "receiver": True}
