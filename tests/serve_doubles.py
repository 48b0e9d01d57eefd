"""A scripted Generator for serving tests: deterministic verdicts and answers, and delays on request.

The feedback double flags a request containing ``[[flag]]`` (unsafe) and passes every other one, so a test can
force a revision through the real parser and stop rule. ``[[<agent>:sleep=S]]`` in a chat makes that agent's generate
call take S seconds (backpressure, timeouts, draining) and ``[[<agent>:touch=PATH]]`` makes it create PATH when the
call starts (a test waits for the file instead of guessing when a request is in flight). Served from a replica, it
is imported there by module path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

from waltz_ray.core.protocol import format_feedback
from waltz_ray.types import Completion, GenerationParams, Message

FLAG = "[[flag]]"
FEEDBACK_TEXT = "Leave out the operational details and decline that part."
_MARKER = re.compile(r"\[\[(conversation|feedback):(sleep|touch)=([^\]]+)\]\]")


def _text(chat: Sequence[Message]) -> str:
    return "\n".join(m["content"] for m in chat)


class ScriptedGenerator:
    """``agent`` is "conversation" (answers "first answer" / "revised answer N") or "feedback" (JSON verdicts)."""

    policy_version = 0

    def __init__(self, agent: str) -> None:
        self.agent = agent

    def generate(self, chats: Sequence[Sequence[Message]], params: GenerationParams) -> list[Completion]:
        markers = [m for chat in chats for m in _MARKER.findall(_text(chat)) if m[0] == self.agent]
        for _, action, value in markers:
            if action == "touch":
                Path(value).touch()
        delays = [float(value) for _, action, value in markers if action == "sleep"]
        if delays:
            time.sleep(max(delays))  # once per call: a batch of slow requests is as slow as one
        return [self._one(chat) for chat in chats]

    def _one(self, chat: Sequence[Message]) -> Completion:
        if self.agent == "feedback":
            flagged = FLAG in _text(chat)
            text = format_feedback(
                unsafe=flagged,
                overrefuse=False,
                reasoning="The request is flagged." if flagged else "The answer is fine.",
                feedback=FEEDBACK_TEXT if flagged else "",
            )
        else:
            revisions = sum(1 for m in chat if m["role"] == "assistant" and m["content"].startswith(("first", "rev")))
            text = f"revised answer {revisions}" if revisions else "first answer"
        return Completion(text=text, prompt_token_ids=(1, 2, 3), token_ids=(4, 5), finish_reason="stop")
