"""The data plane: rollouts travel as compact arrays in Ray's object store, never through the driver.

A sampler returns two objects per prompt (Ray return values, so the driver owns them and they
outlive the sampler process): the *group* — the prompt's token ids and the concatenated response
token ids as int32 with their offsets — and the engine's per-token log-probs as float32 on the
same offsets. They are separate because only off-policy training reads the log-probs: an
on-policy rank fetches token ids alone. The driver keeps only the object references and small
per-prompt metadata (rewards, lengths).

The driver's learner batch (`compact` form) then holds, per response row, only scalars
(advantages, prompt index, prompt and response length, which group and which member of it) and
one reference per trained group. Each learner rank works out which rows it will touch
(`rank_rows`: its contiguous share of every PPO mini-batch, the same rule the worker trains
with), fetches only the groups holding them and fills in token ids for those rows alone
(`materialise`). The other rows keep their lengths, which is all a rank needs to plan every
rank's micro-batches and the global token counts.

numpy only here (Ray is imported lazily, to resolve references), so the sampler, the driver, the
learner and the benchmarks share these functions.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdro_ray.algorithms.partition import mini_batch_partition, rank_slice

# Keys of the compact batch besides the ones the list-form batch also has.
COMPACT_KEYS = ("groups", "logprob_groups", "group", "member", "prompt_lengths", "response_lengths")


def pack_group(prompt_ids: Sequence[int], responses: Sequence[Sequence[int]],
               logprobs: Sequence[Sequence[float]]) -> tuple[dict, np.ndarray]:
    """One prompt's rollouts as flat arrays: the group (`tokens[offsets[j]:offsets[j+1]]` is
    response j) and the log-probs on the same offsets."""
    lens = np.fromiter((len(r) for r in responses), dtype=np.int64, count=len(responses))
    offsets = np.zeros(len(responses) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    total = int(offsets[-1])
    tokens = np.fromiter((t for r in responses for t in r), dtype=np.int32, count=total)
    logp = np.fromiter((x for lp in logprobs for x in lp), dtype=np.float32, count=total)
    return {"prompt": np.asarray(prompt_ids, dtype=np.int32), "tokens": tokens, "offsets": offsets}, logp


def group_nbytes(group: dict) -> int:
    return int(sum(a.nbytes for a in group.values()))


def response_of(group: dict, j: int, logprobs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Response j's token ids and, given the group's log-probs, its log-probs (views, no copy)."""
    a, b = int(group["offsets"][j]), int(group["offsets"][j + 1])
    return group["tokens"][a:b], None if logprobs is None else logprobs[a:b]


def is_compact(batch: dict) -> bool:
    return "groups" in batch


def rank_rows(prompt_index: Sequence[int], mini_batches: int, rank: int, world_size: int) -> list[int]:
    """The rows learner `rank` trains: its contiguous share (`rank_slice`) of every mini-batch of
    `mini_batch_partition`, in order. The worker slices exactly so (`LearnerWorker._micro_batches`)."""
    out: list[int] = []
    for part in mini_batch_partition(prompt_index, mini_batches):
        out.extend(part[i] for i in rank_slice(len(part), rank, world_size))
    return out


def groups_of_rows(batch: dict, rows: Sequence[int]) -> list[int]:
    """Indices (into batch["groups"]) of the groups holding `rows`, sorted."""
    group = batch["group"]
    return sorted({int(group[i]) for i in rows})


def split_for_ranks(batch: dict, mini_batches: int, world_size: int) -> tuple[dict, list[dict]]:
    """The compact batch without its references (the same small part for every rank) and, per
    rank, {group index: (group reference, log-probs reference or None)} of the groups that rank
    needs; the log-probs only when the learner trains against them (`sampler_logprobs`)."""
    meta = {k: v for k, v in batch.items() if k not in ("groups", "logprob_groups")}
    refs, lps = batch["groups"], batch.get("logprob_groups")
    with_logprobs = bool(batch.get("sampler_logprobs"))
    per_rank = []
    for r in range(world_size):
        need = groups_of_rows(batch, rank_rows(batch["prompt_index"], mini_batches, r, world_size))
        per_rank.append({g: (refs[g], lps[g] if with_logprobs else None) for g in need})
    return meta, per_rank


def _resolve(values: list) -> list:
    """The values, with every Ray reference among them fetched in one batched call."""
    at = [i for i, v in enumerate(values) if v is not None and not isinstance(v, (dict, np.ndarray))]
    if not at:
        return list(values)
    import ray

    got = ray.get([values[i] for i in at])
    out = list(values)
    for i, v in zip(at, got):
        out[i] = v
    return out


def materialise(batch: dict, groups: dict, rows: Sequence[int]) -> tuple[dict, int]:
    """The worker's list-form batch from the compact one: token ids (and, with
    `sampler_logprobs`, the samplers' log-probs as `old_logprobs`) for `rows`, None for the
    others; lengths for every row. `groups` is this rank's part of `split_for_ranks`. Returns
    the batch and the bytes fetched."""
    keys = list(groups)
    flat = _resolve([x for k in keys for x in groups[k]])
    fetched = {k: (flat[2 * i], flat[2 * i + 1]) for i, k in enumerate(keys)}
    n = len(batch["prompt_index"])
    prompts: list = [None] * n
    responses: list = [None] * n
    olds: list | None = [None] * n if batch.get("sampler_logprobs") else None
    for i in rows:
        g, lps = fetched[int(batch["group"][i])]
        prompts[i] = g["prompt"]
        responses[i], lp = response_of(g, int(batch["member"][i]), lps)
        if olds is not None:
            olds[i] = lp
    out = {k: v for k, v in batch.items() if k not in ("group", "member", "sampler_logprobs", "group_nbytes")}
    out.update(prompt_token_ids=prompts, response_token_ids=responses, old_logprobs=olds)
    nbytes = sum(group_nbytes(g) + (0 if lp is None else lp.nbytes) for g, lp in fetched.values())
    return out, nbytes


def row_lengths(batch: dict) -> tuple[list[int], list[int]]:
    """(prompt lengths, response lengths) of every row, from the compact keys or the lists."""
    if "response_lengths" in batch:
        return [int(x) for x in batch["prompt_lengths"]], [int(x) for x in batch["response_lengths"]]
    return [len(p) for p in batch["prompt_token_ids"]], [len(r) for r in batch["response_token_ids"]]
