"""The data plane: rollouts travel as compact arrays in Ray's object store, never through the driver.

A sampler returns two objects per prompt (Ray return values, so the driver owns them and they
outlive the sampler process): the *group* — the prompt's token ids and the concatenated response
token ids as int32 with their offsets — and the engine's per-token log-probs as float32 on the
same offsets. They are separate because only off-policy training reads the log-probs: an
on-policy rank fetches token ids alone. The driver keeps only the object references and small
per-prompt metadata (rewards, lengths).

The driver's learner batch (`gdro_ray.protocol.LearnerBatch`) then holds, per response row, only scalars
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
from gdro_ray.protocol import LearnerBatch, PromptRollouts


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


def prompt_rollouts(slot: int, rewards: Sequence[float], prompt_ids: Sequence[int],
                    responses: Sequence[Sequence[int]], logprobs: Sequence[Sequence[float]],
                    truncated: int = 0) -> PromptRollouts:
    """One prompt's `PromptRollouts` with its arrays inline (a sampler, before Ray separates them);
    `truncated`: how many responses hit the token limit."""
    group, logp = pack_group(prompt_ids, responses, logprobs)
    return PromptRollouts(slot=int(slot), rewards=[float(r) for r in rewards], prompt_len=len(prompt_ids),
                          response_lens=[len(r) for r in responses], nbytes=group_nbytes(group),
                          logprob_nbytes=int(logp.nbytes), truncated=int(truncated), group=group, logprobs=logp)


def pack_batch(rows: dict) -> LearnerBatch:
    """A `LearnerBatch` with its arrays inline from a batch given row by row (`prompt_token_ids`,
    `response_token_ids`, `advantages`, `prompt_index`; optional `signal_advantages` and
    `old_logprobs`, which makes it an off-policy batch): how tests and benchmarks hand the learner
    group a batch they made up. One group per prompt index, in order of first appearance."""
    index = [int(i) for i in rows["prompt_index"]]
    olds = rows.get("old_logprobs")
    order = list(dict.fromkeys(index))
    members: dict[int, list[int]] = {p: [] for p in order}
    for r, p in enumerate(index):
        members[p].append(r)
    batch = LearnerBatch(sampler_logprobs=olds is not None)
    where = {}
    for g, p in enumerate(order):
        rs = members[p]
        resp = [rows["response_token_ids"][r] for r in rs]
        group, logp = pack_group(rows["prompt_token_ids"][rs[0]], resp,
                                 [olds[r] for r in rs] if olds is not None else [[0.0] * len(x) for x in resp])
        batch.groups.append(group)
        batch.logprob_groups.append(logp)
        batch.group_nbytes.append(group_nbytes(group) + (int(logp.nbytes) if olds is not None else 0))
        where.update({r: (g, j) for j, r in enumerate(rs)})
    for r, p in enumerate(index):
        g, j = where[r]
        batch.group.append(g)
        batch.member.append(j)
        batch.prompt_lengths.append(len(rows["prompt_token_ids"][r]))
        batch.response_lengths.append(len(rows["response_token_ids"][r]))
        batch.advantages.append(float(rows["advantages"][r]))
        batch.signal_advantages.append(float((rows.get("signal_advantages") or rows["advantages"])[r]))
        batch.prompt_index.append(p)
    return batch


def responses_of(res: PromptRollouts) -> list[np.ndarray]:
    """Each response's token ids of one prompt's rollouts (its arrays fetched if they are references)."""
    group = _resolve([res.group])[0]
    return [response_of(group, j)[0] for j in range(len(group["offsets"]) - 1)]


def response_of(group: dict, j: int, logprobs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Response j's token ids and, given the group's log-probs, its log-probs (views, no copy)."""
    a, b = int(group["offsets"][j]), int(group["offsets"][j + 1])
    return group["tokens"][a:b], None if logprobs is None else logprobs[a:b]


def rank_rows(prompt_index: Sequence[int], mini_batches: int, rank: int, world_size: int) -> list[int]:
    """The rows learner `rank` trains: its contiguous share (`rank_slice`) of every mini-batch of
    `mini_batch_partition`, in order. The worker slices exactly so (`LearnerWorker._micro_batches`)."""
    out: list[int] = []
    for part in mini_batch_partition(prompt_index, mini_batches):
        out.extend(part[i] for i in rank_slice(len(part), rank, world_size))
    return out


def groups_of_rows(group: Sequence[int], rows: Sequence[int]) -> list[int]:
    """Indices (into the batch's `groups`) of the groups holding `rows`, sorted; `group`: each row's group."""
    return sorted({int(group[i]) for i in rows})


def split_for_ranks(batch: LearnerBatch, mini_batches: int, world_size: int) -> tuple[dict, list[dict]]:
    """The batch's per-row part (`LearnerBatch.rows`, the same small part for every rank) and, per
    rank, {group index: (group reference, log-probs reference or None)} of the groups that rank
    needs; the log-probs only when the learner trains against them (`sampler_logprobs`)."""
    per_rank = []
    for r in range(world_size):
        need = groups_of_rows(batch.group, rank_rows(batch.prompt_index, mini_batches, r, world_size))
        per_rank.append({g: (batch.groups[g], batch.logprob_groups[g] if batch.sampler_logprobs else None)
                         for g in need})
    return batch.rows(), per_rank


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
    """A rank's working batch from the per-row part of a `LearnerBatch`: token ids (and, with
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
    """(prompt lengths, response lengths) of every row of a rank's working batch: the given
    lengths, or those of the token lists (a batch built in process, without a `LearnerBatch`)."""
    if "response_lengths" in batch:
        return [int(x) for x in batch["prompt_lengths"]], [int(x) for x in batch["response_lengths"]]
    return [len(p) for p in batch["prompt_token_ids"]], [len(r) for r in batch["response_token_ids"]]
