"""One served request through the WaltzRL protocol (docs/method.md): c0, feedback on it, a revision only when flagged.

The chats, the parser and the stop rule come from ``core.protocol`` (as in training); the two agents are async
callables, so this loop runs against Serve deployment handles in the ingress and against plain fakes in tests.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from waltz_ray.core import protocol
from waltz_ray.rollout import RolloutSettings
from waltz_ray.serve.validation import ChatRequest
from waltz_ray.types import Completion, FeedbackVerdict, GenerationParams, Message

AgentCall = Callable[[list[Message], GenerationParams], Awaitable[Completion]]
"""Generates one completion for one chat (a deployment handle call in the server)."""


@dataclass
class ServedAnswer:
    """The final answer and what the protocol did on the way: one verdict per feedback turn, per-stage seconds."""

    final: Completion
    verdicts: list[FeedbackVerdict]
    revisions: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def triggered(self) -> bool:
        """Feedback led to at least one revision (what FTR counts)."""
        return self.revisions > 0


def conversation_params(request: ChatRequest) -> GenerationParams:
    return GenerationParams(request.max_tokens, request.temperature, request.top_p, request.seed)


async def _timed(seconds: dict[str, float], stage: str, call: Awaitable[Completion]) -> Completion:
    start = time.perf_counter()
    try:
        return await call
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start


async def answer(
    request: ChatRequest, settings: RolloutSettings, conversation: AgentCall, feedback: AgentCall
) -> ServedAnswer:
    """Play the protocol for one request, up to ``settings.t_max`` revisions; only the last answer is returned."""
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    params = conversation_params(request)
    history: list[tuple[str, str]] = []

    def conversation_chat() -> list[Message]:
        return protocol.conversation_messages(
            settings.conversation_system,
            request.prompt,
            history,
            revision_template=settings.revision_template,
            context=request.context,
        )

    current = await _timed(seconds, "conversation_generation", conversation(conversation_chat(), params))
    verdicts: list[FeedbackVerdict] = []
    for revisions in range(settings.t_max):
        chat = protocol.feedback_messages(
            settings.feedback_system, request.prompt, current.text, history, template=settings.feedback_template
        )
        review = await _timed(seconds, "feedback_generation", feedback(chat, settings.feedback_params))
        verdict = protocol.parse_feedback(review.text)
        verdicts.append(verdict)
        if not protocol.should_revise(verdict, revisions, settings.t_max):
            break
        history.append((current.text, verdict.feedback or ""))
        current = await _timed(seconds, "revision_generation", conversation(conversation_chat(), params))
    seconds["total"] = time.perf_counter() - start
    return ServedAnswer(final=current, verdicts=verdicts, revisions=len(history), seconds=seconds)


def _round(verdict: FeedbackVerdict, hide_feedback: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "valid": verdict.ok,
        "unsafe": verdict.unsafe,
        "overrefuse": verdict.overrefuse,
        "error": verdict.error,
    }
    if not hide_feedback:
        out["reasoning"] = verdict.reasoning
        out["feedback"] = verdict.feedback
    return out


def waltz_object(served: ServedAnswer, hide_feedback: bool) -> dict[str, Any]:
    """The ``waltz`` extension of every response: trigger, the first review's labels and texts, stage timings."""
    rounds = [_round(v, hide_feedback) for v in served.verdicts]
    first = rounds[0] if rounds else {"valid": False, "unsafe": None, "overrefuse": None, "error": None}
    out: dict[str, Any] = {
        "triggered": served.triggered,
        "revisions": served.revisions,
        "labels": {"unsafe": first["unsafe"], "overrefuse": first["overrefuse"]},
        "feedback_valid": first["valid"],
        "feedback_error": first["error"],
        "feedback_hidden": hide_feedback,
    }
    if not hide_feedback:
        out["feedback"] = first.get("feedback")
        out["reasoning"] = first.get("reasoning")
    out["rounds"] = rounds
    out["timings_ms"] = {stage: round(s * 1000.0, 3) for stage, s in served.seconds.items()}
    return out
