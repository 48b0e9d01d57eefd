"""Policy-gradient losses for the learner: PPO-clipped surrogate, KL penalty, token-mean aggregation, log-probs.

Pure functions over tensors; token-mean aggregation takes a global token count so data-parallel shards add up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

KL_KINDS = ("k1", "k2", "k3")


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str) -> Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from sampled-token log-probs (Schulman's k1, k2, k3).

    k1 = logp − ref_logp; k2 = ½(logp − ref_logp)²; k3 = exp(ref_logp − logp) − (ref_logp − logp) − 1 (≥ 0).

    Shapes: logp [B, T], ref_logp [B, T] → [B, T] (any matching shape works).
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp and ref_logp shapes differ: {tuple(logp.shape)} vs {tuple(ref_logp.shape)}")
    if kind == "k1":
        return logp - ref_logp
    if kind == "k2":
        return 0.5 * (logp - ref_logp) ** 2
    if kind == "k3":
        log_ratio = ref_logp - logp
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"unknown KL estimator {kind!r}; valid kinds: {', '.join(KL_KINDS)}")


def token_sum_mean(values: Tensor, mask: Tensor, num_tokens: float | None = None) -> Tensor:
    """Token-mean aggregation: sum(values · mask) / num_tokens.

    ``num_tokens`` defaults to mask.sum() (at least 1). When a batch is split across data-parallel shards or
    micro-batches, pass every piece the GLOBAL token count: the pieces' losses (and gradients) then sum exactly
    to the whole-batch loss, whatever the piece sizes; a per-piece mean would weight short pieces too heavily.

    Shapes: values [B, T], mask [B, T] → scalar.
    """
    if values.shape != mask.shape:
        raise ValueError(f"values and mask shapes differ: {tuple(values.shape)} vs {tuple(mask.shape)}")
    weights = mask.to(values.dtype)
    if num_tokens is None:
        return (values * weights).sum() / weights.sum().clamp(min=1.0)
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}")
    return (values * weights).sum() / num_tokens


@dataclass(frozen=True)
class PolicyLossStats:
    """Detached diagnostics of one policy-loss call, averaged over this call's action tokens.

    clip_fraction: share of action tokens where the clipped branch set the objective (so they get no gradient).
    approx_kl: mean of old_logp − logp, a k1 estimate of KL(π_old ‖ π_new).
    ratio_max, ratio_mean: max and mean of s = π_new / π_old (1.0 when there are no action tokens).
    """

    clip_fraction: float
    approx_kl: float
    ratio_max: float
    ratio_mean: float


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    num_tokens: float | None = None,
) -> tuple[Tensor, PolicyLossStats]:
    """PPO-clipped surrogate: loss = −token_mean(min(s·Â, clip(s, 1−ε, 1+ε)·Â)), s = exp(logp − old_logp).

    ``old_logp`` and ``advantages`` are treated as constants. ``num_tokens`` is the global action-token count
    (see ``token_sum_mean``); the stats always use this call's own tokens.

    Shapes: logp, old_logp, advantages, mask [B, T] → (scalar loss with grad, PolicyLossStats).
    """
    for name, other in (("old_logp", old_logp), ("advantages", advantages), ("mask", mask)):
        if other.shape != logp.shape:
            raise ValueError(f"{name} shape {tuple(other.shape)} differs from logp shape {tuple(logp.shape)}")
    if clip_eps < 0:
        raise ValueError(f"clip_eps must be non-negative, got {clip_eps}")
    # Outside the action mask the ratio is set to exactly 1: the two log-probs there may come from passes that scored
    # different windows (a 0 against a real log-prob), and exp of their gap could overflow into a NaN gradient.
    old_logp = torch.where(mask > 0, old_logp.detach(), logp.detach())
    advantages = advantages.detach()
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -token_sum_mean(torch.minimum(unclipped, clipped), mask, num_tokens)
    return loss, _policy_stats(ratio.detach(), unclipped.detach(), clipped.detach(), logp.detach(), old_logp, mask)


def _policy_stats(
    ratio: Tensor, unclipped: Tensor, clipped: Tensor, logp: Tensor, old_logp: Tensor, mask: Tensor
) -> PolicyLossStats:
    action = mask > 0
    if not bool(action.any()):
        return PolicyLossStats(clip_fraction=0.0, approx_kl=0.0, ratio_max=1.0, ratio_mean=1.0)
    # Strictly smaller: where both branches agree, clipping did not change the objective.
    was_clipped = (clipped < unclipped)[action]
    return PolicyLossStats(
        clip_fraction=float(was_clipped.float().mean().item()),
        approx_kl=float((old_logp - logp)[action].float().mean().item()),
        ratio_max=float(ratio[action].max().item()),
        ratio_mean=float(ratio[action].float().mean().item()),
    )


def truncated_is_weights(target_logp: Tensor, behaviour_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """Per-token importance weights ``min(exp(target - behaviour), cap)`` where ``mask`` is 1, and 1 elsewhere.

    ``target_logp`` is the learner's policy before the update, ``behaviour_logp`` the policy that sampled the tokens
    (all [B, L]); ``mask`` selects the tokens to correct (the action tokens of stale rows). Not differentiated.
    """
    if cap < 1.0:
        raise ValueError(f"importance weight cap must be >= 1 (got {cap})")
    ratio = torch.exp((target_logp - behaviour_logp).detach()).clamp(max=cap)
    return torch.where(mask > 0, ratio, torch.ones_like(ratio))


def kl_penalty_loss(
    logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    *,
    kind: str,
    coef: float,
    num_tokens: float | None = None,
) -> Tensor:
    """KL-in-the-loss penalty (for GRPO/RLOO): coef · token_mean(kl_estimate(logp, ref_logp, kind)).

    ``ref_logp`` is treated as a constant; outside the mask it is replaced by ``logp``'s value (KL 0 there, so no
    overflow from an unscored position can reach the gradient). Shapes: logp, ref_logp, mask [B, T] → scalar.
    """
    ref_logp = torch.where(mask > 0, ref_logp.detach(), logp.detach())
    return coef * token_sum_mean(kl_estimate(logp, ref_logp, kind), mask, num_tokens)


@dataclass(frozen=True)
class MicroStats:
    """Detached figures of one micro-batch, each already this micro-batch's share of the batch's figure: summed over
    the micro-batches (and data-parallel ranks) of a batch they give the batch's loss, clip fraction, approx KL,
    mean entropy and mean KL to the reference. Shares are by action tokens over the batch's ``num_tokens``.

    ref_kl: KL(π_old ‖ π_ref) of the policy before the step (``old_logp``; on-policy ``logp`` detached) with the
    given KL estimator; NaN when no reference log-probs were given.

    The off-policy figures are plain sums over this micro-batch's stale tokens (0 without importance weighting in the
    loss), not shares: summed over micro-batches and ranks they give the batch's totals, which
    ``off_policy_summary`` turns into the logged fraction, mean weight and truncated share.
    offpolicy_tokens: stale tokens corrected; offpolicy_weight_sum: their importance weights summed;
    offpolicy_truncated: how many of them the cap truncated (weight at the cap).
    """

    loss: float
    clip_fraction: float
    approx_kl: float
    entropy: float
    ref_kl: float
    offpolicy_tokens: float = 0.0
    offpolicy_weight_sum: float = 0.0
    offpolicy_truncated: float = 0.0


def off_policy_summary(
    corrected: float, weight_sum: float, truncated: float, num_tokens: float
) -> tuple[float, float, float]:
    """(share of the batch's action tokens that were corrected, mean importance weight over them, share of them the
    cap truncated) from the batch's totals; the means are 0 rather than NaN when nothing was corrected. The figures
    ``AgentUpdate`` logs as ``<agent>/offpolicy_token_fraction``, ``offpolicy_is_weight_mean`` and
    ``offpolicy_is_truncated``, whether the weights came from a separate scoring pass or from the update's own."""
    per_corrected = max(corrected, 1.0)
    return corrected / max(num_tokens, 1.0), weight_sum / per_corrected, truncated / per_corrected


