"""Turn the learner's list-of-lists batch into padded micro-batch tensors.

A response j of prompt p is laid out as one sequence `prompt ++ response`, right-padded.
The causal LM's logits at position t predict token t + 1, so the log-prob of response token k
(at absolute position len(prompt) + k) is read from logits position len(prompt) + k − 1.
Only positions from `start = min(len(prompt)) − 1` on can hold a response token, so the
model is asked for the last `keep = T − start` logits only (HF `logits_to_keep`), and targets,
mask and old log-probs live on that trimmed, shifted grid: column c is position start + c,
`targets[:, c] = ids[:, start + c + 1]`, `mask[b, c] = 1` exactly on response tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gdro_ray.transfer.rollout_arrays import row_lengths

REQUIRED_KEYS = ("prompt_token_ids", "response_token_ids", "advantages", "prompt_index")


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # [B, T] right-padded prompt ++ response
    attention_mask: torch.Tensor  # [B, T] 1 on real tokens
    start: int  # first logits position kept
    keep: int  # logits_to_keep = T − start
    targets: torch.Tensor  # [B, keep − 1] = input_ids[:, start + 1:]
    mask: torch.Tensor  # [B, keep − 1] 1 where the target is a response token
    old_logp: torch.Tensor | None  # [B, keep − 1] sampler log-probs on the same grid, else None
    advantages: torch.Tensor  # [B] weighted
    signal_advantages: torch.Tensor  # [B] unweighted
    rows: list[int]  # indices of these sequences in the full batch
    seq_weights: torch.Tensor | None = None  # [B] loss weight per sequence (grpo.sequence_loss_weights)


def validate_batch(batch: dict) -> int:
    """Check the batch's shape contract; return the number of responses. Rows whose token ids
    are None belong to other ranks (a materialised compact batch); their lengths are given."""
    missing = [k for k in REQUIRED_KEYS if k not in batch]
    if missing:
        raise ValueError(f"learner batch lacks keys {missing}")
    n = len(batch["response_token_ids"])
    for key in ("prompt_token_ids", "advantages", "prompt_index", "prompt_lengths", "response_lengths"):
        if batch.get(key) is not None and len(batch[key]) != n:
            raise ValueError(f"learner batch: len({key})={len(batch[key])} != {n} responses")
    if batch.get("signal_advantages") is not None and len(batch["signal_advantages"]) != n:
        raise ValueError(f"learner batch: len(signal_advantages) != {n} responses")
    prompt_lens, response_lens = row_lengths(batch)
    for i, (p, r) in enumerate(zip(batch["prompt_token_ids"], batch["response_token_ids"])):
        if p is not None and (len(p) != prompt_lens[i] or len(r) != response_lens[i]):
            raise ValueError(f"learner batch: response {i}'s token ids disagree with its lengths")
    old = batch.get("old_logprobs")
    if old is not None:
        if len(old) != n:
            raise ValueError(f"learner batch: len(old_logprobs)={len(old)} != {n} responses")
        for i, lp in enumerate(old):
            if lp is not None and len(lp) != response_lens[i]:
                raise ValueError(f"learner batch: response {i} has {response_lens[i]} tokens but {len(lp)} old log-probs")
    for i, p in enumerate(prompt_lens):
        if p == 0:
            raise ValueError(f"learner batch: response {i} has an empty prompt (need ≥ 1 token to predict from)")
    return n


def plan_micro_batches(batch: dict, rows: list[int], micro_batch: int, max_tokens: int = 0) -> list[list[int]]:
    """Split `rows` (in order) into micro-batches of at most `micro_batch` sequences and, when
    `max_tokens` > 0, at most `max_tokens` padded tokens (rows × longest sequence); a single
    longer sequence still gets its own micro-batch."""
    chunks: list[list[int]] = []
    current: list[int] = []
    longest = 0
    prompt_lens, response_lens = row_lengths(batch)
    for i in rows:
        length = prompt_lens[i] + response_lens[i]
        grown = max(longest, length)
        too_many = len(current) >= micro_batch
        too_long = max_tokens > 0 and (len(current) + 1) * grown > max_tokens
        if current and (too_many or too_long):
            chunks.append(current)
            current, grown = [], length
        current.append(i)
        longest = grown
    if current:
        chunks.append(current)
    return chunks


def build_micro_batch(batch: dict, rows: list[int], pad_id: int, device: torch.device) -> MicroBatch:
    prompts = [batch["prompt_token_ids"][i] for i in rows]
    responses = [batch["response_token_ids"][i] for i in rows]
    olds = batch.get("old_logprobs")
    signal = batch.get("signal_advantages")
    seq_len = max(2, max(len(p) + len(r) for p, r in zip(prompts, responses)))
    start = min(len(p) for p in prompts) - 1
    width = seq_len - 1 - start
    b = len(rows)
    ids = torch.full((b, seq_len), pad_id, dtype=torch.long)
    attn = torch.zeros((b, seq_len), dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.float32)
    old_logp = torch.zeros((b, width), dtype=torch.float32) if olds is not None else None
    for j, (p, r) in enumerate(zip(prompts, responses)):
        lp, lr = len(p), len(r)
        # as_tensor: the rows are lists or the int32/float32 arrays of a compact batch (no per-token Python)
        ids[j, :lp] = torch.as_tensor(p)
        if lr:
            ids[j, lp : lp + lr] = torch.as_tensor(r)
        attn[j, : lp + lr] = 1
        first = lp - 1 - start  # column of the first response token
        mask[j, first : first + lr] = 1.0
        # None: a row whose own detached forward is its behaviour policy (the first on-policy mini-batch)
        if old_logp is not None and lr and olds[rows[j]] is not None:
            old_logp[j, first : first + lr] = torch.as_tensor(olds[rows[j]], dtype=torch.float32)
    weighted = batch.get("advantages")  # absent when only log-probs are wanted
    adv = torch.tensor([float(weighted[i]) if weighted is not None else 0.0 for i in rows], dtype=torch.float32)
    sig = adv.clone() if signal is None else torch.tensor([float(signal[i]) for i in rows], dtype=torch.float32)
    weights = batch.get("loss_weights")  # set by the learner per mini-batch; absent → token mean
    seq_w = None if weights is None else torch.tensor([float(weights[i]) for i in rows], dtype=torch.float64)
    return MicroBatch(
        input_ids=ids.to(device),
        attention_mask=attn.to(device),
        start=start,
        keep=seq_len - start,
        targets=ids[:, start + 1 :].to(device),
        mask=mask.to(device),
        old_logp=None if old_logp is None else old_logp.to(device),
        advantages=adv.to(device),
        signal_advantages=sig.to(device),
        rows=list(rows),
        seq_weights=None if seq_w is None else seq_w.to(device),
    )


def dummy_micro_batch(device: torch.device) -> MicroBatch:
    """A one-sequence, zero-token micro-batch. A rank with fewer micro-batches than its peers
    runs these so every rank issues the same number of FSDP collectives (else they deadlock)."""
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    zeros = torch.zeros((1, 1), dtype=torch.float32, device=device)
    return MicroBatch(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        start=0,
        keep=2,
        targets=ids[:, 1:],
        mask=zeros,
        old_logp=None,
        advantages=torch.zeros(1, device=device),
        signal_advantages=torch.zeros(1, device=device),
        rows=[],
        seq_weights=torch.zeros(1, dtype=torch.float64, device=device),
    )
