"""The small interfaces at the seams: a Generator turns chats into completions, a Judge labels responses, a
ReferenceModel scores completions under the frozen reference policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from waltz_ray.types import Completion, GenerationParams, JudgeVerdict, Message, PromptLabel


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
