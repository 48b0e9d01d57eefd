"""The small interfaces at the seams: a Generator turns chats into completions, a Judge labels responses, a
ReferenceModel scores completions under the frozen reference policy, a Learner updates one agent's policy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from waltz_ray.types import Completion, GenerationParams, JudgeVerdict, Message, PromptLabel

if TYPE_CHECKING:
    import torch

    from waltz_ray.engines.learner import OffPolicy, TokenBatch, UpdateStats


@runtime_checkable
class Generator(Protocol):
    """Generates one completion per chat. Implementations render chats with their tokenizer's chat template
    (through ``waltz_ray.core.protocol.render_chat``) and stamp completions with ``policy_version``."""

    policy_version: int

    def generate(self, chats: Sequence[Sequence[Message]], params: GenerationParams) -> list[Completion]: ...


@runtime_checkable
class Judge(Protocol):
    """Labels each (prompt, response) pair; never raises for a single bad item, returns a failure verdict instead.

    ``labels`` are the prompts' dataset labels when known (the rule judge needs them; others may ignore them).
    """

    def judge(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        labels: Sequence[PromptLabel | None] | None = None,
    ) -> list[JudgeVerdict]: ...


@runtime_checkable
class ReferenceModel(Protocol):
    """Returns the completions with ``ref_logprobs`` filled in: each action token's log-probability under the frozen
    reference model (``runtime.reference_on: rollout``)."""

    def score(self, completions: Sequence[Completion]) -> list[Completion]: ...


@runtime_checkable
class Learner(Protocol):
    """One agent's trainable policy and its frozen reference, as the trainer sees it: score a batch, update on it,
    save it. Implementations: ``TorchLearner`` (in-process), ``DeepSpeedLearner`` (one rank of a ZeRO group) and
    ``waltz_ray.runtime.proxies.RemoteLearnerGroup`` (a group of learner actors, rank 0 answering).

    ``policy_version`` counts the optimizer steps taken (skipped steps do not count); every completion generated from
    these weights is stamped with it."""

    policy_version: int

    def logprobs(
        self, batch: TokenBatch, with_reference: bool = True, with_policy: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per-token log-probs of the batch's action tokens under the policy and under the reference (either may be
        skipped; a skipped one is None)."""
        ...

    def update(
        self,
        batch: TokenBatch,
        old_logp: torch.Tensor | None,
        ref_logp: torch.Tensor | None,
        advantages: torch.Tensor,
        off_policy: OffPolicy | None = None,
    ) -> UpdateStats:
        """One optimizer step per PPO epoch (over micro-batches) of ``core.losses.micro_batch_loss``: the clipped
        policy loss, plus the KL to the reference where the advantage estimator puts it in the loss
        (``core.advantages.estimator_spec(name).kl_in_loss``; ``ref_logp`` is then required). ``old_logp`` None means
        on-policy (the update's own forward pass gives them, and ``UpdateStats.ref_kl`` is measured on it).
        ``off_policy`` (with ``old_logp`` None only): stale tokens whose advantages that same pass reweights by
        truncated importance weights, reported in ``UpdateStats.offpolicy_*``."""
        ...

    def save_pretrained(self, path: str | Path) -> None:
        """The policy in Hugging Face format (weights and config)."""
        ...

    def save_state(self, path: str | Path) -> None:
        """The policy plus what a resume needs (optimizer state, policy version)."""
        ...

    def load_state(self, path: str | Path) -> None:
        """Restore what ``save_state`` wrote."""
        ...
