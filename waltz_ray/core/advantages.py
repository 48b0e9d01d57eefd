"""Advantage estimators for critic-free policy gradients: REINFORCE++ (the WaltzRL default), GRPO and RLOO.

Pure functions over tensors with one shared signature, looked up by name from a small registry that also says what
each estimator needs around it (``EstimatorSpec``: prompt groups, the KL in the loss or in the advantages).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import torch
from torch import Tensor

GroupIds: TypeAlias = Tensor | Sequence[int]


class AdvantageFn(Protocol):
    """Shared signature of every estimator.

    Args:
        rewards: [B] scalar reward per sequence.
        mask: [B, T] 1.0 on action tokens, 0.0 on padding (holes and left/right padding allowed).
        kl: [B, T] per-token KL to the reference policy, or None.
        kl_coef: weight of ``kl`` in the per-token reward (REINFORCE++ only).
        group_ids: [B] prompt-group id per sequence (required by GRPO and RLOO).
        gamma: discount over action tokens (REINFORCE++ only).
        eps: added to the standard deviation before dividing.

    Returns:
        [B, T] advantages, 0.0 on padding; detached from the inputs.
    """

    def __call__(
        self,
        rewards: Tensor,
        mask: Tensor,
        *,
        kl: Tensor | None = None,
        kl_coef: float = 0.0,
        group_ids: GroupIds | None = None,
        gamma: float = 1.0,
        eps: float = 1e-8,
    ) -> Tensor: ...


@dataclass(frozen=True)
class EstimatorSpec:
    """An estimator and what the rest of the learner must do around it.

    needs_groups: the baseline is the prompt group, so ``group_ids`` are required and a group needs at least two
        samples (``algorithm.samples_per_prompt >= 2``).
    kl_in_loss: the KL to the reference is a term of the loss (``kl_penalty_loss``), not folded into the advantages;
        its estimator must then have a gradient (see ``check_kl_estimator``).
    """

    name: str
    fn: AdvantageFn
    needs_groups: bool = False
    kl_in_loss: bool = False


ESTIMATOR_SPECS: dict[str, EstimatorSpec] = {}
ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {}  # name -> fn, the same registry without the metadata

LOSS_KL_ESTIMATOR = "k3"
"""The KL estimator of a KL-in-the-loss estimator when none is configured: unbiased, >= 0, and with a gradient."""
REWARD_KL_ESTIMATOR = "k1"
"""The KL estimator of a KL-in-the-advantages estimator (REINFORCE++) when none is configured."""


def register_advantage(
    name: str, *, needs_groups: bool = False, kl_in_loss: bool = False
) -> Callable[[AdvantageFn], AdvantageFn]:
    """Register an estimator under ``name`` with its metadata (``EstimatorSpec``); stack the decorator to add
    aliases."""

    def decorator(fn: AdvantageFn) -> AdvantageFn:
        if name in ESTIMATOR_SPECS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ESTIMATOR_SPECS[name] = EstimatorSpec(name, fn, needs_groups=needs_groups, kl_in_loss=kl_in_loss)
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return decorator


def estimator_spec(name: str) -> EstimatorSpec:
    """Look up an estimator and its metadata by name; unknown names raise ValueError listing the valid ones."""
    try:
        return ESTIMATOR_SPECS[name]
    except KeyError:
        valid = ", ".join(sorted(ESTIMATOR_SPECS))
        raise ValueError(f"unknown advantage estimator {name!r}; valid names: {valid}") from None


def get_advantage_estimator(name: str) -> AdvantageFn:
    """Look up an estimator by name; unknown names raise ValueError listing the valid ones."""
    return estimator_spec(name).fn


def check_kl_estimator(advantage_estimator: str, kl_estimator: str, kl_coef: float | None = None) -> None:
    """Refuse k1 where the KL is a term of the loss (``kl_in_loss`` estimators: grpo, rloo); ValueError naming
    ``algorithm.kl_estimator``. ``kl_coef`` 0: no KL term, nothing to refuse.

    Why: the loss term is kl_coef · mean(k(logp, ref_logp)) over tokens sampled from the policy itself. For k1 =
    logp − ref_logp its gradient is ∇logp, whose expectation under the policy is Σ π ∇log π = ∇Σ π = 0: the term
    pulls the policy nowhere (it only adds noise). k2 = ½(logp − ref)² has gradient (logp − ref)·∇logp and k3 =
    e^(ref − logp) − (ref − logp) − 1 has (1 − e^(ref − logp))·∇logp, both of which vanish only at the reference.
    """
    spec = estimator_spec(advantage_estimator)
    if spec.kl_in_loss and kl_estimator == "k1" and (kl_coef is None or kl_coef > 0):
        raise ValueError(
            f"algorithm.kl_estimator k1 cannot be used with algorithm.advantage_estimator {advantage_estimator}: "
            f"{advantage_estimator} puts the KL to the reference into the loss, where k1's expected gradient on the "
            "policy's own samples is zero (the term would regularise nothing); set algorithm.kl_estimator to k3 "
            "(or k2)"
        )


def resolve_kl_estimator(advantage_estimator: str, kl_estimator: str | None, kl_coef: float | None = None) -> str:
    """The KL estimator to use: the configured one (checked by ``check_kl_estimator``), or when None the default for
    where the estimator puts the KL (``LOSS_KL_ESTIMATOR`` in the loss, ``REWARD_KL_ESTIMATOR`` in the reward)."""
    if kl_estimator is None:
        return LOSS_KL_ESTIMATOR if estimator_spec(advantage_estimator).kl_in_loss else REWARD_KL_ESTIMATOR
    check_kl_estimator(advantage_estimator, kl_estimator, kl_coef)
    return kl_estimator


def _float_dtype(rewards: Tensor) -> torch.dtype:
    return rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()


def _check_shapes(rewards: Tensor, mask: Tensor, kl: Tensor | None) -> None:
    if rewards.dim() != 1 or mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"expected rewards [B] and mask [B, T], got {tuple(rewards.shape)} and {tuple(mask.shape)}")
    if kl is not None and kl.shape != mask.shape:
        raise ValueError(f"kl must have the mask's shape {tuple(mask.shape)}, got {tuple(kl.shape)}")


def _discounted_returns(token_rewards: Tensor, action: Tensor, gamma: float) -> Tensor:
    """G_t = Σ_{k≥t} γ^{k−t} r_k, where k and the discount step only over action tokens.

    token_rewards: [B, T]; action: [B, T] bool. Returns [B, T], 0.0 off action tokens.
    """
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[1])):
        step = action[:, t]
        # Padding (including holes inside a sequence) carries the running return through undiscounted.
        running = torch.where(step, token_rewards[:, t] + gamma * running, running)
        returns[:, t] = torch.where(step, running, torch.zeros_like(running))
    return returns


@register_advantage("reinforce++")
@register_advantage("reinforce_pp")
def reinforce_pp(
    rewards: Tensor,
    mask: Tensor,
    *,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
    group_ids: GroupIds | None = None,
    gamma: float = 1.0,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++: KL-shaped discounted returns, normalised over the whole batch.

    Per-token reward r_t = −kl_coef·kl_t on every action token, plus rewards[b] on the last action token of
    sequence b. Returns G_t are then normalised with the mean and the population std (divide by N, not N − 1)
    over all action tokens of all sequences: (G − mean) / (std + eps). ``group_ids`` is ignored: the baseline is
    the global batch, not the prompt group. A sequence with no action tokens gets no reward and all zeros.

    Shapes: rewards [B], mask [B, T], kl [B, T] or None → [B, T].
    """
    _check_shapes(rewards, mask, kl)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    dtype = _float_dtype(rewards)
    action = mask > 0
    batch, length = mask.shape

    token_rewards = torch.zeros((batch, length), dtype=dtype, device=rewards.device)
    if kl is not None and kl_coef != 0.0:
        token_rewards = torch.where(action, -kl_coef * kl.detach().to(dtype), token_rewards)
    # The last action token is found from the mask, not from a length, so holes and left padding are fine.
    positions = torch.arange(length, device=mask.device).expand(batch, length)
    last = torch.where(action, positions, -1).max(dim=1).values
    has_action = last >= 0
    rows = torch.arange(batch, device=mask.device)[has_action]
    token_rewards[rows, last[has_action]] += rewards.detach().to(dtype)[has_action]

    returns = _discounted_returns(token_rewards, action, gamma)
    values = returns[action]
    if values.numel() == 0:
        return returns
    mean = values.mean()
    std = values.std(correction=0)
    return torch.where(action, (returns - mean) / (std + eps), torch.zeros_like(returns))


