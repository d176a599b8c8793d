"""Torch's intra-op thread count, set for real even after an in-process vLLM engine.

vLLM's CPU worker replaces the module attribute `torch.set_num_threads` with a function that
only logs "CPU backend doesn't allow to use `torch.set_num_threads` after the thread binding,
skip it." The replacement is process-wide and permanent, so once an engine has run in-process
(VLLM_ENABLE_V1_MULTIPROCESSING=0: the tests, `gdro-ray eval`), every later
`torch.set_num_threads(n)` in that process is silently ignored. Results that rest on a thread
count (prepare's bit-identical weights, a learner's float reduction order) then depend on what
ran before. `set_torch_threads` calls `torch._C.set_num_threads`, the binding the attribute
pointed at before vLLM replaced it, and checks that the count took.
"""
from __future__ import annotations

from contextlib import contextmanager


def set_torch_threads(n: int) -> int:
    """Set torch's intra-op threads to `n`; returns the previous count. Raises if it does not take."""
    import torch

    before = torch.get_num_threads()
    torch._C.set_num_threads(int(n))
    if torch.get_num_threads() != int(n):  # pragma: no cover - a torch build without intra-op threads
        raise RuntimeError(f"torch kept {torch.get_num_threads()} threads, asked for {n}")
    return before


@contextmanager
def torch_threads(n: int):
    """Run the block on exactly `n` torch threads, then restore the previous count."""
    before = set_torch_threads(n)
    try:
        yield
    finally:
        set_torch_threads(before)


def undo_vllm_thread_patch() -> bool:
    """Give `torch.set_num_threads` back its real binding (True if vLLM had replaced it)."""
    import torch

    if torch.set_num_threads is torch._C.set_num_threads:
        return False
    torch.set_num_threads = torch._C.set_num_threads
    return True
