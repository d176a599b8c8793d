"""cluster.sampler_cpus / cluster.learner_cpus: the keys are validated with one line
naming the key, and a run's real sampler and learner actors end up pinned, every thread of them,
to their own CPUs (read back with os.sched_getaffinity inside each actor)."""
from __future__ import annotations

import os

import pytest

from gdro_ray.config import ConfigError, load_config

CPUS = sorted(os.sched_getaffinity(0))


@pytest.mark.parametrize("key,value,match", [
    ("cluster.sampler_cpus", "[-1]", "cluster.sampler_cpus: CPU ids must be ≥ 0"),
    ("cluster.learner_cpus", "[0,0]", "cluster.learner_cpus: a CPU id appears twice"),
    ("cluster.learner_cpus", "[4096]", r"cluster.learner_cpus: CPUs \[4096\] are not available here"),
    ("cluster.sampler_cpus", "0", "cluster.sampler_cpus: must be a list"),
])
def test_cpu_keys_are_validated(key, value, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(overrides=[f"{key}={value}"])
    assert "\n" not in str(e.value)


def test_cpu_keys_accept_available_cpus_and_a_remote_cluster_defers():
    cfg = load_config(overrides=[f"cluster.sampler_cpus=[{CPUS[0]}]", f"cluster.learner_cpus=[{CPUS[-1]}]"])
    assert cfg.cluster.sampler_cpus == [CPUS[0]] and cfg.cluster.learner_cpus == [CPUS[-1]]
    # on a remote cluster the actors run elsewhere: only the actor itself can tell
    load_config(overrides=["cluster.address=10.0.0.1:6379", "cluster.learner_cpus=[4096]"])


def test_pin_process_moves_every_thread_and_names_the_key():
    import threading

    from gdro_ray.utils.affinity import pin_process, thread_affinities

    before = os.sched_getaffinity(0)
    stop = threading.Event()
    th = threading.Thread(target=stop.wait)  # started before pinning: must be moved too
    th.start()
    try:
        assert pin_process([CPUS[0]], "cluster.sampler_cpus") == [CPUS[0]]
        assert all(mask == [CPUS[0]] for mask in thread_affinities())
        with pytest.raises(ValueError, match=r"cluster.sampler_cpus: .*CPUs \[4096\]"):
            pin_process([4096], "cluster.sampler_cpus")
        # a pinned process can be widened again (the check is what the kernel grants, not the mask)
        assert pin_process(CPUS, "cluster.sampler_cpus") == CPUS
    finally:
        stop.set()
        th.join()
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), before)
            except ProcessLookupError:  # a thread of an earlier test ended meanwhile (seen once)
                pass


@pytest.mark.slow
@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs to pin samplers and learner apart")
def test_trainer_pins_samplers_and_learner_apart(tmp_path):
    """build_trainer with the keys set: every thread of every sampler and learner rank sits on its CPU."""
    import ray
    from _tiny import save_tiny

    from gdro_ray.service.build import build_trainer
    from gdro_ray.utils.affinity import thread_affinities

    tiny = save_tiny(tmp_path / "model", seed=0)
    s_cpu, l_cpu = CPUS[0], CPUS[1]
    cfg = load_config(overrides=[f"model.path={tiny}", "sampler.engine=hf", "sampler.num_samplers=2",
                                 "learner.world_size=2", "data.eval=dapo-fixture", "data.max_prompts=64",
                                 "metrics.enabled=false", f"cluster.sampler_cpus=[{s_cpu}]",
                                 f"cluster.learner_cpus=[{l_cpu}]", f"out={tmp_path / 'run'}"])
    trainer = None
    try:
        trainer = build_trainer(cfg, tmp_path / "run")
        samplers = [m.actor for m in trainer.pool.members.values()]
        assert [m.info.cpu_affinity for m in trainer.pool.members.values()] == [[s_cpu]] * 2
        assert [i.cpu_affinity for i in trainer.learner.infos()] == [[l_cpu]] * 2
        # every thread, read inside the actor process (Ray's own threads included)
        read = lambda self: thread_affinities()  # noqa: E731
        for actor, cpu in [(a, s_cpu) for a in samplers] + [(w, l_cpu) for w in trainer.learner.workers]:
            masks = ray.get(actor.__ray_call__.remote(read))
            assert masks and all(m == [cpu] for m in masks), (cpu, masks)
    finally:
        if trainer is not None:
            trainer.shutdown()
        ray.shutdown()


@pytest.mark.slow
def test_the_config_reaches_the_samplers_and_ranks(tmp_path):
    """sampler.num_cpus and learner.num_cpus set the torch threads inside the actors (the sampler
    once ran 1 thread whatever it reserved: a 2-CPU sampler generated at 1-core speed); the
    learner's memory settings and the prompt format arrive where they act."""
    import ray
    from _tiny import save_tiny

    from gdro_ray.service.build import build_trainer

    tiny = save_tiny(tmp_path / "model", seed=0)
    cfg = load_config(overrides=[f"model.path={tiny}", "sampler.engine=hf", "sampler.num_samplers=1",
                                 "sampler.num_cpus=2", "learner.world_size=1", "learner.num_cpus=3",
                                 "learner.micro_batch=16", "learner.micro_batch_tokens=512",
                                 "learner.gradient_checkpointing=true", "prompt.system=Be brief.",
                                 "prompt.chat_template_kwargs.enable_thinking=false", "prompt.instruction=",
                                 "data.eval=dapo-fixture", "data.max_prompts=64", "metrics.enabled=false",
                                 f"out={tmp_path / 'run'}"])
    trainer = None
    try:
        trainer = build_trainer(cfg, tmp_path / "run")
        assert [m.info.torch_threads for m in trainer.pool.members.values()] == [2]
        info = trainer.learner.infos()[0]
        assert info.torch_threads == 3
        # the learner's memory settings reach the rank (and the model really recomputes activations)
        assert (info.micro_batch, info.micro_batch_tokens, info.gradient_checkpointing) == (16, 512, True)
        # the prompt format reaches the samplers' engines; the prompts lost their instruction
        sampler = next(iter(trainer.pool.members.values())).actor
        fmt = ray.get(sampler.__ray_call__.remote(lambda self: self.engine.prompt_format))
        assert (fmt.system, fmt.chat_template_kwargs) == ("Be brief.", {"enable_thinking": False})
        assert all(ex["prompt"] == ex["problem"] for ex in trainer.train)
    finally:
        if trainer is not None:
            trainer.shutdown()
        ray.shutdown()
