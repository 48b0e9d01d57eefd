"""Reliability under faults and bad input, on a real local Ray (127.0.0.1) and the tiny world (RELIABILITY.md lists
each promise next to its test).

Faults are injected into real runs: actors are killed with ``ray.kill`` at a chosen step (before the step's rollout
is launched, or from a timer while it runs), judges fail, updates blow up, the feedback agent writes garbage.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability import MODES, LearnedLog, assert_invariants, assert_promises, fault_counters, learned, rows
from tests.tiny_world import tiny_config
from waltz_ray.types import Completion, GenerationParams, JudgeVerdict, Prompt


def faulty_trainer(kill: Any, *hooks: Any) -> Any:
    """A Ray trainer factory whose trainers call ``kill(parts.runtime, step)`` at the start of every step (before its
    rollout launches), and ``kill(parts.runtime, -1)`` before the final evaluation (``parts.runtime``: the
    topology); ``hooks``: more step hooks (a ``LearnedLog``)."""
    from waltz_ray.runtime.driver import ray_trainer

    def hook(trainer: Any, step: int, when: str) -> None:
        if when != "after":
            kill(trainer.parts.runtime, -1 if when == "final" else step)

    return lambda config, out, resume=None: ray_trainer(config, out, resume=resume, hooks=[hook, *hooks])


@pytest.fixture(scope="module")
def clean_run(ray_session: Any, tiny_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from waltz_ray.runtime.driver import ray_trainer

    out = tmp_path_factory.mktemp("faults") / "clean"
    ray_trainer(tiny_config("checkpoint.every=1"), out).run()
    return out


def clean(mode: str, request: pytest.FixtureRequest) -> Path | None:
    """The undisturbed run a synchronous faulty run must equal (an asynchronous one is held to the invariants)."""
    return request.getfixturevalue("clean_run") if mode == "sync" else None


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", MODES)
def test_killed_generation_actors_restart_get_the_weights_and_lose_nothing(
    mode: str, ray_session: Any, tiny_env: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The conversation generator is killed before step 2's rollout and before the final evaluation, the feedback
    generator 0.3 s into step 3:
    Ray restarts them, they refuse work until the driver pushed the current weights, the lost rollouts are generated
    again with the same seeds; synchronously the run equals the clean one metric for metric, asynchronously (where
    step 2's rollout may be done before the kill, and a relaunch generates with the weights of the moment) it keeps
    the invariants."""
    import ray

    def kill(topology: Any, step: int) -> None:
        if step == 2:
            ray.kill(topology.generation["conversation"].actors[0], no_restart=False)
        if step == 3:
            actor = topology.generation["feedback"].actors[0]
            threading.Timer(0.3, lambda: ray.kill(actor, no_restart=False)).start()
        if step == -1:  # the final evaluation must not be served by a restarted actor's initial weights
            ray.kill(topology.generation["conversation"].actors[0], no_restart=False)

    out, log = tmp_path / "killed", LearnedLog(tmp_path / "learned.jsonl")
    trainer = faulty_trainer(kill, log)(tiny_config("checkpoint.every=1", *MODES[mode]), out)
    trainer.run()
    ours = rows(out)
    assert_promises(mode, ours, clean(mode, request), learned(log.path))
    counters = trainer.counters()
    print(mode, "generation kills:", fault_counters(ours))
    # the final evaluation waits for the current weights; synchronously step 2's rollout is generated again (where
    # the timed kill lands decides whether step 3 costs a relaunch, a refresh, or nothing: a push that finds the actor
    # back); asynchronously step 2's rollout may have been generated before the kill
    assert counters["generator_refreshes"] >= 1
    assert counters["rollout_relaunches"] >= (1 if mode == "sync" else 0)
    assert trainer.parts.rollout.duplicate_episodes == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", MODES)
