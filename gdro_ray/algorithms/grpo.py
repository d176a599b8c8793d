"""GRPO math for variable group sizes (docs/algorithms.md). Pure torch/numpy: no Ray, no model.

Algorithm
---------
* Advantages. For one prompt group with rewards r_1..r_n (any n ≥ 2),
  A_j = (r_j − mean(r)) / (std(r) + ε) with the *population* std (divide by n), then clipped
  to [−adv_clip, adv_clip]. A group of size 1, or one whose rewards are all equal, carries no
  relative signal and gets all-zero advantages.
* Token log-probs. log π(token) = logit[token] − logsumexp(logits), computed in fp32 in
  bounded blocks, forward and backward, so a full fp32 [B, T, V] tensor is never materialised;
  the policy's entropy per position comes out of the same blocks when asked for.
* KL. The k3 estimator of KL(π‖π_ref) per token: exp(ref − logp) − (ref − logp) − 1 ≥ 0.
* Loss. Per token, with ρ = exp(logp − old_logp) and the clip-higher interval
  [1 − clip_low, 1 + clip_high]:
      ℓ_t = max(−A·ρ, −A·clip(ρ)) + kl_coef · k3_t
  aggregated by `loss_agg` (see `sequence_loss_weights`): each response r gets one weight w_r
  and the loss is Σ_r w_r Σ_t ℓ_rt, with Σ_r w_r·|o_r| = 1 over the (mini-)batch:
    - `token_mean`: w_r = 1 / (tokens in the batch). DAPO's token-level loss: a long response
      weighs more than a short one, and a prompt weighs by its n_i·(mean length).
    - `seq_mean_token_mean`: w_r = 1 / (|o_r| · responses). Every response weighs the same.
    - `prompt_mean`: w_r = 1 / (|o_r| · n_p · prompts). The paper's Eq. 17: the mean over a
      prompt's rollouts, then over prompts, so a prompt's weight does not grow with its n_i.
  A caller that splits a batch into micro-batches computes the weights over the whole batch
  (or passes the global token count as `num_tokens`) so the micro-batch losses sum to it.
* Mini-batches. `partition.mini_batch_partition` splits a batch into M parts along prompt
  boundaries (a prompt's group stays in one part), one optimizer step each (PPO's inner loop).
* Per-sequence surrogate (Prompt-GDRO's `surrogate` signal, the paper's loss signal): the token mean
  over one response of max(−A·ρ, −A·clip(ρ)) computed with the UNWEIGHTED advantage (before
  the adversary's multiplier) and without the KL term. It is a detached diagnostic.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gdro_ray.algorithms import signals

# exp() of a log-ratio beyond this is inf/0 in fp32 and only produces NaN gradients; a token
# this far off-policy is clipped anyway, so clamping the log-ratio changes no clipped value.
_MAX_LOG_RATIO = 20.0
# Above this magnitude a group's sum or squared deviations can overflow float64 (to inf, then NaN
# advantages); such a group is computed divided by its largest |r| (see `group_advantages`).
_SAFE_MAGNITUDE = 1e100


def group_advantages(
    rewards: Sequence[torch.Tensor | np.ndarray | Sequence[float]],
    eps: float = 1e-6,
    adv_clip: float = 5.0,
) -> list[torch.Tensor]:
    """Per-group normalised advantages, one fp32 tensor per group (same length as the group).

    One vectorised pass over all groups in fp64 (the same computation as the adversary's
    learnability signal, `signals.group_advantages`); a group whose rewards are all equal
    (including a group of one) centres to exactly 0, so its advantages are 0. A group with some
    |r| > 1e100 is computed as r/s with ε/s (s its largest |r|), which is the same quotient
    (r − m)/(σ + ε) without the overflow, so finite rewards never give NaN advantages.
    """
    if len(rewards) == 0:
        return []
    groups = [np.asarray(g.detach().cpu().numpy() if isinstance(g, torch.Tensor) else g, dtype=np.float64)
              for g in rewards]
    scale = [float(np.max(np.abs(g))) if g.size else 0.0 for g in groups]
    huge = {i for i, s in enumerate(scale) if _SAFE_MAGNITUDE < s < np.inf}
    per_group = signals.group_advantages([np.zeros_like(g) if i in huge else g for i, g in enumerate(groups)], eps=eps)
    for i in huge:
        per_group[i] = signals.group_advantages([groups[i] / scale[i]], eps=eps / scale[i])[0]
    adv = np.concatenate(per_group)
    flat = torch.from_numpy(np.clip(adv, -adv_clip, adv_clip).astype(np.float32))
    return list(torch.split(flat, [len(g) for g in groups]))


LOSS_AGGS = ("token_mean", "seq_mean_token_mean", "prompt_mean")


def sequence_loss_weights(lengths: Sequence[int], prompt_index: Sequence[int], loss_agg: str) -> np.ndarray:
    """Per-response weight w_r such that the batch loss is Σ_r w_r Σ_t ℓ_rt (see the module doc).

    Responses with no tokens get weight 0 and do not count as responses; a prompt counts if any
    of its responses has a token. The weights of the responses that have tokens satisfy
    Σ_r w_r·|o_r| = 1, so a constant per-token loss c aggregates to c under every rule.
    """
    if loss_agg not in LOSS_AGGS:
        raise ValueError(f"loss_agg: must be one of {', '.join(LOSS_AGGS)}, got {loss_agg!r}")
    lengths_arr = np.asarray(lengths, dtype=np.float64).reshape(-1)
    prompts = np.asarray(prompt_index, dtype=np.int64).reshape(-1)
    if prompts.size != lengths_arr.size:
        raise ValueError(f"sequence_loss_weights: {lengths_arr.size} lengths but {prompts.size} prompt indices")
    w = np.zeros(lengths_arr.size, dtype=np.float64)
    live = lengths_arr > 0
    if not live.any():
        return w
    if loss_agg == "token_mean":
        w[live] = 1.0 / lengths_arr[live].sum()
    elif loss_agg == "seq_mean_token_mean":
        w[live] = 1.0 / (lengths_arr[live] * live.sum())
    else:
        _, inverse, per_prompt = np.unique(prompts[live], return_inverse=True, return_counts=True)
        w[live] = 1.0 / (lengths_arr[live] * per_prompt[inverse] * per_prompt.size)
    return w


# Elements of fp32 scratch per block in token_logprobs (64 MiB): bounded whatever B, T and V.
_LOGPROB_BLOCK_ELEMS = 1 << 24


def _blocks(batch: int, length: int, vocab: int, budget: int):
    """(row slice, token slice) blocks of at most ~`budget` logits each."""
    if length * vocab <= budget:
        step = max(1, budget // max(1, length * vocab))
        for r in range(0, batch, step):
            yield slice(r, r + step), slice(0, length)
    else:
        step = max(1, budget // vocab)
        for r in range(batch):
            for t in range(0, length, step):
                yield slice(r, r + 1), slice(t, t + step)


class _TokenLogProb(torch.autograd.Function):
    """log_softmax(logits).gather(tokens) block by block. Saves only the logits (in their own
    dtype) and the fp32 log-partition per position, and recomputes softmax blocks in backward,
    so no fp32 [B, T, V] tensor ever exists (at V = 150k that would be tens of GB)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, tokens: torch.Tensor, budget: int, with_entropy: bool):
        b, t, v = logits.shape
        lse = torch.empty((b, t), dtype=torch.float32, device=logits.device)
        picked = torch.empty((b, t), dtype=torch.float32, device=logits.device)
        entropy = torch.zeros((b, t) if with_entropy else (0, 0), dtype=torch.float32, device=logits.device)
        for rows, cols in _blocks(b, t, v, budget):
            block = logits[rows, cols].float()
            lse[rows, cols] = torch.logsumexp(block, dim=-1)
            picked[rows, cols] = block.gather(-1, tokens[rows, cols].unsqueeze(-1)).squeeze(-1)
            if with_entropy:  # H = lse − Σ softmax·logits, while the block is at hand
                p = torch.exp(block - lse[rows, cols].unsqueeze(-1))
                entropy[rows, cols] = lse[rows, cols] - (p * block).sum(-1)
        ctx.save_for_backward(logits, tokens, lse)
        ctx.budget = budget
        ctx.mark_non_differentiable(entropy)
        return picked - lse, entropy

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _entropy_grad: torch.Tensor):
        logits, tokens, lse = ctx.saved_tensors
        b, t, v = logits.shape
        grad = grad.float()
        out = torch.empty((b, t, v), dtype=logits.dtype, device=logits.device)
        for rows, cols in _blocks(b, t, v, ctx.budget):
            g = grad[rows, cols].unsqueeze(-1)
            # d logp[token] / d logits = onehot(token) − softmax(logits)
            d = torch.exp(logits[rows, cols].float() - lse[rows, cols].unsqueeze(-1)).mul_(-g)
            d.scatter_add_(-1, tokens[rows, cols].unsqueeze(-1), g)
            out[rows, cols] = d.to(out.dtype)
        return out, None, None, None


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, block_elems: int = _LOGPROB_BLOCK_ELEMS) -> torch.Tensor:
    """log-prob of `tokens[b, t]` under `logits[b, t]` (already aligned), fp32, shape [B, T].

    Equal to log_softmax(logits.float()).gather(tokens), computed in blocks of about
    `block_elems` logits so fp32 scratch stays bounded; differentiable w.r.t. `logits`.
    """
    return token_logprobs_and_entropy(logits, tokens, block_elems, with_entropy=False)[0]


