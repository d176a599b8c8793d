"""The live service: a real trainer (Ray actors, vLLM samplers, FSDP2 learner) driven step by step.

Checks the adversary's /metrics endpoint against its own state, `gdro-ray status` and
`gdro-ray scale` against the live job, a real Prometheus scraping the run, and that every
step spends exactly its rollout budget.
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from _prom import HAVE_PROMETHEUS, prometheus

from gdro_ray.protocol import Shard
from gdro_ray.transfer.rollout_arrays import responses_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    import ray

    from gdro_ray.config import load_config
    from gdro_ray.service.build import build_trainer

    tmp = tmp_path_factory.mktemp("live")
    # The embedded default end to end: the prepared toy model (cached; built here if missing),
    # the toy task, 2 vLLM samplers and 2 FSDP2 learner ranks.
    cfg = load_config(overrides=["model.path=toy", "algorithm=both", "steps=3", "batch_size=8",
                                 "sampler.num_samplers=2", "learner.world_size=2", "data.eval=dapo-fixture",
                                 "sampler.eval_k=1", "metrics.samples_every=2", f"out={tmp / 'run'}"])
    trainer = build_trainer(cfg, tmp / "run")
    records = []
    for k in range(3):
        if k == 2:  # the last step with DAPO dynamic sampling: refill rounds through the real adversary
            trainer.cfg.grpo.filter_all_equal, trainer.cfg.grpo.max_refill_rounds = True, 2
        records.append(trainer.run_step().to_json())
    # Two one-step off-policy steps on the same actors: the first trains its rollouts against the
    # samplers' log-probs; in the second (max_staleness 0) the rollouts drawn one version back
    # while the first learned are refused and sampled again with the current weights.
    trainer.cfg.grpo.filter_all_equal, trainer.cfg.cluster.off_policy, trainer.cfg.steps = False, True, 5
    for k in range(2):
        trainer.cfg.cluster.max_staleness = 1 - k
        records.append(trainer.run_step().to_json())
    assert trainer.step == 5
    trainer.publish_weights()  # as the driver does after its loop: the samplers hold the final weights
    yield trainer, records
    trainer.shutdown()
    ray.shutdown()


def _scrape(address: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(address, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_step_spends_its_budget(live):
    trainer, records = live
    for r in records:
        assert 0 < r["response_len_mean"] <= r["response_len_max"] <= trainer.cfg.sampler.max_new_tokens
        assert 0.0 <= r["truncation_rate"] <= 1.0
        if r["rollouts_trained"]:
            assert r["entropy"] > 0  # the policy's, per response token
        # refill rounds add prompts, each round at the same mean budget n̄ per prompt
        assert r["prompts"] == 8 or r.get("refill_rounds", 0) > 0
        assert r["rollouts"] == r["prompts"] * r["budget_mean"] == r["rollouts_sampled"]
        assert sum(r["bin_rollouts"]) == r["rollouts"] and r["samplers"] == 2


def test_learner_ranks_fetch_only_their_rollouts(live):
    """Compact data plane: each of the 2 ranks took part of the trained rollouts' arrays from
    the object store (groups on a rank boundary go to both), none took all of them."""
    _, records = live
    for r in records:
        if r["rollouts_trained"] == 0:
            continue
        per_rank, total = r["rollout_bytes_per_rank"], r["rollout_bytes"]
        assert len(per_rank) == 2 and total > 0
        assert all(0 < b < total for b in per_rank) and sum(per_rank) >= total, (per_rank, total)


def test_each_learner_rank_reports_where_its_time_went(live):
    """learner_phase_s / learner_time_s / learner_cpu_s: one entry per rank, the phases inside
    the rank's step time (they do not cover it all: planning and bookkeeping are outside)."""
    _, records = live
    trained = [r for r in records if r["rollouts_trained"] > 0]
    assert trained
    for r in trained:
        phases, wall, cpu = r["learner_phase_s"], r["learner_time_s"], r["learner_cpu_s"]
        assert len(phases) == len(wall) == len(cpu) == 2
        for ph, w, c in zip(phases, wall, cpu):
            assert {"forward", "backward", "optimizer", "sync"} <= set(ph) and "reference" in ph  # KL on
            assert all(v >= 0 for v in ph.values()) and ph["forward"] > 0 and ph["backward"] > 0
            assert sum(ph.values()) <= w + 0.01 and c > 0


