"""Thread set-up survives an in-process vLLM engine: prepare and the learner get the
thread count they ask for, whatever ran before them in the process."""
import pytest
import torch
from safetensors.torch import load_file

from gdro_ray.models import prepare as P
from gdro_ray.utils.threads import set_torch_threads, torch_threads, undo_vllm_thread_patch


@pytest.fixture
def vllm_patched_torch():
    """What vLLM's CPU worker leaves behind: torch.set_num_threads a no-op, 2 threads running."""
    before = torch.get_num_threads()
    torch._C.set_num_threads(2)
    torch.set_num_threads = lambda n: None
    try:
        yield
    finally:
        undo_vllm_thread_patch()
        torch._C.set_num_threads(before)


def test_thread_count_is_set_despite_the_patch(vllm_patched_torch):
    torch.set_num_threads(1)
    assert torch.get_num_threads() == 2  # the patch really ignores it
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    assert set_torch_threads(1) == 2 and torch.get_num_threads() == 1
    assert undo_vllm_thread_patch() and not undo_vllm_thread_patch()
    torch.set_num_threads(2)
    assert torch.get_num_threads() == 2


_REAL_TRAIN_SFT = P.train_sft


def _tiny_prepare(tmp_path, name, monkeypatch):
    seen = []
    real = _REAL_TRAIN_SFT

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(P, "train_sft", recording)
    recipe = P.SFTRecipe(size="nano", steps=4, batch_size=8, bare_batch=8)
    path = P.prepare_toy_model(tmp_path / name, seed=0, recipe=recipe)
    return load_file(str(path / "model.safetensors")), seen


def test_prepare_is_identical_after_an_in_process_engine(tmp_path, monkeypatch):
    clean, seen_clean = _tiny_prepare(tmp_path, "clean", monkeypatch)
    torch._C.set_num_threads(2)
    torch.set_num_threads = lambda n: None  # as vLLM's CPU worker leaves the process
    try:
        after, seen_after = _tiny_prepare(tmp_path, "after", monkeypatch)
        assert torch.get_num_threads() == 2  # restored to what it found
    finally:
        undo_vllm_thread_patch()
    assert seen_clean == seen_after == [P.PREPARE_THREADS]
    assert set(clean) == set(after) and all(torch.equal(clean[k], after[k]) for k in clean)


def test_module_isolation_undoes_what_an_in_process_engine_leaves(monkeypatch):
    """What conftest.py does after every module: environment, thread patch and count put back."""
    import os

    from _isolation import process_state_restored

    monkeypatch.setenv("LD_PRELOAD", "")  # monkeypatch restores it after this test as well
    before_env = dict(os.environ)
    start = torch.get_num_threads()
    with process_state_restored(start):
        os.environ["LD_PRELOAD"] = "/opt/libtcmalloc_minimal.so:/opt/libgomp.so"  # as vLLM's CPU platform does
        os.environ["LOCAL_WORLD_SIZE"] = "1"
        torch._C.set_num_threads(1 if start != 1 else 2)
        torch.set_num_threads = lambda n: None
    assert dict(os.environ) == before_env
    assert torch.set_num_threads is torch._C.set_num_threads
    assert torch.get_num_threads() == start
