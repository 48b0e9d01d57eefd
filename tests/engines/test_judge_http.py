"""Tests for the HTTP judge against a real OpenAI-shaped server on 127.0.0.1 (stdlib ThreadingHTTPServer in a thread).

The server picks its behaviour from a CASE marker in the judged response text and records what it saw.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from waltz_ray.engines.base import Judge
from waltz_ray.engines.judges import DEFAULT_JUDGE_PROMPT, HTTPJudge, build_judge_chat
from waltz_ray.types import JudgeVerdict

SECRET = "sk-test-DO-NOT-LEAK-1234"
OK_BODY = '{"reasoning": "refuses", "unsafe": false, "overrefuse": false}'


class JudgeServer:
    """Shared state of the fake endpoint: per-case hit counts, seen headers/payloads, max in-flight requests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.hits: Counter[str] = Counter()
            self.auth: list[str | None] = []
            self.payloads: list[dict[str, Any]] = []
            # Per case, so a timed-out "slow" handler still sleeping cannot skew another test's count.
            self.in_flight: Counter[str] = Counter()
            self.max_in_flight: Counter[str] = Counter()


def _completion(content: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()


def _make_handler(state: JudgeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            case = re.search(r"CASE:(\w+)", payload["messages"][-1]["content"])
            name = case.group(1) if case else "ok"
            with state.lock:
                state.hits[name] += 1
                hit = state.hits[name]
                state.auth.append(self.headers.get("Authorization"))
                state.payloads.append(payload)
                state.in_flight[name] += 1
                state.max_in_flight[name] = max(state.max_in_flight[name], state.in_flight[name])
            try:
                code, body = self._reply(name, hit)
            finally:  # counted out before the answer is written: a client may send its next request at once
                with state.lock:
                    state.in_flight[name] -= 1
            self._send(code, body)

        def _reply(self, name: str, hit: int) -> tuple[int, bytes]:
            if name == "slow":
                state.stop.wait(3.0)
            if name == "busy":
                state.stop.wait(0.05)
            if name in ("always500",) or (name == "flaky" and hit == 1):
                return 500, b'{"error": "boom"}'
            if name == "ratelimited" and hit == 1:
                return 429, b'{"error": "slow down"}'
            if name == "unauthorized":
                return 401, b'{"error": "bad key"}'
            if name == "malformed":
                return 200, b"{not json at all"
            if name == "unsafe":
                return 200, _completion('```json\n{"unsafe": true, "overrefuse": false}\n```')
            return 200, _completion(OK_BODY)

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, JudgeServer]]:
    state = JudgeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    finally:
        state.stop.set()  # release any handler still sleeping
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def endpoint(server: tuple[str, JudgeServer]) -> tuple[str, JudgeServer]:
    server[1].reset()
    return server


def _judge(url: str, **kwargs: Any) -> HTTPJudge:
    options: dict[str, Any] = {"api_key_env": None, "timeout_s": 2.0, "backoff_s": 0.01} | kwargs
    return HTTPJudge(url, "judge-model", **options)


@pytest.mark.timeout(10)
def test_happy_path_sends_shared_prompt_at_temperature_zero(endpoint: tuple[str, JudgeServer]) -> None:
    url, state = endpoint
    judge = _judge(url)
    assert isinstance(judge, Judge)
    verdicts = judge.judge(["p1", "p2"], ["fine CASE:ok", "steps CASE:unsafe"], ["harmful", "harmful"])
    assert verdicts == [JudgeVerdict(False, False), JudgeVerdict(True, False)]
    payload = next(p for p in state.payloads if "CASE:ok" in p["messages"][-1]["content"])
    assert payload["model"] == "judge-model" and payload["temperature"] == 0
    assert payload["messages"] == build_judge_chat("p1", "fine CASE:ok", "harmful", DEFAULT_JUDGE_PROMPT, False)
    assert state.auth == [None, None]  # no key configured, no header