def micro_batch_loss(
    logp: Tensor,
    entropy: Tensor,
    old_logp: Tensor | None,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float,
    kl_in_loss: bool,
    kl_estimator: str,
    kl_coef: float,
    num_tokens: float,
    behaviour_logp: Tensor | None = None,
    stale_mask: Tensor | None = None,
    is_cap: float | None = None,
) -> tuple[Tensor, MicroStats]:
    """The loss of one micro-batch of a learner update (torch and DeepSpeed learners both call this), and its stats.

    loss = policy_loss(logp, old, advantages) [+ kl_penalty_loss(logp, ref_logp) when ``kl_in_loss`` and
    ``kl_coef`` > 0], both token sums over the batch's GLOBAL ``num_tokens`` so micro-batches and ranks add up.
    ``old_logp`` None is an on-policy update: the old log-probs are ``logp`` detached (the ratio is 1) and
    ``MicroStats.ref_kl`` measures the KL to the reference on the same forward pass.

    Importance weighting in the loss (``behaviour_logp``, ``stale_mask`` and ``is_cap`` together, only with
    ``old_logp`` None): the advantages are first multiplied by
    ``truncated_is_weights(logp.detach(), behaviour_logp, stale_mask, is_cap)``, the weights a separate scoring pass
    of the pre-update policy would give (here ``logp`` IS the pre-update policy: one epoch, one optimizer step after
    the last micro-batch), and ``MicroStats`` counts the stale tokens, their weights and the truncated ones.

    Shapes: logp, entropy, old_logp, ref_logp, advantages, mask, behaviour_logp, stale_mask [B, T]
    → (scalar loss with grad, MicroStats).
    """
    old = logp.detach() if old_logp is None else old_logp
    corrected = weight_sum = truncated = 0.0
    if behaviour_logp is not None or stale_mask is not None or is_cap is not None:
        if behaviour_logp is None or stale_mask is None or is_cap is None:
            raise ValueError("importance weighting in the loss needs behaviour_logp, stale_mask and is_cap together")
        if old_logp is not None:
            raise ValueError(
                "importance weighting in the loss is for on-policy updates (old_logp None), whose forward pass gives "
                "the pre-update log-probs; with old_logp given, weight the advantages before the update"
            )
        for name, other in (("behaviour_logp", behaviour_logp), ("stale_mask", stale_mask)):
            if other.shape != logp.shape:
                raise ValueError(f"{name} shape {tuple(other.shape)} differs from logp shape {tuple(logp.shape)}")
        weights = truncated_is_weights(old, behaviour_logp, stale_mask, is_cap)
        advantages = advantages * weights
        stale = stale_mask > 0
        stale_weights = weights[stale]
        corrected = float(stale.sum())
        weight_sum = float(stale_weights.sum())
        truncated = float((stale_weights >= is_cap).sum())
    loss, pstats = policy_loss(logp, old, advantages, mask, clip_eps=clip_eps, num_tokens=num_tokens)
    if kl_in_loss and kl_coef > 0:
        if ref_logp is None:
            raise ValueError("the KL is in the loss (grpo, rloo): reference log-probs are required")
        loss = loss + kl_penalty_loss(logp, ref_logp, mask, kind=kl_estimator, coef=kl_coef, num_tokens=num_tokens)
    total = max(num_tokens, 1.0)
    share = float(mask.sum()) / total
    ref_kl = float("nan")
    if ref_logp is not None:
        kl = torch.where(mask > 0, kl_estimate(old.detach(), ref_logp.detach(), kl_estimator), 0.0)
        ref_kl = float(kl.sum()) / total
    return loss, MicroStats(
        loss=float(loss.detach()),
        clip_fraction=pstats.clip_fraction * share,
        approx_kl=pstats.approx_kl * share,
        entropy=float((entropy.detach() * mask).sum()) / total,
        ref_kl=ref_kl,
        offpolicy_tokens=corrected,
        offpolicy_weight_sum=weight_sum,
        offpolicy_truncated=truncated,
    )


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """Log-probability of each chosen token, computed in float32 for stability.

    Gathering the logit and subtracting logsumexp equals gathering from log_softmax, without a second [B, T, V]
    tensor. Shapes: logits [B, T, V], tokens [B, T] (integer ids) → [B, T] float32.
    """
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(tokens.shape)}")
    logits = logits.float()
    picked = logits.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution at every position, computed in float32.

    Shapes: logits [B, T, V] → [B, T] float32.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    probs = logp.exp()
    # 0 · log 0 = 0: masked-out (−inf) logits would otherwise give NaN in both value and gradient.
    return -(probs * logp.masked_fill(probs == 0, 0.0)).sum(dim=-1)
