"""The serving parts that need no Ray: request checks, API keys, the per-request protocol loop, response shapes.

The same rules are exercised through a live Serve instance (and fuzzed) in ``test_serve.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from waltz_ray.config import ServeConfig, WaltzConfig, build_config
from waltz_ray.core.protocol import format_feedback
from waltz_ray.rollout import RolloutSettings
from waltz_ray.serve import openai_api, pipeline
from waltz_ray.serve.auth import AuthConfigError, KeyChecker, digest, read_keys
from waltz_ray.serve.validation import ApiError, ChatRequest, Limits, parse_chat_request, parse_json
from waltz_ray.types import Completion, GenerationParams, Message

LIMITS = Limits(
    model_name="waltz",
    max_messages=4,
    max_message_chars=50,
    max_total_chars=80,
    max_tokens_limit=100,
    default_max_tokens=24,
    default_temperature=0.0,
    max_body_bytes=10_000,
)
USER = {"role": "user", "content": "hello"}


def body(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "waltz", "messages": [USER]}
    out.update(fields)
    return {k: v for k, v in out.items() if v is not ...}


def rejected(value: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_chat_request(value, LIMITS)
    return info.value


# -- request checks ---------------------------------------------------------------------------------------------


def test_minimal_request_takes_the_defaults() -> None:
    assert parse_chat_request(body(), LIMITS) == ChatRequest(
        prompt="hello",
        context=(),
        max_tokens=24,
        temperature=0.0,
        top_p=1.0,
        seed=None,
        stream=False,
        include_usage=False,
    )


def test_full_request_with_context_text_parts_and_nulls() -> None:
    messages = [
        {"role": "user", "content": "u0", "name": "ann"},
        {"role": "assistant", "content": "a0"},
        {"role": "user", "content": [{"type": "text", "text": "he"}, {"type": "text", "text": "llo"}]},
    ]
    request = parse_chat_request(
        body(
            messages=messages,
            max_completion_tokens=7,
            temperature=1,
            top_p=0.5,
            seed=3,
            n=1,
            stream=True,
            stream_options={"include_usage": True},
            user="u",
            max_tokens=None,
        ),
        LIMITS,
    )
    assert request.prompt == "hello"
    assert request.context == ({"role": "user", "content": "u0"}, {"role": "assistant", "content": "a0"})
    assert (request.max_tokens, request.temperature, request.top_p, request.seed) == (7, 1.0, 0.5, 3)
    assert request.stream and request.include_usage


@pytest.mark.parametrize(
    ("value", "status", "needle"),
    [
        ([], 400, "must be a JSON object (got array)"),
        ("x", 400, "must be a JSON object (got string)"),
        (body(model=...), 400, "'model' is required"),
        (body(model=3), 400, "'model' must be a string (got number)"),
        (body(model="gpt-4"), 404, "model 'gpt-4' does not exist; this server serves 'waltz'"),
        (body(messages=...), 400, "'messages' is required"),
        (body(messages={}), 400, "'messages' must be an array (got object)"),
        (body(messages=[]), 400, "'messages' is empty"),
        (body(messages=[USER] * 5), 400, "'messages' has 5 messages; the limit is 4"),
        (body(messages=["hi"]), 400, "messages[0] must be an object"),
        (body(messages=[{"role": "system", "content": "x"}, USER]), 400, "messages[0].role 'system' is not accepted"),
        (body(messages=[{"role": "tool", "content": "x"}]), 400, "messages[0].role must be 'user' or 'assistant'"),
        (body(messages=[{"role": 7, "content": "x"}]), 400, "(got number)"),
        (body(messages=[{"role": "user"}]), 400, "messages[0] has no 'content'"),
        (body(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content must be a string or a list"),
        (body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), 400, "only text is supported"),
        (body(messages=[{"role": "user", "content": "x", "tool_calls": []}]), 400, "unsupported field(s) 'tool_calls'"),
        (body(messages=[{"role": "user", "content": "x", "name": 1}]), 400, "messages[0].name must be a string"),
        (body(messages=[{"role": "user", "content": "x" * 51}]), 400, "is 51 characters; the limit is 50"),
        (body(messages=[{"role": "user", "content": "x" * 45}] * 2), 400, "total 90 characters; the limit is 80"),
        (body(messages=[USER, {"role": "assistant", "content": "a"}]), 400, "the last message must have role 'user'"),
        (body(messages=[{"role": "user", "content": "\ud800"}]), 400, "lone surrogate"),
        (body(max_tokens=0), 400, "'max_tokens' must be between 1 and 100 (got 0)"),
        (body(max_tokens=101), 400, "between 1 and 100 (got 101)"),
        (body(max_tokens=5.0), 400, "'max_tokens' must be an integer (got number)"),
        (body(max_tokens=True), 400, "'max_tokens' must be an integer (got boolean)"),
        (body(max_tokens=10**50), 400, "between 1 and 100 (got 10000000000"),
        (body(max_tokens=5, max_completion_tokens=5), 400, "not both"),
        (body(temperature=-0.1), 400, "'temperature' must be in [0, 2] (got -0.1)"),
        (body(temperature=2.5), 400, "'temperature' must be in [0, 2]"),
        (body(temperature="hot"), 400, "'temperature' must be a number (got string)"),
        (body(temperature=10**400), 400, "'temperature' must be in [0, 2]"),
        (body(top_p=0), 400, "'top_p' must be in (0, 1] (got 0)"),
        (body(n=2), 400, "only 'n': 1"),
        (body(seed=-1), 400, "'seed' must be between 0"),
        (body(seed="1"), 400, "'seed' must be an integer (got string)"),
        (body(stream="yes"), 400, "'stream' must be a boolean (got string)"),
        (body(stream_options={"include_usage": True}), 400, "only allowed with 'stream': true"),
        (body(stream=True, stream_options={"x": 1}), 400, "at most 'include_usage'"),
        (body(user="u" * 300), 400, "'user' must be a string of at most 256"),
        (body(tools=[], logprobs=True), 400, "unsupported parameter(s): 'logprobs', 'tools'"),
    ],
)
def test_each_problem_is_named(value: Any, status: int, needle: str) -> None:
    error = rejected(value)
    assert (error.status, error.kind) == (status, "invalid_request_error")
    assert needle in error.message, error.message
    assert json.loads(json.dumps(error.body()))["error"]["message"] == error.message


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"model": ', "not valid JSON: Expecting value"),
        (b'{"temperature": NaN}', "NaN is not valid JSON"),
        (b"[" * 100_000, "nested too deeply"),
        (b"1" * 5000, "not valid JSON"),
    ],
)
def test_bodies_that_are_not_json_are_400(raw: bytes, needle: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_json(raw)
    assert info.value.status == 400 and needle in info.value.message, info.value.message


def test_limits_come_from_the_config() -> None:
    config = build_config({"agents": {"conversation": {"generation": {"max_new_tokens": 2000}}}})
    limits = Limits.from_config(config)
    assert limits.default_max_tokens == config.serve.max_tokens_limit == 1024  # the default never exceeds the cap
    assert limits.model_name == "waltz" and limits.max_body_bytes == 1_000_000


# -- API keys ---------------------------------------------------------------------------------------------------


def test_keys_from_the_environment_and_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# team keys\nfile-key-1\n\n  file-key-2  # rotated 2026\n")
    config = ServeConfig(api_key_env="MY_KEYS", api_key_file=str(key_file))
    keys = read_keys(config, {"MY_KEYS": " env-a , ,env-b"})
    assert keys == ["env-a", "env-b", "file-key-1", "file-key-2"]


def test_no_key_is_an_error_unless_auth_is_switched_off(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match=r"no API key: put one or more in \$WALTZ_SERVE_API_KEYS"):
        read_keys(ServeConfig(), {})
    assert read_keys(ServeConfig(require_api_key=False), {}) == []
    with pytest.raises(AuthConfigError, match=r"cannot read serve\.api_key_file"):
        read_keys(ServeConfig(api_key_file=str(tmp_path / "missing")), {})


def test_key_checker_accepts_only_a_bearer_of_a_known_key() -> None:
    checker = KeyChecker([digest("alpha-key"), digest("beta-key")])
    assert checker.allows("Bearer alpha-key") and checker.allows("bearer beta-key")
    for header in [None, "", "Bearer", "Bearer ", "Bearer alpha", "Basic alpha-key", "alpha-key", "Bearer alpha-keyx"]:
        assert not checker.allows(header), header
    assert KeyChecker([]).allows(None)  # auth switched off


# -- the protocol loop ------------------------------------------------------------------------------------------

SETTINGS = RolloutSettings(
    conversation_system="CONV",
    feedback_system="FB",
    conversation_params=GenerationParams(24, 0.0),
    feedback_params=GenerationParams(32, 0.0),
    t_max=1,
    feedback_template="{prompt}|{history}|{response}",
)


def fake_agent(texts: list[str], seen: list[list[Message]]) -> pipeline.AgentCall:
    replies = iter(texts)

    async def call(chat: list[Message], params: GenerationParams) -> Completion:
        seen.append(chat)
        return Completion(text=next(replies), prompt_token_ids=(1, 2), token_ids=(3,), finish_reason="stop")

    return call


def verdict(unsafe: bool, feedback: str = "") -> str:
    return format_feedback(unsafe=unsafe, overrefuse=False, reasoning="r", feedback=feedback)


def run(
    request: ChatRequest, conversation: list[str], feedback: list[str], settings: RolloutSettings = SETTINGS
) -> tuple[pipeline.ServedAnswer, list[list[Message]], list[list[Message]]]:
    conv_seen: list[list[Message]] = []
    fb_seen: list[list[Message]] = []
    served = asyncio.run(
        pipeline.answer(request, settings, fake_agent(conversation, conv_seen), fake_agent(feedback, fb_seen))
    )
    return served, conv_seen, fb_seen


REQUEST = parse_chat_request(
    body(messages=[{"role": "user", "content": "u0"}, {"role": "assistant", "content": "a0"}, USER]), LIMITS
)


def test_a_passing_verdict_keeps_the_first_answer() -> None:
    served, conv, fb = run(REQUEST, ["c0"], [verdict(False)])
    assert served.final.text == "c0" and not served.triggered and len(conv) == 1
    assert conv[0] == [
        {"role": "system", "content": "CONV"},
        {"role": "user", "content": "u0"},
        {"role": "assistant", "content": "a0"},
        {"role": "user", "content": "hello"},
    ]
    assert fb[0] == [{"role": "system", "content": "FB"}, {"role": "user", "content": "hello||c0"}]
    assert set(served.seconds) == {"conversation_generation", "feedback_generation", "total"}


def test_a_flag_triggers_one_revision_with_only_the_feedback_text() -> None:
    served, conv, _ = run(REQUEST, ["c0", "c1"], [verdict(True, "be careful")])
    assert served.final.text == "c1" and served.triggered and served.revisions == 1
    assert conv[1][-2:] == [
        {"role": "assistant", "content": "c0"},
        {"role": "user", "content": SETTINGS.revision_template.replace("{feedback}", "be careful")},
    ]
    assert "revision_generation" in served.seconds


def test_unparsable_feedback_stops_the_episode() -> None:
    served, conv, _ = run(REQUEST, ["c0"], ["not json at all"])
    assert served.final.text == "c0" and not served.triggered and len(conv) == 1
    assert served.verdicts[0].error == "no JSON object found"


def test_t_max_two_reviews_the_revision_with_history() -> None:
    settings = RolloutSettings(**{**SETTINGS.__dict__, "t_max": 2})
    served, conv, fb = run(REQUEST, ["c0", "c1", "c2"], [verdict(True, "f0"), verdict(True, "f1")], settings)
    assert served.final.text == "c2" and served.revisions == 2 and len(fb) == 2 and len(conv) == 3
    assert "Earlier answer 1:\nc0\n\nYour feedback on it:\nf0" in fb[1][-1]["content"]


def test_the_waltz_object_shows_or_hides_the_feedback_texts() -> None:
    served, _, _ = run(REQUEST, ["c0", "c1"], [verdict(True, "be careful")])
    shown = pipeline.waltz_object(served, hide_feedback=False)
    assert shown["triggered"] and shown["labels"] == {"unsafe": True, "overrefuse": False}
    assert shown["feedback"] == "be careful" and shown["rounds"][0]["reasoning"] == "r"
    hidden = pipeline.waltz_object(served, hide_feedback=True)
    assert "be careful" not in json.dumps(hidden) and "feedback" not in hidden and hidden["feedback_hidden"]
    assert hidden["labels"] == shown["labels"] and set(hidden["timings_ms"]) == set(shown["timings_ms"])


def test_stream_events_replay_the_final_text_exactly() -> None:
    served, _, _ = run(REQUEST, ["  two words\nand more "], [verdict(False)])
    events = openai_api.stream_events("id", 1, "waltz", served, {"triggered": False}, include_usage=True)
    assert events[-1] == "data: [DONE]\n\n" and all(e.startswith("data: ") and e.endswith("\n\n") for e in events)
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "  two words\nand more "
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["waltz"] == {"triggered": False}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 3


# -- wiring without a cluster -----------------------------------------------------------------------------------


def serve_config(*overrides: str) -> WaltzConfig:
    from waltz_ray.config import load_config

    return load_config(None, list(overrides))


def test_deployment_options_fixed_replicas_or_autoscaling() -> None:
    pytest.importorskip("ray")
    from waltz_ray.serve.app import deployment_options

    config = serve_config("serve.conversation.num_replicas=2", "serve.feedback.autoscaling.enabled=true")
    fixed = deployment_options(config.serve.conversation, config.serve)
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["max_ongoing_requests"] == 16 and fixed["max_queued_requests"] == 32
    assert fixed["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 0.0}
    scaled = deployment_options(config.serve.feedback, config.serve)
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"]["max_replicas"] == 2
    from ray.serve.config import AutoscalingConfig

    AutoscalingConfig(**scaled["autoscaling_config"])  # Serve accepts it


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda: ApiError(418, "teapot"), 418),
        (lambda: __import__("ray.serve.exceptions").serve.exceptions.BackPressureError(3, 2), 503),
        (lambda: TimeoutError(), 504),
        (lambda: KeyError("bug"), 500),
    ],
)
def test_failures_map_to_statuses(make: Callable[[], BaseException], status: int) -> None:
    pytest.importorskip("ray")
    from waltz_ray.serve.ingress import error_for

    error = error_for(make(), retry_after_s=1.5)
    assert error.status == status
    if status == 503:
        assert error.headers == {"Retry-After": "2"}
    if status == 500:
        assert error.message == "internal error"  # nothing of the exception leaks