@pytest.mark.timeout(10)
def test_retries_500_and_429_then_succeeds(endpoint: tuple[str, JudgeServer]) -> None:
    url, state = endpoint
    verdicts = _judge(url, max_retries=2).judge(["p", "q"], ["CASE:flaky", "CASE:ratelimited"])
    assert verdicts == [JudgeVerdict(False, False)] * 2
    assert (state.hits["flaky"], state.hits["ratelimited"]) == (2, 2)


@pytest.mark.timeout(10)
def test_always_500_gives_failure_after_max_retries(endpoint: tuple[str, JudgeServer]) -> None:
    url, state = endpoint
    start = time.monotonic()
    verdicts = _judge(url, max_retries=2).judge(["p"], ["CASE:always500"])
    assert time.monotonic() - start < 2.0
    assert not verdicts[0].ok and "HTTP 500" in (verdicts[0].error or "") and "3 attempts" in (verdicts[0].error or "")
    assert state.hits["always500"] == 3


@pytest.mark.timeout(10)
def test_slow_server_times_out_into_failure(endpoint: tuple[str, JudgeServer]) -> None:
    url, _ = endpoint
    start = time.monotonic()
    verdicts = _judge(url, timeout_s=0.3, max_retries=1).judge(["p", "q"], ["CASE:slow", "CASE:ok"])
    assert time.monotonic() - start < 2.5
    assert not verdicts[0].ok and "ReadTimeout" in (verdicts[0].error or "")
    assert verdicts[1] == JudgeVerdict(False, False)  # one slow item does not sink the batch


@pytest.mark.timeout(10)
def test_401_is_not_retried(endpoint: tuple[str, JudgeServer]) -> None:
    url, state = endpoint
    verdicts = _judge(url, max_retries=3).judge(["p"], ["CASE:unauthorized"])
    assert not verdicts[0].ok and "HTTP 401" in (verdicts[0].error or "")
    assert state.hits["unauthorized"] == 1


@pytest.mark.timeout(10)
def test_malformed_body_and_refused_connection_are_failures(endpoint: tuple[str, JudgeServer]) -> None:
    url, _ = endpoint
    malformed = _judge(url).judge(["p"], ["CASE:malformed"])
    assert not malformed[0].ok and "malformed judge response body" in (malformed[0].error or "")
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens on this port any more
    refused = _judge(f"http://127.0.0.1:{port}", max_retries=1).judge(["p"], ["x"])
    assert not refused[0].ok and "ConnectError" in (refused[0].error or "")


@pytest.mark.timeout(20)
def test_concurrency_limit_bounds_in_flight_requests(endpoint: tuple[str, JudgeServer]) -> None:
    url, state = endpoint
    n = 24
    verdicts = _judge(url, concurrency=3).judge(["p"] * n, [f"item {i} CASE:busy" for i in range(n)])
    assert verdicts == [JudgeVerdict(False, False)] * n
    assert state.hits["busy"] == n
    assert 2 <= state.max_in_flight["busy"] <= 3  # really parallel, never above the limit


@pytest.mark.timeout(10)
def test_api_key_sent_as_bearer_and_hidden_from_repr(
    endpoint: tuple[str, JudgeServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, state = endpoint
    monkeypatch.setenv("WALTZ_JUDGE_API_KEY", SECRET)
    judge = HTTPJudge(url, "judge-model", timeout_s=2.0)
    assert judge.judge(["p"], ["CASE:ok"]) == [JudgeVerdict(False, False)]
    assert state.auth == [f"Bearer {SECRET}"]
    assert SECRET not in repr(judge) and "<set>" in repr(judge)
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    from_file = HTTPJudge(url, "judge-model", api_key_file=key_file, timeout_s=2.0)
    from_file.judge(["p"], ["CASE:ok"])
    assert state.auth[-1] == "Bearer sk-from-file" and "sk-from-file" not in repr(from_file)


def test_constructor_validates_limits() -> None:
    with pytest.raises(ValueError):
        HTTPJudge("http://127.0.0.1:1", "m", concurrency=0)
    with pytest.raises(ValueError):
        HTTPJudge("http://127.0.0.1:1", "m", max_retries=-1)
    assert HTTPJudge("http://127.0.0.1:1", "m", api_key_env=None).judge([], []) == []
