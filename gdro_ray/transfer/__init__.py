"""The two byte planes: how rollouts and weights travel as arrays, never through the driver.

- `rollout_arrays`: a prompt's rollouts as flat int32/float32 arrays in Ray's object store,
  and which rows (and so which objects) each learner rank fetches. numpy only.
- `weight_arrays`: a state dict as one flat buffer plus a manifest, for the object store.
- `weight_group`: the collective group (NCCL on GPUs) that broadcasts weights from learner
  rank 0 to the samplers.

What moves when is decided above them: `service/weight_transport.py` (weights) and the driver's
step (`service/step_batch.py`, rollouts).
"""
