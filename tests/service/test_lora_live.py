"""LoRA end to end: the embedded toy run with `learner.lora.rank=8` (Ray actors, a vLLM sampler,
two FSDP2 learner ranks) trains, its sampler serves the merged weights at the learner's version,
and the checkpoint's merged folder loads in plain transformers."""

from __future__ import annotations

import json

import pytest

from gdro_ray.protocol import Shard

pytestmark = pytest.mark.slow


def test_lora_run_publishes_merged_weights_and_checkpoints_them(tmp_path):
    import ray
    import torch
    from _tiny import hf_greedy
    from peft import PeftModel
    from safetensors.torch import load as st_load
    from transformers import AutoModelForCausalLM

    from gdro_ray.config import load_config
    from gdro_ray.service.build import build_trainer
    from gdro_ray.transfer.rollout_arrays import responses_of

    cfg = load_config(
        overrides=[
            "model.path=toy",
            "algorithm=both",
            "steps=2",
            "batch_size=8",
            "sampler.num_samplers=1",
            "learner.world_size=2",
            "learner.lora.rank=8",
            # LoRA's usual step size, large enough that the merged policy's greedy text differs from the base's
            "learner.lr=1e-3",
            "data.eval=dapo-fixture",
            "eval.k=1",
            f"out={tmp_path / 'run'}",
        ]
    )
    trainer = build_trainer(cfg, tmp_path / "run")
    try:
        versions = []
        for _ in range(2):
            trainer.run_step()
            versions.append(trainer.version)  # advances only with an optimizer step
        assert versions == [1, 2]
        trainer.publish_weights()
        trainer.save_checkpoint()
        ckpt = tmp_path / "run" / "checkpoints" / (tmp_path / "run" / "checkpoints" / "latest").read_text().strip()
        learner = ckpt / "learner"
        assert json.loads((learner / "learner_state.json").read_text())["lora"]["rank"] == 8

        # the merged folder: plain transformers loads it, and it is what the learner publishes
        published = st_load(trainer.learner.state_dict_bytes())
        merged = AutoModelForCausalLM.from_pretrained(learner, dtype=torch.float32).state_dict()
        for key, value in published.items():
            assert torch.equal(merged[key].to(value.dtype), value), key
        start = AutoModelForCausalLM.from_pretrained(trainer.parts.model_path, dtype=torch.float32).state_dict()
        assert any(not torch.equal(merged[k], start[k]) for k in start)  # the adapters moved the merge
        # the adapter alone, on the base, in peft
        on_base = (
            PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(trainer.parts.model_path, dtype=torch.float32), str(learner / "adapter"))
            .merge_and_unload()
            .state_dict()
        )
        for key in merged:
            assert torch.allclose(on_base[key], merged[key], atol=1e-6, rtol=0), key

        # the sampler serves those weights, at the learner's version
        prompts = [trainer.train[i]["prompt"] for i in range(4)]
        want = hf_greedy(learner, prompts, max_new_tokens=16)
        assert want != hf_greedy(trainer.parts.model_path, prompts, max_new_tokens=16)  # so the check tells them apart
        shard = Shard(shard_id=0, slots=[0, 1, 2, 3], prompts=prompts, answers=["0"] * 4, n=[1] * 4, max_new_tokens=16, temperature=0.0, top_p=1.0, seed=0)
        (out,) = trainer.pool.run([shard])
        assert out.weights_version == trainer.version == 2
        got = [responses_of(r)[0].tolist() for r in sorted(out.results, key=lambda r: r.slot)]
        assert [g[: len(w)] for g, w in zip(got, want)] == want
    finally:
        trainer.shutdown()
        ray.shutdown()
