"""Weight publication through the object store: safetensors bytes against shared numpy arrays.

A real FSDP2 learner group (world size 1, no reference model) and a real sampler pool
(`--samplers` actors with the `--engine` engine) on one node, the model `--model` (default
SmolLM2-135M, fp32 as its preset runs). Each repeat publishes a new version both ways,
alternating which goes first:
- `bytes`: the earlier path — rank 0 serialises the full state dict to safetensors
  bytes, the driver receives them and `ray.put`s them, every sampler gets a private copy of the
  bytes, parses them and loads the tensors;
- `arrays`: `ObjectStoreTransport.publish` now — rank 0 returns the state dict as numpy arrays
  in the published dtype into the object store, the driver passes the reference on, every
  sampler reads the same shared memory and copies only into its own weights.
After each publish every sampler's weight checksum must have changed and agree with the others'
(tests/service/test_service.py checks the samplers' greedy output against transformers on the learner's
weights after publishes through the arrays path).

Prints seconds per publish (median) and the ratio; writes benchmarks/out/publish.json.

    python benchmarks/publish.py [--model smollm2] [--engine vllm] [--samplers 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--samplers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)

    import ray

    from gdro_ray.models.registry import resolve_model_path
    from gdro_ray.service.learner_group import LearnerGroup
    from gdro_ray.service.sampler_pool import SamplerPool
    from gdro_ray.service.weight_transport import ObjectStoreTransport
    from gdro_ray.transfer.rollout_arrays import pack_batch

    model = str(resolve_model_path(a.model))
    ray.init(address="local", num_cpus=a.samplers + 2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {k: os.environ[k] for k in ("TMPDIR", "HF_HUB_OFFLINE", "HF_HOME",
                                                                    "VLLM_ENABLE_V1_MULTIPROCESSING",
                                                                    "VLLM_CPU_KVCACHE_SPACE", "RAY_AUTH_MODE",
                                                                    "GDRO_RAY_CACHE") if k in os.environ}})
    learner = LearnerGroup(1, model, 1e-3, 0.0, 1.0, 8, "gloo", a.dtype, {"kl_coef": 0.0}, 0)
    kw = {"max_model_len": 512} if a.engine == "vllm" else {}
    pool = SamplerPool(model, a.engine, a.dtype, 0, "01", 2.0, max_samplers=a.samplers, service_kwargs=kw)
    pool.resize(a.samplers)
    assert pool.wait_ready(a.samplers, timeout_s=900) == a.samplers
    transport = ObjectStoreTransport(learner, pool)
    # a few tokens of training between publishes, so every version differs
    batch = pack_batch({"prompt_token_ids": [[1, 2, 3]] * 2, "response_token_ids": [[4, 5], [6]],
                        "advantages": [1.0, -1.0], "prompt_index": [0, 0]})

    def checksums() -> list[float]:
        # vLLM-CPU's checksum covers embeddings, norms and the LM head only (vllm_ext.py), so it is
        # compared between samplers and across versions, not with the learner's full sum
        return ray.get([m.actor.weights_checksum.remote() for m in pool.members.values()])

    times = {"bytes": [], "arrays": []}
    nbytes = {}
    version, last = 0, checksums()
    for r in range(a.repeats):
        for path in (("bytes", "arrays") if r % 2 == 0 else ("arrays", "bytes")):
            learner.train_step(batch)
            version += 1
            t0 = time.perf_counter()
            if path == "bytes":
                blob = learner.state_dict_bytes()
                pool.publish(blob, version)
                nbytes[path] = len(blob)
                del blob
            else:
                nbytes[path] = transport.publish(version)["nbytes"]
            times[path].append(time.perf_counter() - t0)
            now = checksums()
            assert len(set(now)) == 1 and now[0] != last[0], f"{path}: the samplers did not all take the new weights"
            last = now
            print(f"repeat {r} {path:6s} {times[path][-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{a.model} {a.dtype}, {a.samplers} {a.engine} samplers, {nbytes['arrays'] / 2**20:.0f} MiB: "
          f"bytes {med['bytes']:.2f} s, arrays {med['arrays']:.2f} s, arrays/bytes {med['arrays'] / med['bytes']:.2f}×")
    out = ROOT / "benchmarks" / "out" / "publish.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(a), "seconds": times, "median_s": med, "nbytes": nbytes}, indent=1))
    pool.shutdown()
    learner.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
