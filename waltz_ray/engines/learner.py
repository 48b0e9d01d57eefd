"""A policy learner for one agent on plain torch: token batches, log-probs, the clipped REINFORCE++ update.

Both agents are two instances of this class; ``DeepSpeedLearner`` computes the same micro-batch loss
(``core.losses.micro_batch_loss``). ``LearnerHost`` is the delegating object the Ray learner actors are built on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from waltz_ray.config import AlgorithmConfig, LearnerConfig
from waltz_ray.core.advantages import check_kl_estimator, estimator_spec
from waltz_ray.core.losses import entropy_from_logits, micro_batch_loss, off_policy_summary, token_logprobs
from waltz_ray.types import Completion

LEARNER_STATE = "learner.pt"  # optimizer state and policy version next to the policy's Hugging Face files


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded state+action sequences. Tensors over *predicted* positions are [B, L-1]: entry t scores
    ``input_ids[:, t+1]``; ``action_mask`` is 1 where that token belongs to the action."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    action_mask: torch.Tensor  # [B, L-1] float

    @property
    def num_tokens(self) -> float:
        return float(self.action_mask.sum())

    def rows(self, index: slice) -> TokenBatch:
        return TokenBatch(self.input_ids[index], self.attention_mask[index], self.action_mask[index])


def make_batch(completions: Sequence[Completion], pad_id: int) -> TokenBatch:
    """Pack completions (state tokens + action tokens, as generated: no re-tokenisation) into a TokenBatch."""
    width = max(len(c.prompt_token_ids) + len(c.token_ids) for c in completions)
    input_ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(completions), width), dtype=torch.long)
    action = torch.zeros((len(completions), width - 1), dtype=torch.float32)
    for row, c in enumerate(completions):
        ids = list(c.prompt_token_ids) + list(c.token_ids)
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
        action[row, len(c.prompt_token_ids) - 1 : len(ids) - 1] = 1.0
    return TokenBatch(input_ids, attention, action)


def _laid_out(completions: Sequence[Completion], width: int, field: str, rows: Sequence[bool]) -> torch.Tensor:
    """Per-token values ``completion.<field>`` laid out like ``make_batch``'s action mask ([B, width - 1]) for the
    chosen rows; zeros elsewhere."""
    out = torch.zeros((len(completions), width - 1), dtype=torch.float32)
    for row, (c, chosen) in enumerate(zip(completions, rows, strict=True)):
        if chosen:
            start = len(c.prompt_token_ids) - 1
            out[row, start : start + len(c.token_ids)] = torch.tensor(getattr(c, field), dtype=torch.float32)
    return out


def behaviour_logprobs(
    completions: Sequence[Completion], width: int, stale_below: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The generators' own token log-probs laid out like ``make_batch``'s action mask ([B, width - 1]), and the mask
    of the tokens to correct: action tokens of completions sampled by a policy version below ``stale_below`` that
    reported their log-probs. Rows without log-probs (engines that cannot report them) stay uncorrected."""
    rows = [
        c.policy_version < stale_below and len(c.logprobs) == len(c.token_ids) and bool(c.token_ids)
        for c in completions
    ]
    logp = _laid_out(completions, width, "logprobs", rows)
    mask = torch.zeros_like(logp)
    for row, (c, chosen) in enumerate(zip(completions, rows, strict=True)):
        if chosen:
            start = len(c.prompt_token_ids) - 1
            mask[row, start : start + len(c.token_ids)] = 1.0
    return logp, mask


@dataclass(frozen=True)
class OffPolicy:
    """Stale samples for an on-policy single-epoch update to reweight on its own forward pass (``update(...,
    off_policy=...)``): each token where ``stale_mask`` is 1 gets its advantage multiplied by
    min(exp(logp - behaviour_logp), cap), with logp the update's pre-step log-probs, as a separate scoring pass of the
    current policy would give them (``AgentUpdate.off_policy_weights``) but without that pass.

    behaviour_logp: the generators' own token log-probs [B, L-1] (``behaviour_logprobs``); stale_mask: [B, L-1], 1 on
    the action tokens to correct; cap: the weight's upper bound (``algorithm.off_policy_is_cap``). Rows are taken like
    the batch's (``rows``), by a slice or an index tensor, so micro-batches and data-parallel shards get theirs."""

    behaviour_logp: torch.Tensor
    stale_mask: torch.Tensor
    cap: float

    def __post_init__(self) -> None:
        if self.behaviour_logp.shape != self.stale_mask.shape:
            raise ValueError(
                f"behaviour_logp {tuple(self.behaviour_logp.shape)} and stale_mask {tuple(self.stale_mask.shape)} "
                "shapes differ"
            )
        if self.cap < 1.0:
            raise ValueError(f"importance weight cap must be >= 1 (got {self.cap})")

    def rows(self, index: slice | torch.Tensor) -> OffPolicy:
        return OffPolicy(self.behaviour_logp[index], self.stale_mask[index], self.cap)

    def to(self, device: Any) -> OffPolicy:
        return OffPolicy(self.behaviour_logp.to(device), self.stale_mask.to(device), self.cap)


