"""Test helper: put the process back as a test module found it (used by conftest.py for every module).

An in-process vLLM engine (test_engines, test_eval, ...) replaces `torch.set_num_threads` with a
no-op for the rest of the process, and writes LD_PRELOAD (tcmalloc, torch's libgomp),
LOCAL_WORLD_SIZE and thread variables into os.environ, which every later subprocess (Ray,
spawned learner ranks, `gdro-ray` runs) would inherit; in-process learners set 1 torch thread.
Without a reset, what a later module computes (a learner's reduction order, prepare's weights)
would depend on which modules ran before it (gdro_ray/utils/threads.py).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager


@contextmanager
def process_state_restored(threads: int | None):
    """On exit: os.environ as on entry, the real `torch.set_num_threads`, and `threads` torch threads."""
    env = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(env):
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if os.environ.get(k) != v})
        if "ray" in sys.modules:  # a local run switched Ray to single-machine mode for this process
            import ray._private.ray_constants as ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = not ray_constants.IS_WINDOWS_OR_OSX
        if "torch" in sys.modules:
            from gdro_ray.utils.threads import set_torch_threads, undo_vllm_thread_patch

            undo_vllm_thread_patch()
            if threads:
                set_torch_threads(threads)