def token_logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor, block_elems: int = _LOGPROB_BLOCK_ELEMS,
                               with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`token_logprobs`, and the policy's entropy −Σ p log p at every position (fp32 [B, T],
    detached), computed in the same blocks: one more exp over each block of logits."""
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} are not aligned")
    if tokens.numel() == 0:
        zeros = logits.new_zeros(tokens.shape, dtype=torch.float32)
        return zeros, (zeros if with_entropy else None)
    logp, entropy = _TokenLogProb.apply(logits, tokens, int(block_elems), bool(with_entropy))
    return logp, (entropy if with_entropy else None)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π‖π_ref): exp(d) − d − 1 with d = ref_logp − logp (≥ 0)."""
    d = (ref_logp - logp).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    return torch.exp(d) - d - 1.0


def _clipped_surrogate(adv: torch.Tensor, ratio: torch.Tensor, clip_low: float, clip_high: float):
    """Per-token max(−A·ρ, −A·clip(ρ)) and the mask of tokens where the clipped branch wins."""
    a = adv.unsqueeze(-1)
    unclipped = -a * ratio
    clipped = -a * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    kl_coef: float = 0.001,
    signal_advantages: torch.Tensor | None = None,
    num_tokens: float | None = None,
    seq_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """Clipped-surrogate GRPO loss with clip-higher and a k3 KL penalty.

    Shapes: `logp`, `old_logp`, `ref_logp`, `mask` are [B, T]; `advantages` and
    `signal_advantages` are [B] (one value per response; `advantages` already carries the
    adversary's weight). `ref_logp=None` or `kl_coef=0` drops the KL term. `num_tokens` is the
    denominator of the token mean (default: the tokens in `mask`). `seq_weights` [B], when
    given, replaces the token mean: loss = Σ_b seq_weights[b] · Σ_t ℓ_bt (`sequence_loss_weights`).

    Returns (scalar loss, stats, per-sequence surrogate [B] detached). Stats are token means
    over this call's tokens plus `tokens` (the count), so a caller can re-weight them.
    """
    mask_f = mask.to(torch.float32)
    adv = advantages.to(torch.float32)
    signal = adv if signal_advantages is None else signal_advantages.to(torch.float32)
    log_ratio = (logp - old_logp.detach()).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)

    per_token, clipped = _clipped_surrogate(adv, ratio, clip_low, clip_high)
    use_kl = ref_logp is not None and kl_coef != 0.0
    kl = k3_kl(logp, ref_logp.detach()) if ref_logp is not None else torch.zeros_like(logp)
    if use_kl:
        per_token = per_token + kl_coef * kl

    local_tokens = mask_f.sum()
    denom = float(num_tokens) if num_tokens is not None else max(float(local_tokens), 1.0)
    if seq_weights is not None:
        loss = ((per_token * mask_f).sum(-1) * seq_weights.to(per_token.dtype)).sum()
    else:
        loss = (per_token * mask_f).sum() / denom

    with torch.no_grad():
        seq_tokens = mask_f.sum(-1)
        signal_tok, _ = _clipped_surrogate(signal, ratio.detach(), clip_low, clip_high)
        per_seq = (signal_tok * mask_f).sum(-1) / seq_tokens.clamp_min(1.0)
        n = max(float(local_tokens), 1.0)
        masked_ratio = ratio.detach()[mask.bool()]
        stats = {
            "tokens": float(local_tokens),
            "pg_loss": float((per_token.detach() - (kl_coef * kl if use_kl else 0.0)).mul(mask_f).sum() / n),
            "kl": float((kl.detach() * mask_f).sum() / n),
            "clip_frac": float((clipped.float() * mask_f).sum() / n),
            "ratio_mean": float((ratio.detach() * mask_f).sum() / n),
            "ratio_max": float(masked_ratio.max()) if masked_ratio.numel() else 1.0,
            "ratio_min": float(masked_ratio.min()) if masked_ratio.numel() else 1.0,
        }
    return loss, stats, per_seq
