"""OpenAI chat-completions response shapes: the whole answer, or the final answer as server-sent-event chunks.

Only the final answer is ever sent: the first answer may be the unsafe one the feedback agent flagged, so streaming
starts once the protocol has finished and replays the final text in word-sized chunks.
"""

from __future__ import annotations

import json
import re
from typing import Any

from waltz_ray.serve.pipeline import ServedAnswer

_PIECES = re.compile(r"\S+\s*|\s+")
OWNER = "waltz-ray"


def _usage(served: ServedAnswer) -> dict[str, int]:
    prompt = len(served.final.prompt_token_ids)
    completion = len(served.final.token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(served: ServedAnswer) -> str:
    return "length" if served.final.finish_reason == "length" else "stop"


def completion_body(
    request_id: str, created: int, model: str, served: ServedAnswer, waltz: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": served.final.text},
                "finish_reason": _finish_reason(served),
                "logprobs": None,
            }
        ],
        "usage": _usage(served),
        "waltz": waltz,
    }


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def stream_events(
    request_id: str,
    created: int,
    model: str,
    served: ServedAnswer,
    waltz: dict[str, Any],
    include_usage: bool,
) -> list[str]:
    """SSE events: the role, the text piece by piece, a last choice chunk carrying ``finish_reason`` and the
    ``waltz`` object, the usage chunk when asked for (``stream_options.include_usage``), then ``[DONE]``."""
    base = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}

    def chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _event({**base, "choices": [choice], **extra})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in _PIECES.findall(served.final.text)]
    events.append(chunk({}, _finish_reason(served), waltz=waltz))
    if include_usage:
        events.append(_event({**base, "choices": [], "usage": _usage(served)}))
    events.append("data: [DONE]\n\n")
    return events


def model_card(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": OWNER}


def models_body(model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(model, created)]}
