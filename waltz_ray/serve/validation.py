"""Strict checks of a chat-completions request: every problem becomes a 4xx ``ApiError`` whose message names it.

Pure (no Ray, no web framework), so each rule is unit-tested here and fuzzed through the running server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from waltz_ray.config import WaltzConfig
from waltz_ray.types import Message

MAX_SEED = 2**63 - 1
MAX_USER_CHARS = 256
# OpenAI parameters this server understands; anything else is refused by name rather than silently ignored.
KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "seed",
        "stream",
        "stream_options",
        "user",
    }
)
MESSAGE_FIELDS = frozenset({"role", "content", "name"})


class ApiError(Exception):
    """An answer other than 200, in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def _bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class Limits:
    """What a request may ask for (from ``serve.*`` and the conversation agent's generation settings)."""

    model_name: str
    max_messages: int
    max_message_chars: int
    max_total_chars: int
    max_tokens_limit: int
    default_max_tokens: int
    default_temperature: float
    max_body_bytes: int

    @classmethod
    def from_config(cls, config: WaltzConfig) -> Limits:
        s = config.serve
        default_tokens = config.agents.conversation.generation.max_new_tokens
        return cls(
            model_name=s.model_name,
            max_messages=s.max_messages,
            max_message_chars=s.max_message_chars,
            max_total_chars=s.max_total_chars,
            max_tokens_limit=s.max_tokens_limit,
            default_max_tokens=min(default_tokens, s.max_tokens_limit),
            default_temperature=s.default_temperature,
            max_body_bytes=s.max_body_bytes,
        )


@dataclass(frozen=True)
class ChatRequest:
    """A checked request: the protocol's prompt p is the last user message; earlier turns are ``context``."""

    prompt: str
    context: tuple[Message, ...]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stream: bool
    include_usage: bool


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """The body as JSON; NaN/Infinity, invalid UTF-8, absurd nesting and giant numbers are 400s, not crashes."""
    if not raw.strip():
        raise _bad("the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"the request body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _bad(f"the request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise _bad("the request body is nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity (above) or an integer with too many digits
        raise _bad(f"the request body is not valid JSON: {exc}") from None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(value: str, where: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(f"{where} is not valid Unicode (it contains a lone surrogate)", "messages") from None
    return value


def _content(value: object, where: str) -> str:
    """A message's text: a string, or a list of ``{"type": "text", "text": ...}`` parts (joined)."""
    if isinstance(value, str):
        return _text(value, where)
    if not isinstance(value, list):
        raise _bad(f"{where} must be a string or a list of text parts (got {_type_name(value)})", "messages")
    texts = []
    for index, part in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(part, dict) or part.get("type") != "text" or set(part) != {"type", "text"}:
            raise _bad(f'{at} must be {{"type": "text", "text": <string>}}; only text is supported', "messages")
        if not isinstance(part["text"], str):
            raise _bad(f"{at}.text must be a string (got {_type_name(part['text'])})", "messages")
        texts.append(_text(part["text"], f"{at}.text"))
    return "".join(texts)


def _message(value: object, index: int, limits: Limits) -> Message:
    where = f"messages[{index}]"
    if not isinstance(value, dict):
        raise _bad(f"{where} must be an object with 'role' and 'content' (got {_type_name(value)})", "messages")
    unknown = sorted(set(value) - MESSAGE_FIELDS)
    if unknown:
        raise _bad(f"{where} has unsupported field(s) {', '.join(map(repr, unknown))}", "messages")
    role = value.get("role")
    if role in ("system", "developer"):
        raise _bad(f"{where}.role {role!r} is not accepted: the agents' system prompts are fixed by the server")
    if role not in ("user", "assistant"):
        shown = repr(role) if isinstance(role, str) and len(role) <= 40 else _type_name(role)
        raise _bad(f"{where}.role must be 'user' or 'assistant' (got {shown})", "messages")
    if "content" not in value:
        raise _bad(f"{where} has no 'content'", "messages")
    name = value.get("name")
    if name is not None and not isinstance(name, str):
        raise _bad(f"{where}.name must be a string (got {_type_name(name)})", "messages")
    content = _content(value["content"], f"{where}.content")
    if len(content) > limits.max_message_chars:
        raise _bad(
            f"{where}.content is {len(content)} characters; the limit is {limits.max_message_chars}",
            "messages",
            "message_too_long",
        )
    return {"role": role, "content": content}


def _messages(value: object, limits: Limits) -> list[Message]:
    if value is None:
        raise _bad("'messages' is required", "messages")
    if not isinstance(value, list):
        raise _bad(f"'messages' must be an array (got {_type_name(value)})", "messages")
    if not value:
        raise _bad("'messages' is empty; send at least one user message", "messages")
    if len(value) > limits.max_messages:
        raise _bad(f"'messages' has {len(value)} messages; the limit is {limits.max_messages}", "messages")
    messages = [_message(m, i, limits) for i, m in enumerate(value)]
    total = sum(len(m["content"]) for m in messages)
    if total > limits.max_total_chars:
        raise _bad(
            f"the messages total {total} characters; the limit is {limits.max_total_chars}",
            "messages",
            "context_too_long",
        )
    if messages[-1]["role"] != "user":
        raise _bad("the last message must have role 'user' (the request the agents answer)", "messages")
    return messages


def _optional(body: dict[str, Any], key: str) -> Any:
    return body.get(key)  # an explicit null means "not given", as the OpenAI API treats it


def _max_tokens(body: dict[str, Any], limits: Limits) -> int:
    given = {k: body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None}
    if len(given) > 1:
        raise _bad("give 'max_tokens' or 'max_completion_tokens', not both", "max_tokens")
    if not given:
        return limits.default_max_tokens
    ((key, value),) = given.items()
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"'{key}' must be an integer (got {_type_name(value)})", key)
    if not 1 <= value <= limits.max_tokens_limit:
        raise _bad(f"'{key}' must be between 1 and {limits.max_tokens_limit} (got {_short(value)})", key)
    return value


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float, low_open: bool) -> float:
    value = _optional(body, key)
    if value is None:
        return default
    if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
        raise _bad(f"'{key}' must be a number (got {_type_name(value)})", key)
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise _bad(f"'{key}' must be in {bracket}{low:g}, {high:g}] (got {_short(value)})", key)
    return float(value)


def _seed(body: dict[str, Any]) -> int | None:
    value = _optional(body, "seed")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"'seed' must be an integer (got {_type_name(value)})", "seed")
    if not 0 <= value <= MAX_SEED:
        raise _bad(f"'seed' must be between 0 and {MAX_SEED}", "seed")
    return value