def rollout_reference_logprobs(completions: Sequence[Completion], width: int) -> torch.Tensor | None:
    """Reference log-probs scored on the rollout side, laid out like the action mask; None unless every completion
    carries them (then the learner scores the batch itself)."""
    if not completions or any(len(c.ref_logprobs) != len(c.token_ids) for c in completions):
        return None
    return _laid_out(completions, width, "ref_logprobs", [True] * len(completions))


class ReferenceScorer:
    """Scores completions under a frozen reference model (``runtime.reference_on: rollout``): each completion comes
    back with ``ref_logprobs`` filled in, computed on its own state + action tokens, micro-batched."""

    def __init__(
        self, model: Any, pad_token_id: int, micro_batch_size: int = 32, from_first_action: bool = True
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.pad_token_id = pad_token_id
        self.micro_batch_size = micro_batch_size
        self.from_first_action = from_first_action

    @torch.no_grad()
    def score(self, completions: Sequence[Completion]) -> list[Completion]:
        out: list[Completion] = []
        for start in range(0, len(completions), self.micro_batch_size):
            part = completions[start : start + self.micro_batch_size]
            batch = make_batch(part, self.pad_token_id)
            logp = sequence_logprobs(self.model, batch, from_first_action=self.from_first_action)[0].float()
            for row, c in enumerate(part):
                first = len(c.prompt_token_ids) - 1
                values = tuple(float(x) for x in logp[row, first : first + len(c.token_ids)])
                out.append(replace(c, ref_logprobs=values))
        return out


def sequence_logprobs(
    model: Any, batch: TokenBatch, with_entropy: bool = False, from_first_action: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs [B, L-1] of the batch's tokens under ``model`` (and entropies when asked).

    With ``from_first_action`` only positions from the batch's first action token on are scored: the output layer
    and the softmax run on ``logits_to_keep`` positions instead of all L (the chat state is most of a sequence, and
    with a real vocabulary the [B, L, V] logits cost as much as the layers below them). Earlier positions, never in
    the action mask, are 0. ``learner.logits_from_first_action`` sets it.
    """
    width = batch.input_ids.shape[1]
    first = first_action_position(batch) if from_first_action else 0
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=width - first).logits
    logits = logits[:, logits.shape[1] - (width - first) : -1]  # a model that ignores logits_to_keep gives all L
    logp = _left_pad(token_logprobs(logits, batch.input_ids[:, first + 1 :]), first)
    entropy = _left_pad(entropy_from_logits(logits.detach()), first) if with_entropy else None
    return logp, entropy


def first_action_position(batch: TokenBatch) -> int:
    """The first predicted position that any row's action mask covers (0 for an empty mask)."""
    covered = batch.action_mask.sum(dim=0).nonzero()
    return int(covered[0]) if len(covered) else 0


def _left_pad(values: torch.Tensor, count: int) -> torch.Tensor:
    return torch.nn.functional.pad(values, (count, 0)) if count else values


def kl_settings(algorithm: AlgorithmConfig) -> tuple[bool, str]:
    """(whether the KL to the reference is a loss term, the KL estimator) of a learner for ``algorithm``: the
    registry says where the estimator puts the KL; the config holds the estimator, resolved when it was loaded (k3
    where the KL is in the loss unless set, k1 refused there) and checked again here for hand-built configs."""
    spec = estimator_spec(algorithm.advantage_estimator)
    check_kl_estimator(algorithm.advantage_estimator, algorithm.kl_estimator, algorithm.kl_coef)
    return spec.kl_in_loss, algorithm.kl_estimator


@dataclass
class UpdateStats:
    loss: float
    clip_fraction: float
    approx_kl: float
    entropy: float
    grad_norm: float
    lr: float
    skipped: bool = False
    ref_kl: float = float("nan")  # mean per-token KL to the reference before the step (on-policy updates only)
    # Importance weighting on the update's own forward pass (``update(..., off_policy=...)`` only; NaN otherwise):
    # the share of the batch's action tokens corrected, their mean weight and the share of them the cap truncated.
    offpolicy_token_fraction: float = float("nan")
    offpolicy_is_weight_mean: float = float("nan")
    offpolicy_is_truncated: float = float("nan")


def check_update_arguments(old_logp: torch.Tensor | None, off_policy: OffPolicy | None, ppo_epochs: int) -> None:
    """What every learner's ``update`` refuses: an on-policy update (``old_logp`` None) over more than one epoch,
    and importance weighting on the update's forward pass when that pass is not the pre-update policy."""
    if old_logp is None and ppo_epochs != 1:
        raise ValueError("old_logp may be omitted only for a single-epoch update (algorithm.ppo_epochs: 1)")
    if off_policy is not None and old_logp is not None:
        raise ValueError(
            "off_policy is for an on-policy update (old_logp None), whose forward pass gives the pre-update "
            "log-probs; with old_logp given, weight the advantages before the update"
        )


def importance_inputs(off_policy: OffPolicy | None, index: slice | torch.Tensor, device: Any = None) -> dict[str, Any]:
    """``micro_batch_loss``'s importance-weighting keywords for the rows ``index`` (none without ``off_policy``)."""
    if off_policy is None:
        return {}
    part = off_policy.rows(index)
    if device is not None:
        part = part.to(device)
    return {"behaviour_logp": part.behaviour_logp, "stale_mask": part.stale_mask, "is_cap": part.cap}


def with_off_policy(
    stats: UpdateStats,
    off_policy: OffPolicy | None,
    corrected: float,
    weight_sum: float,
    truncated: float,
    num_tokens: float,
) -> UpdateStats:
    """``stats`` with the ``offpolicy_*`` figures of the batch's totals when the update reweighted stale tokens."""
    if off_policy is None:
        return stats
    fraction, mean, truncated_share = off_policy_summary(corrected, weight_sum, truncated, num_tokens)
    return replace(
        stats, offpolicy_token_fraction=fraction, offpolicy_is_weight_mean=mean, offpolicy_is_truncated=truncated_share
    )


class TorchLearner:
    """Owns one agent's trainable policy, its frozen reference copy and its optimizer."""

    def __init__(self, policy: Any, reference: Any, learner: LearnerConfig, algorithm: AlgorithmConfig) -> None:
        self.policy = policy
        self.reference = reference.eval().requires_grad_(False)
        self.learner = learner
        self.algorithm = algorithm
        self.policy_version = 0
        self.kl_in_loss, self.kl_estimator = kl_settings(algorithm)
        self.optimizer = torch.optim.AdamW(
            policy.parameters(), lr=learner.lr, betas=learner.betas, weight_decay=learner.weight_decay
        )

    @torch.no_grad()
    def logprobs(
        self, batch: TokenBatch, with_reference: bool = True, with_policy: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(old log-probs under the current policy, reference log-probs), both [B, L-1], micro-batched; either is
        None when not asked for."""
        old, ref = [], []
        self.policy.eval()
        for index in self._micro_batches(batch):
            first = self.learner.logits_from_first_action
            if with_policy:
                old.append(sequence_logprobs(self.policy, batch.rows(index), from_first_action=first)[0])
            if with_reference:
                ref.append(sequence_logprobs(self.reference, batch.rows(index), from_first_action=first)[0])
        return _cat_padded(old) if with_policy else None, _cat_padded(ref) if with_reference else None

    def update(
        self,
        batch: TokenBatch,
        old_logp: torch.Tensor | None,
        ref_logp: torch.Tensor | None,
        advantages: torch.Tensor,
        off_policy: OffPolicy | None = None,
    ) -> UpdateStats:
        """PPO-clipped policy-gradient epochs over the batch; one optimizer step per epoch (gradient accumulation).

        ``old_logp`` None: an on-policy single-epoch update, whose old log-probs are the update's own (detached), as
        a separate scoring pass would give them; ``ref_kl`` then reports the batch's KL to the reference.
        ``off_policy`` (only with ``old_logp`` None): the stale tokens' advantages are reweighted by truncated
        importance weights computed from those same log-probs, and the ``offpolicy_*`` stats report them."""
        check_update_arguments(old_logp, off_policy, self.algorithm.ppo_epochs)
        self.policy.train()
        total = batch.num_tokens
        stats: list[UpdateStats] = []
        ref_kl = 0.0
        corrected, weight_sum, truncated = 0.0, 0.0, 0.0
        for _ in range(self.algorithm.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum, clip, approx, ent = 0.0, 0.0, 0.0, 0.0
            for index in self._micro_batches(batch):
                part = batch.rows(index)
                logp, entropy = sequence_logprobs(
                    self.policy, part, with_entropy=True, from_first_action=self.learner.logits_from_first_action
                )
                assert entropy is not None
                loss, micro = micro_batch_loss(
                    logp,
                    entropy,
                    None if old_logp is None else old_logp[index],
                    None if ref_logp is None else ref_logp[index],
                    advantages[index],
                    part.action_mask,
                    clip_eps=self.algorithm.clip_eps,
                    kl_in_loss=self.kl_in_loss,
                    kl_estimator=self.kl_estimator,
                    kl_coef=self.algorithm.kl_coef,
                    num_tokens=total,
                    **importance_inputs(off_policy, index),
                )
                loss.backward()
                if old_logp is None:
                    ref_kl += micro.ref_kl
                corrected += micro.offpolicy_tokens
                weight_sum += micro.offpolicy_weight_sum
                truncated += micro.offpolicy_truncated
                loss_sum += micro.loss
                clip += micro.clip_fraction
                approx += micro.approx_kl
                ent += micro.entropy
            stats.append(self._step(loss_sum, clip, approx, ent))
        self.policy.eval()
        self.policy_version += 1
        if old_logp is not None:
            return stats[-1]
        return with_off_policy(replace(stats[-1], ref_kl=ref_kl), off_policy, corrected, weight_sum, truncated, total)

    def _step(self, loss: float, clip: float, approx: float, entropy: float) -> UpdateStats:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.learner.grad_clip))
        lr = float(self.optimizer.param_groups[0]["lr"])
        if not torch.isfinite(torch.tensor([loss, grad_norm])).all():
            self.optimizer.zero_grad(set_to_none=True)
            return UpdateStats(loss, clip, approx, entropy, grad_norm, lr, skipped=True)
        self.optimizer.step()
        return UpdateStats(loss, clip, approx, entropy, grad_norm, lr)

    def state_dict_for_sync(self) -> dict[str, torch.Tensor]:
        """The policy's weights (detached, not copied) for a weight sync, keyed like ``model.state_dict()``."""
        return {name: t.detach() for name, t in self.policy.state_dict().items()}

    def save_pretrained(self, path: str | Path) -> None:
        """The policy in Hugging Face format."""
        self.policy.save_pretrained(Path(path))

    def save_state(self, path: str | Path) -> None:
        """Policy (Hugging Face format), optimizer state and policy version into folder ``path`` (a resume point)."""
        directory = Path(path)
        self.policy.save_pretrained(directory)
        torch.save(
            {"optimizer": self.optimizer.state_dict(), "policy_version": self.policy_version},
            directory / LEARNER_STATE,
        )

    def load_state(self, path: str | Path) -> None:
        """Restore the optimizer state and policy version written by ``save_state`` (the policy weights are loaded
        from the same folder when the learner is built)."""
        state_file = Path(path) / LEARNER_STATE
        if not state_file.is_file():
            raise FileNotFoundError(f"learner state {state_file} is missing: not a resumable checkpoint folder")
        state = torch.load(state_file, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.policy_version = int(state["policy_version"])

    def _micro_batches(self, batch: TokenBatch) -> list[slice]:
        size = self.learner.micro_batch_size
        rows = batch.input_ids.shape[0]
        return [slice(i, min(i + size, rows)) for i in range(0, rows, size)]


class LearnerHost:
    """A learner behind the methods the runtime calls on a learner actor (one rank each): ``get_policy_version``,
    ``logprobs``, ``update``, ``state_dict_for_sync``, ``save_pretrained``, ``save_state``, ``load_state``, each
    delegated to ``self.learner`` (a ``TorchLearner`` or a ``DeepSpeedLearner``; None until built). The save and load
    methods answer the path, so a caller always has a value to wait on. Subclasses build the learner: the runtime's
    ``TorchLearnerHost`` and ``DeepSpeedLearner``'s ``LearnerWorker``. Nothing here imports ray."""

    learner: Any = None
    not_ready = "the learner is not built yet"

    def _ready(self) -> Any:
        if self.learner is None:
            raise RuntimeError(f"{type(self).__name__}: {self.not_ready}")
        return self.learner

    @property
    def policy_version(self) -> int:
        return int(self._ready().policy_version)

    def get_policy_version(self) -> int:
        return int(self._ready().policy_version)

    def logprobs(
        self, batch: TokenBatch, with_reference: bool = True, with_policy: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self._ready().logprobs(batch, with_reference, with_policy)  # type: ignore[no-any-return]

    def update(
        self,
        batch: TokenBatch,
        old_logp: torch.Tensor | None,
        ref_logp: torch.Tensor | None,
        advantages: torch.Tensor,
        off_policy: OffPolicy | None = None,
    ) -> UpdateStats:
        return self._ready().update(batch, old_logp, ref_logp, advantages, off_policy)  # type: ignore[no-any-return]

    def state_dict_for_sync(self) -> dict[str, torch.Tensor]:
        return self._ready().state_dict_for_sync()  # type: ignore[no-any-return]

    def save_pretrained(self, path: str | Path) -> str:
        self._ready().save_pretrained(path)
        return str(path)

    def save_state(self, path: str | Path) -> str:
        self._ready().save_state(path)
        return str(path)

    def load_state(self, path: str | Path) -> str:
        self._ready().load_state(path)
        return str(path)


def _cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """Micro-batches share the batch width, so a plain concatenation keeps positions aligned."""
    return torch.cat(parts, dim=0)
