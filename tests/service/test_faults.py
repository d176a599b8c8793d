"""Driver loss and node loss, each on its own Ray.

- The driver process (`gdro-ray train`, joined to a running Ray) is SIGKILLed after a
  checkpoint; `--resume` restores exactly the checkpoint's adversary state, the data order
  continues (the re-run steps get the schedules the killed run had drawn for them), and
  metrics.jsonl ends with every step once, in order.
- Multi-node on one machine (`ray.cluster_utils.Cluster`): samplers pinned to sampler nodes by
  a custom resource. Asking for more samplers than fit leaves one waiting for resources; a node
  that arrives places it and it joins; the node hosting a sampler is removed mid-run and the
  run goes on and completes; a node added later places the replacement.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _service import read_records, start_in_thread, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _overrides(model, run_dir, *extra) -> list[str]:
    return [f"model.path={model}", "algorithm=both", "batch_size=8", "budget_mean=4", "learner.world_size=1",
            "data.eval=dapo-fixture", "sampler.eval_k=1", "sampler.max_new_tokens=8", "sampler.shard_size=4",
            "sampler.engine=hf", f"out={run_dir}", *extra]


def test_driver_killed_after_a_checkpoint_resumes_exactly(tmp_path):
    import ray
    from _tiny import save_tiny

    from gdro_ray.config import load_config
    from gdro_ray.service.adversary_actor import ACTOR_NAME
    from gdro_ray.service.build import build_trainer
    from gdro_ray.service.checkpoint import latest_checkpoint, read_json

    model = save_tiny(tmp_path / "model", seed=0)
    run_dir = tmp_path / "run"
    ray.init(num_cpus=4, include_dashboard=False, namespace="gdro_ray", log_to_driver=False)
    try:
        gcs = ray.get_runtime_context().gcs_address
        steps = 9
        driver = subprocess.Popen(
            [sys.executable, "-m", "gdro_ray.cli.main", "train",
             *_overrides(model, run_dir, f"steps={steps}", "checkpoint.every=3", f"cluster.address={gcs}")],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            # kill once a checkpoint exists and at least one step after it is recorded
            def ready():
                latest = run_dir / "checkpoints" / "latest"
                if not latest.is_file():
                    return False
                done = int(latest.read_text().strip().removeprefix("step_"))
                return done < steps and len(read_records(run_dir)) > done

            wait_for(ready, 240, "a checkpoint and a step after it", alive=lambda: driver.poll() is None)
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(30)
        finally:
            if driver.poll() is None:
                driver.kill()
        ckpt = latest_checkpoint(run_dir)
        at = read_json(ckpt / "driver.json")["step"]
        ckpt_state = read_json(ckpt / "adversary.json")  # (the resumed run rotates old checkpoints out)
        before = read_records(run_dir)
        assert len(before) > at and at < steps

        # the killed driver's actors (owned by it) go away, its adversary's name with them
        def gone():
            try:
                ray.get_actor(ACTOR_NAME, namespace="gdro_ray")
                return False
            except ValueError:
                return True

        wait_for(gone, 60, "the killed job's actors to be cleaned up")

        cfg = load_config(run_dir / "config.yaml")
        trainer = build_trainer(cfg, run_dir, resume=True)  # the latest checkpoint, restored
        restored = {"state": ray.get(trainer.adversary.state_dict.remote()), "step": trainer.step}
        trainer.run()

        assert restored["step"] == at
        # (compared as canonical JSON: NaN marks empty bins, and NaN != NaN)
        assert json.dumps(restored["state"], sort_keys=True) == json.dumps(ckpt_state, sort_keys=True)
        after = read_records(run_dir)
        assert [r["step"] for r in after] == list(range(steps))  # trimmed and continued: no gap, no repeat
        assert after[:at] == before[:at]                        # what the checkpoint covers is kept as is
        redone = range(at, len(before))
        assert [after[s]["schedule_digest"] for s in redone] == [before[s]["schedule_digest"] for s in redone]
        assert [after[s]["epoch"] for s in redone] == [before[s]["epoch"] for s in redone]
    finally:
        ray.shutdown()


def test_nodes_arrive_and_leave_under_a_running_job(tmp_path):
    import ray
    from _tiny import save_tiny
    from ray.cluster_utils import Cluster

    from gdro_ray.config import load_config
    from gdro_ray.service.build import build_trainer
    from gdro_ray.service.scale import request_scale

    model = save_tiny(tmp_path / "model", seed=0)
    run_dir = tmp_path / "run"
    store = 200 * 1024**2
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"gdro_learner": 1, "gdro_adversary": 1}, "include_dashboard": False,
        "object_store_memory": store})

    def sampler_node():
        return cluster.add_node(num_cpus=1, resources={"gdro_sampler": 1}, object_store_memory=store)

    first = sampler_node()
    trainer = None
    try:
        ray.init(address=cluster.address, namespace="gdro_ray", log_to_driver=False)
        cfg = load_config(overrides=_overrides(
            model, run_dir, "steps=500", "sampler.num_samplers=1", "sampler.max_samplers=4", "checkpoint.every=0",
            "sampler.ray_resource=gdro_sampler", "learner.ray_resource=gdro_learner",
            "cluster.adversary_resource=gdro_adversary", f"cluster.address={cluster.address}"))
        trainer = build_trainer(cfg, run_dir)
        th, box = start_in_thread(trainer)
        alive = th.is_alive
        wait_for(lambda: len(read_records(run_dir)) >= 1, 180, "the first step", alive)

        # more samplers than fit: the second waits for resources, the run goes on with one
        request_scale(2)
        wait_for(lambda: trainer.pool.size() == 2, 30, "the scale request", alive)
        n = len(read_records(run_dir))
        wait_for(lambda: len(read_records(run_dir)) >= n + 3, 60, "three steps with a sampler waiting", alive)
        assert trainer.pool.pending() == 1 and read_records(run_dir)[-1]["samplers"] == 1
        # a node arrives (what the autoscaler does): the waiting sampler is placed and joins
        sampler_node()
        wait_for(lambda: any(r["samplers"] == 2 for r in read_records(run_dir)),
                 120, "the sampler on the new node", alive)

        # the node of the first sampler goes away mid-run
        first_ids = {sid for sid, m in trainer.pool.members.items() if m.info.node_id == first.node_id}
        cluster.remove_node(first)
        wait_for(lambda: trainer.pool.stats.deaths >= 1, 120, "the lost sampler to be noticed", alive)
        n = len(read_records(run_dir))
        wait_for(lambda: len(read_records(run_dir)) >= n + 3, 120, "three steps after the node loss", alive)
        assert read_records(run_dir)[-1]["samplers"] == 1 and trainer.pool.pending() == 1  # replacement waits
        # a node arrives again: the replacement is placed
        sampler_node()
        wait_for(lambda: read_records(run_dir)[-1]["samplers"] == 2, 120, "the replacement on the third node", alive)
        trainer.cfg.steps = trainer.step + 2  # and the run completes normally
        th.join(180)
        assert not th.is_alive() and "error" not in box, box.get("error")
        assert box["result"]["final"] is not None

        recs = read_records(run_dir)
        assert [r["step"] for r in recs] == list(range(len(recs)))
        for r in recs:
            assert (r["prompts"], r["rollouts"], r["staleness"]) == (8, 32, 0)
        counts = [r["samplers"] for r in recs]
        assert [k for k, _ in itertools.groupby(counts)] == [1, 2, 1, 2], counts
        assert recs[-1]["sampler_restarts"] == trainer.pool.stats.deaths >= 1
        assert first_ids and not first_ids & set(trainer.pool.members)
    finally:
        if trainer is not None and th.is_alive():
            trainer.cfg.steps = 0
            th.join(60)
        ray.shutdown()
        cluster.shutdown()