def _stream(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = _optional(body, "stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad(f"'stream' must be a boolean (got {_type_name(stream)})", "stream")
    options = _optional(body, "stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise _bad("'stream_options' is only allowed with 'stream': true", "stream_options")
    if not isinstance(options, dict) or not set(options) <= {"include_usage"}:
        raise _bad("'stream_options' must be an object with at most 'include_usage'", "stream_options")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise _bad("'stream_options.include_usage' must be a boolean", "stream_options")
    return stream, include_usage


def _model(body: dict[str, Any], limits: Limits) -> None:
    model = body.get("model")
    if model is None:
        raise _bad("'model' is required", "model")
    if not isinstance(model, str):
        raise _bad(f"'model' must be a string (got {_type_name(model)})", "model")
    if model != limits.model_name:
        shown = model if len(model) <= 80 else model[:80] + "..."
        message = f"model {shown!r} does not exist; this server serves {limits.model_name!r}"
        raise ApiError(404, message, param="model", code="model_not_found")


def parse_chat_request(body: object, limits: Limits) -> ChatRequest:
    """Check a decoded body field by field; raise ``ApiError`` (400, or 404 for an unknown model) naming the problem."""
    if not isinstance(body, dict):
        raise _bad(f"the request body must be a JSON object (got {_type_name(body)})")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        shown = ", ".join(repr(k if len(k) <= 40 else k[:40] + "...") for k in unknown[:5])
        raise _bad(f"unsupported parameter(s): {shown}", unknown[0][:40])
    _model(body, limits)
    messages = _messages(body.get("messages"), limits)
    n = _optional(body, "n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
        raise _bad("only 'n': 1 is supported (one answer per request)", "n")
    user = _optional(body, "user")
    if user is not None and (not isinstance(user, str) or len(user) > MAX_USER_CHARS):
        raise _bad(f"'user' must be a string of at most {MAX_USER_CHARS} characters", "user")
    stream, include_usage = _stream(body)
    return ChatRequest(
        prompt=messages[-1]["content"],
        context=tuple(messages[:-1]),
        max_tokens=_max_tokens(body, limits),
        temperature=_number(body, "temperature", limits.default_temperature, 0.0, 2.0, low_open=False),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        seed=_seed(body),
        stream=stream,
        include_usage=include_usage,
    )