def test_ppo_ratio_and_dynamic_sampling_in_the_record(live):
    _, records = live
    for r in records[:2]:  # grpo.mini_batches = 2 by default: the ratio is exactly 1 only on the first
        assert r["optimizer_steps"] == len(r["updates"]) == 2
        first = r["updates"][0]
        assert first["ratio_min"] == first["ratio_max"] == 1.0 and first["clip_frac"] == 0.0
        assert r["rollouts_trained"] == r["rollouts_sampled"] and r["prompts_trained"] == 8
        assert "refill_rounds" not in r and r["stale_resampled"] is False
    off, stale = records[3], records[4]
    assert off["staleness"] == 0 and off["stale_resampled"] is False
    # the samplers' (vLLM) log-probs of the same weights: the ratio is 1 up to the engines' numerics,
    # which also checks that they sit on the same tokens as the learner's
    assert abs(off["updates"][0]["ratio_mean"] - 1.0) < 0.05
    assert stale["stale_resampled"] is True and stale["staleness"] == 0
    last = records[2]
    assert 0 <= last["refill_rounds"] <= 2 and last["prompts"] >= 8
    assert last["prompts_trained"] <= 8 and last["refill_short"] == (last["prompts_trained"] < 8)
    assert last["rollouts_trained"] <= last["rollouts_sampled"]
    assert last["prompts"] > 8 or last["refill_rounds"] == 0


def test_metrics_endpoint_equals_adversary_state(live):
    import ray

    trainer, records = live
    actor = trainer.adversary
    address = ray.get(actor.metrics_address.remote())
    assert address.startswith("http://127.0.0.1:")
    scraped = _scrape(address)
    st = ray.get(actor.status.remote())
    rec = st.record
    m = ray.get(actor.metrics.remote())
    assert scraped[("gdro_step", ())] == rec["step"] == records[-1]["step"]
    assert scraped[("gdro_shadow_price", ())] == pytest.approx(m["rollout_gdro"]["shadow_price"])
    assert scraped[("gdro_weights_version", ())] == st.weights_version == trainer.version
    assert scraped[("gdro_rollouts_total", ())] == sum(r["rollouts"] for r in records)
    labels = [str(i) for i in range(len(rec["bin_weights"]) - 1)] + ["unseen"]
    for i, lab in enumerate(labels):
        key = (("bin", lab),)
        assert scraped[("gdro_bin_weight", key)] == pytest.approx(rec["bin_weights"][i])
        assert scraped[("gdro_bin_prompts", key)] == rec["bin_prompts"][i]
        assert scraped[("gdro_bin_rollouts", key)] == rec["bin_rollouts"][i]
        assert scraped[("gdro_bin_score", key)] == pytest.approx(m["prompt_gdro"]["scores"][i])
    assert scraped[("gdro_samplers_live", ())] == 2
    assert scraped[("gdro_queue_shards", ())] == 0  # the pool's last report of each step: drained
    ray.get(actor.report_queue.remote(3))  # what the pool pushes while shards wait for samplers
    assert _scrape(address)[("gdro_queue_shards", ())] == 3
    ray.get(actor.report_queue.remote(0))
    with urllib.request.urlopen(address.replace("/metrics", "/health"), timeout=5) as r:
        assert json.loads(r.read())["ok"] is True


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_status_and_scale_against_the_live_job(live):
    import ray

    trainer, records = live
    gcs = ray.get_runtime_context().gcs_address
    p = _cli("status", "--address", gcs)
    assert p.returncode == 0, p.stderr
    assert "weight q" in p.stdout and f"step {records[-1]['step'] + 1}" in p.stdout
    assert "unseen" in p.stdout
    assert "the hardest bin's last sample:\nstep 4, " in p.stdout  # samples every 2 steps: the 4th is the last

    p = _cli("scale", "--samplers", "3", "--address", gcs)
    assert p.returncode == 0, p.stderr
    assert ray.get(trainer.adversary.get_desired_samplers.remote()) == 3
    p = _cli("scale", "--samplers", "99", "--address", gcs)
    assert p.returncode == 2 and "max_samplers" in p.stderr
    ray.get(trainer.adversary.request_samplers.remote(2))