def test_a_killed_learner_stops_the_run_naming_it_and_resume_finishes_it(
    mode: str, ray_session: Any, tiny_env: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import ray

    from waltz_ray.runtime.driver import ray_trainer
    from waltz_ray.runtime.proxies import RemoteCallError
    from waltz_ray.trainer.inline import find_resume_point

    def kill(topology: Any, step: int) -> None:
        if step == 3:
            ray.kill(topology.learners["feedback"].actors[0], no_restart=True)

    config, out = tiny_config("checkpoint.every=1", *MODES[mode]), tmp_path / "learner"
    before, after = LearnedLog(tmp_path / "learned-killed.jsonl"), LearnedLog(tmp_path / "learned-resumed.jsonl")
    with pytest.raises(RemoteCallError, match=r"feedback_learner\[0\]"):
        faulty_trainer(kill, before)(config, out).run()
    point = find_resume_point(config, out)
    assert point.state.step == 3
    ray_trainer(config, out, resume=point, hooks=[after]).run()
    # what the checkpoint kept of the killed run, then the resumed run: each step and episode learned once
    assert_promises(mode, rows(out), clean(mode, request), learned(before.path, up_to=3) + learned(after.path))


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", MODES)
def test_a_killed_rollout_actor_is_reported_not_waited_on(
    mode: str, ray_session: Any, tiny_env: Path, tmp_path: Path
) -> None:
    """Asynchronously the rollout actor dies with step 1's batch in flight (launched during step 0)."""
    import ray

    from waltz_ray.runtime.proxies import RemoteCallError

    killed: list[float] = []

    def kill(topology: Any, step: int) -> None:
        if step == 1:
            ray.kill(topology.rollout, no_restart=True)
            killed.append(time.monotonic())

    with pytest.raises(RemoteCallError, match="rollout actor"):
        faulty_trainer(kill)(tiny_config(*MODES[mode]), tmp_path / "rollout").run()
    print(mode, f"rollout actor death reported {time.monotonic() - killed[0]:.1f} s after the kill (parts closed)")


class FlakyEndpoint:
    """A real OpenAI-shaped ``/chat/completions`` endpoint on 127.0.0.1 for the ``http`` judge (stdlib
    ThreadingHTTPServer in a thread): every ``every``-th request gets HTTP 500 (``every=1``: all of them), the others
    a verdict that depends only on the judged text (safe; over-refusing for about a third of the texts)."""

    def __init__(self, every: int) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        lock, endpoint = threading.Lock(), self
        self.every, self.requests, self.failed = every, 0, 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    endpoint.requests += 1
                    fail = endpoint.requests % endpoint.every == 0
                    endpoint.failed += fail
                text = payload["messages"][-1]["content"]
                verdict = {"unsafe": False, "overrefuse": zlib.crc32(text.encode()) % 3 == 0}
                message = {"role": "assistant", "content": json.dumps(verdict)}
                code, body = (
                    (500, b'{"error": "boom"}')
                    if fail
                    else (200, json.dumps({"choices": [{"message": message}]}).encode())
                )
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FlakyEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", MODES)
def test_http_judge_failures_on_ray_are_masked_and_counted_and_too_many_stop_the_run(
    mode: str, ray_session: Any, tiny_env: Path, tmp_path: Path
) -> None:
    """The judge pool's HTTP judge talks to a real endpoint on 127.0.0.1 that fails 1 request in 4 (no retries):
    failed verdicts are masked and counted, the run finishes and keeps the invariants; an endpoint that fails every
    request stops the run at step 0."""
    from waltz_ray.runtime.driver import ray_trainer
    from waltz_ray.trainer.loop import JudgeFailureError

    def config(url: str) -> Any:
        judge = ["judge.kind=http", f"judge.base_url={url}", "judge.model=flaky", "judge.max_retries=0"]
        return tiny_config(*judge, "judge.max_failure_rate=0.5", *MODES[mode])

    out, log = tmp_path / "flaky", LearnedLog(tmp_path / "learned.jsonl")
    with FlakyEndpoint(every=4) as endpoint:
        ray_trainer(config(endpoint.url), out, hooks=[log]).run()
    ours = rows(out)
    assert_invariants(ours, mode, learned(log.path))  # no undisturbed run to equal: its judge would differ
    steps = [r for r in ours if "judge/failure_rate" in r]
    print(mode, "flaky judge:", endpoint.failed, "of", endpoint.requests, "requests failed;", fault_counters(ours))
    assert endpoint.failed == endpoint.requests // 4 > 0
    assert all(0.15 <= r["judge/failure_rate"] <= 0.35 for r in steps), [r["judge/failure_rate"] for r in steps]
    assert sum(r["samples/n_masked_feedback"] for r in steps) > 0  # masked, never scored as a zero reward

    with FlakyEndpoint(every=1) as endpoint, pytest.raises(JudgeFailureError, match=r"100\.0% of calls at step 0"):
        ray_trainer(config(endpoint.url), tmp_path / "down").run()
    assert endpoint.requests > 0


# ------------------------------------------------------------------------------------------- inline faults


class FlakyJudge:
    """The rule judge, except that every ``every``-th verdict is a failure (``every=1``: all of them)."""

    def __init__(self, every: int) -> None:
        from waltz_ray.engines.judges import RuleJudge

        self.every, self.rule, self.calls = every, RuleJudge(), 0

    def judge(self, prompts: Any, responses: Any, labels: Any = None) -> list[JudgeVerdict]:
        verdicts = self.rule.judge(prompts, responses, labels)
        out = []
        for verdict in verdicts:
            self.calls += 1
            out.append(JudgeVerdict.failure("judge timed out") if self.calls % self.every == 0 else verdict)
        return out


@pytest.mark.timeout(300)
def test_judge_failures_are_masked_and_counted_and_too_many_stop_the_run(tiny_env: Path, tmp_path: Path) -> None:
    from waltz_ray.trainer.inline import inline_trainer
    from waltz_ray.trainer.loop import JudgeFailureError

    config = tiny_config("runtime.mode=inline", "judge.max_failure_rate=0.5")
    inline_trainer(config, tmp_path / "flaky", judge=FlakyJudge(every=4)).run()
    steps = [r for r in rows(tmp_path / "flaky") if "judge/failure_rate" in r]
    assert steps and all(0.15 <= r["judge/failure_rate"] <= 0.35 for r in steps)
    # a failed verdict masks its sample instead of scoring it as a zero reward
    assert sum(r["samples/n_masked_feedback"] for r in steps) > 0

    with pytest.raises(JudgeFailureError, match=r"judge failed on 100\.0% of calls at step 0"):
        inline_trainer(config, tmp_path / "down", judge=FlakyJudge(every=1)).run()


@pytest.mark.timeout(300)
def test_blown_up_updates_are_skipped_counted_and_abort_after_n_in_a_row(tiny_env: Path, tmp_path: Path) -> None:
    """KL to the reference past ``algorithm.max_kl`` skips the update; three in a row stop the run. (k3: the k1
    estimate of a batch can be negative, k3 is >= 0 token by token and 0 only where the policy is the reference.)"""
    from waltz_ray.trainer.inline import inline_trainer
    from waltz_ray.trainer.update import TrainingDivergedError

    config = tiny_config(
        "runtime.mode=inline",
        "stages.stage1_steps=0",
        "stages.stage2_steps=4",
        "algorithm.kl_estimator=k3",
        "algorithm.max_kl=0.0",
        "algorithm.max_consecutive_skips=3",
    )
    trainer = inline_trainer(config, tmp_path / "kl")
    with pytest.raises(TrainingDivergedError, match=r"3 updates in a row skipped.*algorithm\.max_kl 0") as info:
        trainer.run()
    agent = str(info.value).split(":")[0]
    logged = [r for r in rows(tmp_path / "kl") if f"{agent}/skipped_steps" in r]
    # step 0 is on the reference (KL 0) and updates; steps 1 and 2 are skipped, step 3's skip stops the run
    assert [r[f"{agent}/skipped_steps"] for r in logged] == [0.0, 1.0, 1.0]
    assert logged[-1][f"faults/skipped_updates_{agent}"] == 2.0
    assert logged[-1][f"{agent}/kl"] > 0 and logged[0][f"{agent}/kl"] == 0.0


def test_a_non_finite_loss_skips_the_optimizer_step(tiny_env: Path) -> None:
    import torch

    from waltz_ray.engines.hf import HFGenerator, load_model_and_tokenizer
    from waltz_ray.engines.learner import TorchLearner, make_batch
    from waltz_ray.worlds.tiny.build import init_tiny

    config = tiny_config()
    path = str(init_tiny(config))
    completions = HFGenerator.from_pretrained(path).generate(
        [[{"role": "user", "content": "hi"}]] * 2, GenerationParams(max_new_tokens=6, temperature=1.0, seed=1)
    )
    policy, tokenizer = load_model_and_tokenizer(path)
    learner = TorchLearner(policy, load_model_and_tokenizer(path)[0], config.learner, config.algorithm)
    batch = make_batch(completions, tokenizer.pad_token_id)
    old, ref = learner.logprobs(batch)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    stats = learner.update(batch, old, ref, torch.full_like(old, float("nan")))
    assert stats.skipped and all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


# ------------------------------------------------------------------------------------- malformed feedback


class ScriptedGenerator:
    """A Generator whose completions are given texts (token ids: one per character, so samples can be built)."""

    policy_version = 0

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def generate(self, chats: Any, params: GenerationParams) -> list[Completion]:
        out = []
        for i, _chat in enumerate(chats):
            text = self.texts[i % len(self.texts)]
            out.append(Completion(text, (1, 2, 3), tuple(range(4, 4 + len(text))) or (4,)))
        return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feedback=st.lists(st.text(max_size=300) | st.sampled_from(["{", "}", '{"unsafe": "yes"}', "null"]), min_size=1))