def _group_index(group_ids: GroupIds | None, batch: int, device: torch.device) -> tuple[Tensor, int]:
    """Map arbitrary group ids to dense indices 0..G−1; returns ([B] long index, G)."""
    if group_ids is None:
        raise ValueError("group_ids is required for group-baseline estimators (grpo, rloo)")
    ids = torch.as_tensor(group_ids, device=device)
    if ids.shape != (batch,):
        raise ValueError(f"group_ids must have shape [{batch}], got {tuple(ids.shape)}")
    unique, index = torch.unique(ids, return_inverse=True)
    return index, unique.numel()


def _group_sums(values: Tensor, index: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Per-sequence group sum and group size, gathered back to [B]."""
    sums = torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, index, values)
    counts = torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(
        0, index, torch.ones_like(values)
    )
    return sums[index], counts[index]


def _broadcast(seq_adv: Tensor, mask: Tensor) -> Tensor:
    """[B] advantage → [B, T] on action tokens, 0.0 on padding."""
    action = mask > 0
    return torch.where(action, seq_adv[:, None].expand(action.shape), torch.zeros_like(seq_adv)[:, None])


@register_advantage("grpo", needs_groups=True, kl_in_loss=True)
def grpo(
    rewards: Tensor,
    mask: Tensor,
    *,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
    group_ids: GroupIds | None = None,
    gamma: float = 1.0,
    eps: float = 1e-8,
) -> Tensor:
    """GRPO: per-group z-score of the scalar rewards, (r − mean_g) / (std_g + eps), on every action token.

    std_g is the population std (divide by the group size, not size − 1). A group of size 1 gets 0.
    ``kl``, ``kl_coef`` and ``gamma`` are ignored: with GRPO the KL goes into the loss (``kl_penalty_loss``).

    Shapes: rewards [B], mask [B, T], group_ids [B] → [B, T].
    """
    _check_shapes(rewards, mask, kl)
    r = rewards.detach().to(_float_dtype(rewards))
    index, num_groups = _group_index(group_ids, r.shape[0], r.device)
    sums, counts = _group_sums(r, index, num_groups)
    mean = sums / counts
    sq_sums, _ = _group_sums((r - mean) ** 2, index, num_groups)
    std = (sq_sums / counts).sqrt()
    seq_adv = torch.where(counts > 1, (r - mean) / (std + eps), torch.zeros_like(r))
    return _broadcast(seq_adv, mask)


@register_advantage("rloo", needs_groups=True, kl_in_loss=True)
def rloo(
    rewards: Tensor,
    mask: Tensor,
    *,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
    group_ids: GroupIds | None = None,
    gamma: float = 1.0,
    eps: float = 1e-8,
) -> Tensor:
    """RLOO: A_i = r_i − mean_{j≠i} r_j within the group, on every action token; a group of size 1 gets 0.

    ``kl``, ``kl_coef``, ``gamma`` and ``eps`` are ignored: with RLOO the KL goes into the loss
    (``kl_penalty_loss``).

    Shapes: rewards [B], mask [B, T], group_ids [B] → [B, T].
    """
    _check_shapes(rewards, mask, kl)
    r = rewards.detach().to(_float_dtype(rewards))
    index, num_groups = _group_index(group_ids, r.shape[0], r.device)
    sums, counts = _group_sums(r, index, num_groups)
    # Clamp only to avoid 0/0 for singletons; their result is replaced by 0 below.
    others_mean = (sums - r) / (counts - 1).clamp(min=1)
    seq_adv = torch.where(counts > 1, r - others_mean, torch.zeros_like(r))
    return _broadcast(seq_adv, mask)