def test_samples_show_decoded_responses_of_the_prompts_trained(live):
    """metrics.samples_every=2: after steps 2 and 4, one prompt per bin in play with its decoded
    responses (rewarded first) in samples.jsonl, and the newest ones at the adversary."""
    import ray

    from gdro_ray.metrics.samples import SampleLog

    trainer, records = live
    lines = SampleLog(trainer.run_dir).records()
    assert sorted({r["step"] for r in lines}) == [1, 3]
    for rec in lines:
        step = records[rec["step"]]
        assert rec["bin"] in [f"bin{b}" for b in range(len(step["bin_weights"]) - 1)] + ["unseen"]
        assert rec["prompt"] == trainer.train[rec["prompt_id"]]["prompt"]
        rewards = [r["reward"] for r in rec["responses"]]
        assert rewards == sorted(rewards, reverse=True) and 1 <= len(rewards) <= 4
        assert all(isinstance(r["text"], str) and 0 < r["tokens"] <= trainer.cfg.sampler.max_new_tokens
                   for r in rec["responses"])
    assert any(r["text"].strip() for rec in lines for r in rec["responses"])  # the tokens really were decoded
    bins = [rec["bin"] for rec in lines if rec["step"] == 3]
    assert len(bins) == len(set(bins))  # one prompt per bin
    newest = ray.get(trainer.adversary.status.remote()).samples
    assert [r.to_json() for r in newest] == [r for r in lines if r["step"] == 3]


@pytest.mark.skipif(not HAVE_PROMETHEUS, reason="prometheus not installed (apt-get install prometheus)")
def test_real_prometheus_scrapes_the_live_run(live, tmp_path):
    import ray

    trainer, records = live
    address = ray.get(trainer.adversary.metrics_address.remote())
    hostport = address.split("//")[1].split("/")[0]
    with prometheus(tmp_path, [hostport]) as query:
        query.wait_for("gdro_bin_weight", points=1)
        rec = ray.get(trainer.adversary.status.remote()).record
        got = {r["metric"]["bin"]: float(r["value"][1]) for r in query("gdro_bin_weight")}
        assert got["unseen"] == pytest.approx(rec["bin_weights"][-1])
        assert sum(got.values()) == pytest.approx(sum(rec["bin_weights"]))


def test_published_weights_drive_the_samplers(live, tmp_path):
    """After training steps, every sampler's fp32 greedy output equals transformers' on the learner's weights."""
    import shutil

    import ray
    import torch
    from _tiny import hf_greedy
    from safetensors.torch import load as st_load
    from safetensors.torch import load_file

    trainer, _ = live
    blob = trainer.learner.state_dict_bytes()
    learned = st_load(blob)
    base = load_file(str(Path(trainer.parts.model_path) / "model.safetensors"))
    assert any(not torch.equal(learned[k], base[k]) for k in base)  # the weights really changed
    folder = tmp_path / "learned"
    shutil.copytree(trainer.parts.model_path, folder)
    (folder / "model.safetensors").write_bytes(blob)
    prompts = [trainer.train[i]["prompt"] for i in range(4)]
    want = hf_greedy(folder, prompts, max_new_tokens=16)
    shards = [Shard(shard_id=i, slots=[0, 1, 2, 3], prompts=prompts, answers=["0"] * 4, n=[1] * 4,
                    max_new_tokens=16, temperature=0.0, top_p=1.0, seed=0) for i in range(2)]
    outs = trainer.pool.run(shards)
    assert {o.weights_version for o in outs} == {trainer.version}
    assert len({o.sampler_id for o in outs}) >= 1
    for o in outs:
        # the data plane: the slot carries lengths and a reference to its arrays, not the tokens
        res = sorted(o.results, key=lambda r: r.slot)
        assert all(isinstance(r.group, ray.ObjectRef) for r in res)
        got = [responses_of(r)[0].tolist() for r in res]
        assert [g[:len(w)] for g, w in zip(got, want)] == want