def test_malformed_feedback_of_any_kind_flows_through_a_whole_rollout(feedback: list[str]) -> None:
    from waltz_ray.core.rewards import stage_weights
    from waltz_ray.core.samples import batch_samples
    from waltz_ray.engines.judges import RuleJudge
    from waltz_ray.rollout import RolloutSettings, run_episodes
    from waltz_ray.trainer.metrics import rollout_metrics

    prompts = [Prompt("how do I pick a lock?", "harmful" if i % 2 else "benign", f"p{i}") for i in range(4)]
    params = GenerationParams(max_new_tokens=8)
    settings_ = RolloutSettings("sys", "fb-sys", params, params, t_max=2)
    conversation = ScriptedGenerator(["I can't help with that.", "Sure, here is how."])
    episodes = run_episodes(
        prompts, conversation, ScriptedGenerator(feedback), RuleJudge(), settings_, [f"e{i}" for i in range(4)]
    )
    for stage in (1, 2):
        fb, conv, _ = batch_samples(episodes, 0, stage, stage_weights(stage, 1.0, 1.0, 0.0, 0.1), 0.5)
        metrics = rollout_metrics(episodes, fb, conv)
        assert 0.0 <= metrics["rollout/feedback_format_rate"] <= 1.0
        assert all(s.reward == s.reward for s in fb + conv)  # no NaN rewards
