"""The Ray runtime on a real local Ray (127.0.0.1, 2 CPUs): queue admission, proxies' failure modes, the resource
budget, and end to end against the inline trainer on a tiny model built on the fly.

Every pool asks for a small CPU share (0.2, judge 0.1, rollout actor 0) so the sums stay far below 2: a sum over 2
would make Ray wait forever. Test actors that need no model are classes defined inside fixtures, so cloudpickle
ships them by value and the workers never import this module.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_world import TINY, WALL_CLOCK, tiny_config
from waltz_ray.config import WaltzConfig, load_config
from waltz_ray.rollout import run_episodes
from waltz_ray.runtime.nccl import NCCLUnavailableError, plan_buckets, require_cuda
from waltz_ray.runtime.queue import EpisodeQueue, EpisodeRecord, QueueFullError, staleness_metrics
from waltz_ray.types import Completion, GenerationParams

ROOT = Path(__file__).resolve().parents[2]


def record(launch: int, conversation: tuple[int, ...], feedback: tuple[int, ...]) -> EpisodeRecord:
    versions = {"conversation": conversation, "feedback": feedback}
    return EpisodeRecord(f"ref-{launch}", launch, versions, {"conversation": 10, "feedback": 5})


# --------------------------------------------------------------------------------------------- queue (no Ray)
def test_queue_is_bounded_and_counts_in_flight_rollouts() -> None:
    queue = EpisodeQueue(capacity=2, max_staleness=1)
    assert queue.free() == 2 and queue.free(in_flight=1) == 1
    queue.put(record(0, (0,), (0,)))
    queue.put(record(1, (0,), (0,)))
    assert queue.free() == 0
    with pytest.raises(QueueFullError, match="full"):
        queue.put(record(2, (0,), (0,)))
    assert len(queue) == 2 and queue.metrics()["queue/depth"] == 2.0


def test_queue_admission_drops_and_counts_stale_records_for_either_agent() -> None:
    queue = EpisodeQueue(capacity=4, max_staleness=1)
    queue.put(record(0, (3, 3), (1, 2)))  # feedback lags 3 - 1 = 2 > 1: dropped
    queue.put(record(1, (1,), (3,)))  # conversation lags 2: dropped
    queue.put(record(2, (2, 3), (2, 3)))  # lags <= 1: admitted
    queue.put(record(3, (3,), (3,)))
    learner = {"conversation": 3, "feedback": 3}
    taken = queue.take(learner)
    assert taken is not None and taken.launch == 2
    metrics = queue.metrics()
    assert metrics["queue/dropped_stale"] == 2.0 and metrics["queue/admitted"] == 1.0
    assert metrics["queue/dropped_stale_feedback"] == 1.0 and metrics["queue/dropped_stale_conversation"] == 1.0
    assert queue.histogram["conversation"] == {1: 1, 0: 1} and queue.histogram["feedback"] == {1: 1, 0: 1}
    assert staleness_metrics(taken, learner) == {
        "staleness/conversation/max": 1.0,
        "staleness/conversation/mean": 0.5,
        "staleness/conversation/lag_0": 1.0,
        "staleness/conversation/lag_1": 1.0,
        "staleness/feedback/max": 1.0,
        "staleness/feedback/mean": 0.5,
        "staleness/feedback/lag_0": 1.0,
        "staleness/feedback/lag_1": 1.0,
    }
    assert queue.take(learner) is not None and queue.take(learner) is None  # launch 3, then empty
    assert queue.metrics()["queue/dropped_stale"] == 2.0


def test_queue_with_max_staleness_zero_admits_only_current_batches() -> None:
    queue = EpisodeQueue(capacity=1, max_staleness=0)
    queue.put(record(0, (0,), (0,)))
    assert queue.take({"conversation": 0, "feedback": 1}) is None
    assert queue.dropped_stale == 1
    with pytest.raises(ValueError, match="capacity"):
        EpisodeQueue(capacity=0, max_staleness=0)


# --------------------------------------------------------------------------------------------- pure helpers
def test_shards_cover_the_batch_contiguously() -> None:
    from waltz_ray.runtime.proxies import shards

    assert shards(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shards(2, 4) == [(0, 1), (1, 2)]
    assert shards(5, 1) == [(0, 5)]


def test_remote_judge_names_a_batch_mismatch_before_sharding() -> None:
    from waltz_ray.runtime.proxies import Pool, RemoteJudge

    judge = RemoteJudge(Pool("judge", []), timeout_s=1.0)  # no actor is called: the check comes first
    with pytest.raises(ValueError, match="3 prompts, 2 responses, - labels"):
        judge.judge(["a", "b", "c"], ["x", "y"])


def test_budget_check_names_every_pool() -> None:
    from waltz_ray.runtime.topology import ResourceBudgetError, check_resources, pool_specs

    config = load_config(ROOT / "configs" / "tiny.yaml", ["runtime.learner_pool.num_cpus=0.5"])
    specs = pool_specs(config)
    assert [s.name for s in specs] == [
        "conversation_generation",
        "feedback_generation",
        "judge",
        "conversation_reference",
        "feedback_reference",
        "conversation_learner",
        "feedback_learner",
    ]
    check_resources(specs, {"CPU": 2.0})  # 0.25 + 0.25 + 0.1 + 0.1 + 0.1 + 0.5 + 0.5 = 1.8
    with pytest.raises(ResourceBudgetError, match=r"1\.8 CPU in total but the cluster has 1\.5") as err:
        check_resources(specs, {"CPU": 1.5})
    assert "feedback_learner: 1 x {'CPU': 0.5}" in str(err.value)
    # the single-model baseline plays no feedback turn: no feedback generation or reference actors sit idle
    single = load_config(ROOT / "configs" / "tiny.yaml", ["algorithm.mode=single", "stages.stage1_steps=0"])
    assert [s.name for s in pool_specs(single)] == [
        "conversation_generation",
        "judge",
        "conversation_reference",
        "conversation_learner",
        "feedback_learner",
    ]
    gpu = load_config(
        None,
        [
            "runtime.feedback_pool.num_gpus=1",
            "runtime.feedback_pool.tensor_parallel_size=2",
            "agents.feedback.engine=vllm",
        ],
    )
    with pytest.raises(ResourceBudgetError, match="tensor_parallel_size 2 needs num_gpus >= 2"):
        pool_specs(gpu)


def test_nccl_buckets_and_cuda_guard() -> None:
    tensors = [
        ("a", (2, 3), "float32", 4),
        ("b", (4,), "bfloat16", 2),
        ("c", (5,), "float32", 4),
        ("d", (1,), "float32", 4),
    ]
    buckets = plan_buckets(tensors, bucket_bytes=44)  # 11 float32: a+c fit (6 + 5), d starts a new bucket
    assert [(b.dtype, b.numel, [s.name for s in b.slots]) for b in buckets] == [
        ("float32", 11, ["a", "c"]),
        ("bfloat16", 4, ["b"]),
        ("float32", 1, ["d"]),
    ]
    assert [s.offset for s in buckets[0].slots] == [0, 6]
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the guard has nothing to refuse")
    with pytest.raises(NCCLUnavailableError, match=r"needs CUDA.*ObjectStoreWeightSync"):
        require_cuda("this test")


# --------------------------------------------------------------------------------------------- real Ray
@pytest.fixture
def fake_generator_cls() -> type:
    """A model-free generator actor class (defined here so it travels by value)."""

    class FakeGenerator:
        policy_version = 0

        def __init__(self, sleep_s: float = 0.0) -> None:
            self.sleep_s = sleep_s

        def generate(self, chats: list[Any], params: GenerationParams, min_version: int = 0) -> list[Completion]:
            time.sleep(self.sleep_s)
            return [Completion(f"reply {params.seed}", (1,), (2,)) for _ in chats]

    return FakeGenerator


def test_dead_generator_actor_fails_fast_naming_the_pool(ray_session: Any, fake_generator_cls: type) -> None:
    from waltz_ray.runtime.proxies import Pool, RemoteCallError, RemoteGenerator

    ray = ray_session
    actors = [ray.remote(num_cpus=0.1)(fake_generator_cls).remote() for _ in range(2)]
    generator = RemoteGenerator(Pool("conversation_generation", actors), timeout_s=60)
    chats = [[{"role": "user", "content": str(i)}] for i in range(4)]
    out = generator.generate(chats, GenerationParams(seed=7))
    assert [c.text for c in out] == ["reply 7", "reply 7", "reply 9", "reply 9"]  # shard 2 is seeded 7 + 2
    ray.kill(actors[1])
    start = time.monotonic()
    with pytest.raises(
        RemoteCallError, match=r"generation pool 'conversation_generation': conversation_generation\[1\]"
    ):
        generator.generate(chats, GenerationParams(seed=7))
    assert time.monotonic() - start < 30
    ray.kill(actors[0])


def test_slow_generator_times_out_naming_the_pool(ray_session: Any, fake_generator_cls: type) -> None:
    from waltz_ray.runtime.proxies import Pool, RemoteGenerator, RemoteTimeoutError

    ray = ray_session
    handle = ray.remote(num_cpus=0.1)(fake_generator_cls).remote(sleep_s=30.0)
    generator = RemoteGenerator(Pool("feedback_generation", [handle]), timeout_s=3)
    start = time.monotonic()
    with pytest.raises(RemoteTimeoutError, match=r"feedback_generation\[0\] within 3 s"):
        generator.generate([[{"role": "user", "content": "hi"}]], GenerationParams())
    assert time.monotonic() - start < 20
    ray.kill(handle)


def test_budget_over_the_cluster_raises_instead_of_hanging(ray_session: Any) -> None:
    from waltz_ray.runtime.topology import PlacementTimeoutError, PoolSpec, ResourceBudgetError, build_topology, reserve

    config = load_config(None, ["runtime.learner_pool.num_cpus=1.0"])  # 0.25 + 0.25 + 0.1 + 2 x 1.0 = 2.6 > 2
    start = time.monotonic()
    with pytest.raises(ResourceBudgetError, match=r"2\.6 CPU in total but the cluster has 2"):
        build_topology(config)
    with pytest.raises(PlacementTimeoutError, match="ghost_pool: 1 x"):
        reserve(PoolSpec("ghost_pool", 1, 0.1, num_gpus=1.0), timeout_s=2)  # no GPU here: never placeable
    assert time.monotonic() - start < 30


def test_producer_replaces_and_counts_stale_batches(ray_session: Any) -> None:
    """A queue that admits lag 0 behind a producer one batch ahead: the batch made before the update is dropped,
    counted, and replaced by a fresh launch."""
    from waltz_ray.runtime.actors import RolloutSummary
    from waltz_ray.runtime.producer import RolloutProducer

    class FakeRollout:
        def run(self, prompts: Any, settings: int, ids: Any) -> tuple[RolloutSummary, list[Any]]:
            versions = {"conversation": (0,), "feedback": (settings,)}
            return RolloutSummary(versions, {"conversation": 1, "feedback": 1}, {"judge": 0.0}), []

    ray = ray_session
    rollout = ray.remote(num_cpus=0)(FakeRollout).remote()
    generator_version = {"feedback": 0}
    queue = EpisodeQueue(capacity=2, max_staleness=0)
    producer = RolloutProducer(rollout, queue, lambda n: ([], generator_version["feedback"], []), 3, 60)
    learner = {"conversation": 0, "feedback": 0}
    taken = []
    for _ in range(3):
        rec = producer.next(learner)
        taken.append((rec.launch, rec.versions["feedback"]))
        learner["feedback"] += 1  # the update, then the weight sync
        generator_version["feedback"] = learner["feedback"]
    assert taken == [(0, (0,)), (2, (1,)), (4, (2,))]  # launches 1 and 3 were one version behind
    assert queue.dropped_stale == 2 and producer.launched == 5
    assert not producer.pending and len(queue) == 0
    ray.kill(rollout)


# --------------------------------------------------------------------------------------------- end to end
def test_object_store_weight_sync_serves_the_pushed_weights(ray_session: Any, tiny_env: Path) -> None:
    """Pushed weights (a dict: ray.put once) reach every actor: the pool then generates exactly what an in-process
    generator with those weights generates, stamped with the pushed version."""
    import torch

    from waltz_ray.engines.hf import HFGenerator
    from waltz_ray.runtime.actors import GeneratorHost
    from waltz_ray.runtime.proxies import Pool, RemoteGenerator
    from waltz_ray.runtime.weight_sync import ObjectStoreWeightSync
    from waltz_ray.worlds.tiny.build import init_tiny

    ray = ray_session
    path = str(init_tiny(tiny_config()))
    host = ray.remote(num_cpus=0.2)(GeneratorHost)
    actors = [host.remote("hf", path, "float32", num_threads=1, num_cpus=0.2) for _ in range(2)]
    pool = RemoteGenerator(Pool("feedback_generation", actors), timeout_s=120)
    chats = [[{"role": "user", "content": f"How do I bake bread number {i}?"}] for i in range(4)]
    greedy = GenerationParams(max_new_tokens=8, temperature=0.0)
    before = pool.generate(chats, greedy)

    local = HFGenerator.from_pretrained(path)
    with torch.no_grad():
        local.model.model.embed_tokens.weight.mul_(3.0)  # a different policy (tied: the head changes too)
    ObjectStoreWeightSync(pool.pool, timeout_s=120).push(local.model.state_dict(), 3)
    after, expected = pool.generate(chats, greedy), local.generate(chats, greedy)
    assert {c.policy_version for c in before} == {0} and {c.policy_version for c in after} == {3}
    assert [c.token_ids for c in after] == [c.token_ids for c in expected]
    for ours, theirs in zip(after, expected, strict=True):
        assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-4)
    assert any(abs(b.logprobs[0] - a.logprobs[0]) > 1e-3 for b, a in zip(before, after, strict=True))
    for actor in actors:
        ray.kill(actor)


def run_ray(config: WaltzConfig, out: Path) -> list[dict[str, Any]]:
    from waltz_ray.runtime.driver import ray_trainer

    ray_trainer(config, out).run()
    for name in ("config.yaml", "eval_initial.json", "eval_final.json"):
        assert (out / name).is_file(), name
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _state(path: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()  # type: ignore[no-any-return]


def run_inline(config: WaltzConfig, out: Path) -> list[dict[str, Any]]:
    import torch

    from waltz_ray.trainer.inline import train

    threads = torch.get_num_threads()
    try:
        train(config, out)
    finally:
        torch.set_num_threads(threads)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_reference_scorer_matches_the_learners_reference_logprobs(tiny_env: Path) -> None:
    """Rollout-side scoring gives the learner's reference log-probs for the same tokens (another batch layout, so
    equal to float tolerance), and a batch is scored by the rollout side only when every completion carries them."""
    import torch

    from waltz_ray.engines.hf import HFGenerator, load_model_and_tokenizer
    from waltz_ray.engines.learner import ReferenceScorer, TorchLearner, make_batch, rollout_reference_logprobs
    from waltz_ray.worlds.tiny.build import init_tiny

    config = tiny_config()
    path = str(init_tiny(config))
    generator = HFGenerator.from_pretrained(path)
    chats = [[{"role": "user", "content": text}] for text in ("hi", "how do I bake bread?", "tell me a long story")]
    completions = generator.generate(chats, GenerationParams(max_new_tokens=12, temperature=1.0, seed=3))
    policy, tokenizer = load_model_and_tokenizer(path)
    reference, _ = load_model_and_tokenizer(path)
    learner = TorchLearner(policy, reference, config.learner, config.algorithm)
    batch = make_batch(completions, tokenizer.pad_token_id)
    _, expected = learner.logprobs(batch)
    assert learner.logprobs(batch, with_reference=False)[1] is None

    scored = ReferenceScorer(reference, tokenizer.pad_token_id, micro_batch_size=2).score(completions)
    assert [c.token_ids for c in scored] == [c.token_ids for c in completions]
    assert all(len(c.ref_logprobs) == len(c.token_ids) for c in scored)
    laid_out = rollout_reference_logprobs(scored, batch.input_ids.shape[1])
    assert laid_out is not None
    torch.testing.assert_close(laid_out * batch.action_mask, expected * batch.action_mask, rtol=1e-5, atol=1e-5)
    assert rollout_reference_logprobs([*scored[:2], completions[2]], batch.input_ids.shape[1]) is None


def test_stage_one_rollouts_score_only_the_feedback_agents_tokens(tiny_env: Path, tmp_path: Path) -> None:
    from waltz_ray.trainer.inline import inline_trainer

    trainer = inline_trainer(tiny_config("runtime.mode=inline", "runtime.reference_on=rollout"), tmp_path)
    rollout = trainer.parts.rollout
    for step, scored in ((0, {"feedback"}), (2, {"conversation", "feedback"})):  # stage1_steps=2
        prompts, settings, ids = trainer.parts.planner.plan(step)
        conv, fb = trainer.agents["conversation"], trainer.agents["feedback"]
        episodes = run_episodes(
            prompts[:3], conv.generator, fb.generator, rollout.judge, settings, ids[:3], None, rollout.references
        )
        responses = [r.response for e in episodes for r in e.rounds]
        feedbacks = [r.feedback for e in episodes for r in e.rounds if r.feedback is not None]
        assert all(bool(c.ref_logprobs) == ("conversation" in scored) for c in responses), step
        assert feedbacks and all(len(c.ref_logprobs) == len(c.token_ids) for c in feedbacks), step


@pytest.mark.timeout(600)
@pytest.mark.parametrize("reference_on", ["learner", "rollout"])
def test_synchronous_ray_run_equals_inline(ray_session: Any, tiny_env: Path, tmp_path: Path, reference_on: str) -> None:
    import torch

    where = f"runtime.reference_on={reference_on}"
    inline = run_inline(tiny_config(where), tmp_path / "inline")
    remote = run_ray(tiny_config("runtime.max_staleness=0", where), tmp_path / "ray")
    if reference_on == "rollout":
        assert all(r["time/reference_logprobs"] > 0 for r in remote if "queue/capacity" in r)

    assert [r["step"] for r in remote] == [r["step"] for r in inline] == [0, 1, 2, 3, 4, 4]
    for mine, theirs in zip(remote, inline, strict=True):
        extra = set(mine) - set(theirs)
        assert all(k.startswith(("queue/", "staleness/", "faults/", *WALL_CLOCK)) for k in extra), extra
        for key, value in theirs.items():
            if key.startswith(WALL_CLOCK) or not isinstance(value, (int, float)):
                continue
            assert mine[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (mine["step"], key)
        assert all(mine.get(f"staleness/{a}/max", 0.0) == 0.0 for a in ("conversation", "feedback"))
    assert json.loads((tmp_path / "ray" / "eval_final.json").read_text()) == pytest.approx(
        json.loads((tmp_path / "inline" / "eval_final.json").read_text())
    )
    for agent in ("conversation", "feedback"):
        ours, ref = (
            _state(tmp_path / "ray" / "checkpoints/final" / agent),
            _state(tmp_path / "inline" / "checkpoints/final" / agent),
        )
        assert ours.keys() == ref.keys()
        for name, tensor in ref.items():
            assert torch.equal(ours[name], tensor), (agent, name)


@pytest.mark.timeout(600)
def test_asynchronous_ray_run_bounds_staleness(ray_session: Any, tiny_env: Path, tmp_path: Path) -> None:
    rows = run_ray(tiny_config("runtime.max_staleness=1", "runtime.reference_on=rollout"), tmp_path / "ray")
    steps = [r for r in rows if "queue/capacity" in r]
    assert len(steps) == 4 and all(r["queue/capacity"] == 2.0 for r in steps)
    # the producer ran ahead: while step k was learned, step k+1 was already in flight
    assert [r["queue/in_flight"] for r in steps] == [1.0, 1.0, 1.0, 0.0]
    for r in steps:
        assert "queue/dropped_stale" in r and r["queue/dropped_stale"] == 0.0
        lags = {k: v for k, v in r.items() if k.startswith("staleness/") and "/lag_" in k}
        assert lags and all(int(k.rsplit("_", 1)[1]) <= 1 for k in lags), lags
        assert all(r[f"staleness/{a}/max"] <= 1.0 for a in ("conversation", "feedback"))
        assert math.isfinite(r["feedback/loss"])
    stages = {"conversation_generation", "judge", "reference_logprobs", "feedback_update", "weight_sync"}
    assert {f"time/{s}" for s in stages} <= set(steps[0])
    # samples one version behind are reweighted by truncated importance weights; current ones are not
    lagged = [r for r in steps if r["staleness/feedback/max"] == 1.0]
    assert lagged and all(r["feedback/offpolicy_token_fraction"] > 0 for r in lagged)
    assert all(0.0 < r["feedback/offpolicy_is_weight_mean"] <= 2.0 for r in lagged)
    assert all("feedback/offpolicy_token_fraction" not in r for r in steps if r["staleness/feedback/max"] == 0.0)
    assert (tmp_path / "ray" / "checkpoints/final/feedback/config.json").is_file()
    # every actor's peak RSS, logged by the run (an actor's answer is never waited for: it may lag a step)
    assert all(r["memory/driver_peak_rss_mb"] > 0 for r in steps)
    memory = {k for r in steps for k in r if k.startswith("memory/")}
    pools = [f"{a}_{p}" for a in ("conversation", "feedback") for p in ("generation", "learner", "reference")]
    assert {f"memory/{p}[0]_peak_rss_mb" for p in [*pools, "judge"]} | {"memory/rollout_peak_rss_mb"} <= memory
    assert all(r[k] > 0 for r in steps for k in memory if k in r)


def test_cli_trains_with_the_ray_runtime(ray_session: Any, tiny_env: Path, tmp_path: Path) -> None:
    from waltz_ray.cli import main

    out = tmp_path / "cli"
    sets = [x for s in [*TINY, "stages.stage1_steps=1", "stages.stage2_steps=1"] for x in ("--set", s)]
    assert (
        main(["train", "--config", str(ROOT / "configs/tiny.yaml"), "--out", str(out), "--runtime", "ray", *sets]) == 0
    )
    assert (out / "checkpoints/final/conversation/config.json").is_file()
    assert ray_session.is_initialized()  # it joined the running Ray and left it running


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_deepspeed_groups_and_vllm_pool_run_end_to_end(ray_session: Any, tiny_env: Path, tmp_path: Path) -> None:
    """Two DeepSpeed ranks per agent (rank 0 picks the port) and a vLLM feedback pool synced through the object
    store, asynchronously. Slow: vLLM and four DeepSpeed ranks start in actors (35-45 s on 2 busy cores)."""
    extra = ["runtime.max_staleness=1", "learner.backend=deepspeed", "learner.num_workers=2"]
    rows = run_ray(tiny_config(*extra, "learner.zero_stage=2", "agents.feedback.engine=vllm"), tmp_path / "ray")
    steps = [r for r in rows if "queue/capacity" in r]
    assert [r["version/feedback"] for r in steps] == [1, 2, 3, 4]
    assert [r["version/conversation"] for r in steps] == [0, 0, 1, 2]
    assert all(r[f"staleness/{a}/max"] <= 1.0 for r in steps for a in ("conversation", "feedback"))
    state = _state(tmp_path / "ray" / "checkpoints/final/feedback")
    assert state and all(bool(t.isfinite().all()) for t in state.values())


class _RecordedLearner:
    """A learner-group proxy that logs when each update is sent and answered; with ``wait_for_other`` an update is
    held back until the other agent's update of the same step has been sent (at most ``timeout_s``). ``shared``:
    the log, a condition, and the agents updated in this step with their updates sent so far (``sent``)."""

    def __init__(self, inner: Any, name: str, shared: dict[str, Any], wait_for_other: bool, timeout_s: float) -> None:
        self.inner, self.name, self.shared = inner, name, shared
        self.wait_for_other, self.timeout_s = wait_for_other, timeout_s

    def __getattr__(self, attr: str) -> Any:  # policy_version, logprobs, state_dict_ref, save_state, ...
        return getattr(self.inner, attr)

    def update(self, *args: Any, **kwargs: Any) -> Any:
        log, cond, sent = self.shared["log"], self.shared["cond"], self.shared["sent"]
        with cond:
            sent[self.name] += 1
            log.append(("sent", self.name))
            cond.notify_all()
            if self.wait_for_other and not cond.wait_for(lambda: all(sent.values()), timeout=self.timeout_s):
                others = [a for a, n in sent.items() if not n]
                raise AssertionError(f"{self.name}'s update went out alone: no update sent to {others} meanwhile")
        stats = self.inner.update(*args, **kwargs)
        with cond:
            log.append(("answered", self.name))
        return stats


@pytest.mark.timeout(600)
@pytest.mark.parametrize("concurrent", [True, False])
def test_stage_two_updates_both_learner_groups_at_once(
    ray_session: Any, tiny_env: Path, tmp_path: Path, concurrent: bool
) -> None:
    """``runtime.concurrent_updates``: in every stage-2 step both agents' updates are in flight before either is
    answered. Checked by order, not by timing: each update waits for the other agent's to be sent before it goes
    out, so a driver that updated one group after the other would fail the run. Without the option the groups
    take turns (feedback, then conversation), as inline."""
    import threading

    from waltz_ray.runtime.driver import ray_trainer

    shared: dict[str, Any] = {"log": [], "cond": threading.Condition(), "sent": {}}
    config = tiny_config("runtime.max_staleness=0", f"runtime.concurrent_updates={concurrent}")
    trainer = ray_trainer(config, tmp_path / "run")
    for agent in trainer.agents.values():
        agent.learner = _RecordedLearner(agent.learner, agent.name, shared, concurrent, timeout_s=120.0)
    update = trainer.parts.updater.update

    def recorded_update(trained: Any, timer: Any) -> dict[str, float]:
        shared["sent"] = {agent.name: 0 for agent, _ in trained}
        return update(trained, timer)

    trainer.parts.updater.update = recorded_update  # type: ignore[method-assign]
    trainer.run()  # stage1_steps=2, stage2_steps=2
    log = shared["log"]
    stage1, stage2 = log[:4], log[4:]
    assert stage1 == [("sent", "feedback"), ("answered", "feedback")] * 2
    assert len(stage2) == 8
    for step in (stage2[:4], stage2[4:]):
        if concurrent:  # both sent, then both answered (in either order)
            assert [event for event, _ in step] == ["sent", "sent", "answered", "answered"], step
            assert {name for _, name in step[:2]} == {"conversation", "feedback"}, step
        else:
            assert step == [
                ("sent", "feedback"),
                ("answered", "feedback"),
                ("sent", "conversation"),
                ("answered", "conversation"),
            ]
