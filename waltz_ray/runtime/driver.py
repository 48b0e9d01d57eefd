"""The Ray driver (``--runtime ray``): the inline trainer's step code with remote pools plugged in.

Each step: the producer launches rollouts ahead (up to ``max_staleness`` batches), the oldest admitted batch is
learned with ``InlineTrainer.learn`` (rewards, samples, advantages, updates on the learner groups: in stage 2
both groups at once, ``runtime.concurrent_updates``), and the new weights are pushed to the generation pools.
The output contract is the inline one (config.yaml, metrics.jsonl, eval_initial.json, eval_final.json,
checkpoints/final/{conversation,feedback}); metrics add queue/, staleness/ and time/weight_sync,
time/rollout_wait.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from waltz_ray.checkpoint import ResumePoint
from waltz_ray.config import WaltzConfig
from waltz_ray.engines.hf import load_tokenizer
from waltz_ray.factory import Agent
from waltz_ray.rollout import RolloutSettings, StageTimer
from waltz_ray.runtime.producer import RolloutProducer
from waltz_ray.runtime.proxies import (
    GeneratorFault,
    RemoteCallError,
    RemoteGenerator,
    RemoteJudge,
    RemoteLearnerGroup,
    generator_fault,
    wait_all,
)
from waltz_ray.runtime.queue import EpisodeQueue, staleness_metrics
from waltz_ray.runtime.topology import Topology, build_topology
from waltz_ray.tracking import Tracker
from waltz_ray.train import InlineTrainer, find_resume_point
from waltz_ray.types import AGENTS, AgentName, Episode, Prompt, Sample

log = logging.getLogger(__name__)
T = TypeVar("T")


def queue_capacity(config: WaltzConfig) -> int:
    """``max_staleness + 1``: one batch being learned plus ``max_staleness`` produced ahead; any more would be
    stale by the time it is learned."""
    return config.runtime.max_staleness + 1


def concurrently(calls: Sequence[Callable[[], T]], name: str = "concurrently") -> list[T]:
    """Run every call in a thread of its own and wait for all of them; their results, in order. When calls raise,
    the first failure in the order of ``calls`` is raised once every call has finished (none is left running).
    For calls that spend their time waiting on remote actors (the GIL is free meanwhile)."""
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix=name) as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]


def remote_agents(topology: Topology) -> dict[AgentName, Agent]:
    timeout = topology.config.runtime.remote_timeout_s
    return {
        name: Agent(
            name,
            RemoteGenerator(topology.generation[name], timeout, topology.policy_versions[name]),
            RemoteLearnerGroup(topology.learners[name], timeout, topology.policy_versions[name]),
            load_tokenizer(topology.model_paths[name]),
        )
        for name in AGENTS
    }


class RayTrainer(InlineTrainer):
    """``InlineTrainer`` whose generators, judge and learners are Ray pools; rollouts run ahead of the learners."""

    def __init__(
        self,
        config: WaltzConfig,
        out_dir: str | Path,
        *,
        check_resources: bool = True,
        resume: ResumePoint | None = None,
    ) -> None:
        """``resume``: every pool loads the checkpoint's weights (learners its optimizer state too) before the
        first rollout, and the producer continues at the checkpoint's launch."""
        self.topology = build_topology(config, check=check_resources, resume=resume)
        try:
            assert self.topology.judge is not None
            judge = RemoteJudge(self.topology.judge, config.runtime.remote_timeout_s)
            super().__init__(config, out_dir, agents=remote_agents(self.topology), judge=judge, resume=resume)
            total = config.stages.stage1_steps + config.stages.stage2_steps
            self.queue = EpisodeQueue(queue_capacity(config), config.runtime.max_staleness)
            self.producer = RolloutProducer(
                self.topology.rollout,
                self.queue,
                self.step_batch,
                total,
                self._rollout_timeout(),
                start=(self.last_launch + 1, self.start_step),
                recover=self.refresh_generation_pools,
            )
            self.latest_state: dict[AgentName, tuple[Any, int]] = {}  # each agent's last pushed weights (by ref)
            self.generator_refreshes = 0
            self.duplicate_episodes = 0
            self.seen_episodes: set[str] = set()
            if resume is not None:
                self.queue.restore_counters(resume.state.counters)
                self.producer.relaunches = resume.state.counters.get("rollout_relaunches", 0)
                self.generator_refreshes = resume.state.counters.get("generator_refreshes", 0)
        except BaseException:
            self.topology.shutdown()
            raise

    def _rollout_timeout(self) -> float:
        # Each stage of a rollout (c0, every feedback and revision round, judge) is bounded by remote_timeout_s.
        return self.config.runtime.remote_timeout_s * (2 * self.config.rollout.t_max + 2)

    def run(self) -> dict[str, Any]:
        try:
            return super().run()
        finally:
            self.close()

    def close(self) -> None:
        self.producer.drain()
        self.topology.shutdown()

    def counters(self) -> dict[str, int]:
        return (
            super().counters()
            | self.queue.counters()
            | {
                "rollout_relaunches": self.producer.relaunches,
                "generator_refreshes": self.generator_refreshes,
            }
        )

    def step_batch(self, step: int) -> tuple[list[Prompt], RolloutSettings, list[str]]:
        """The inline batch, plus the policy version every generator must hold to take its work."""
        prompts, settings, ids = super().step_batch(step)
        versions = {name: agent.generator.policy_version for name, agent in self.agents.items()}
        return prompts, replace(settings, min_versions=versions), ids

    def _evaluate(self, filename: str | None) -> dict[str, float]:
        """The inline evaluation through the generation pools; a generation fault during it (an actor restarting,
        or back with stale weights) refreshes the pools and evaluates again (greedy: the same result)."""
        for agent in self.agents.values():  # a restarted actor must not evaluate with older weights
            agent.generator.min_version = agent.generator.policy_version
        attempts = self.config.runtime.max_actor_restarts + 1
        for attempt in range(attempts):
            try:
                return super()._evaluate(filename)
            except GeneratorFault as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("evaluation hit a generation fault, refreshing the pools and evaluating again: %s", exc)
                self.refresh_generation_pools()
        raise AssertionError("unreachable")

    def _push(self, name: AgentName, state: Any, version: int) -> None:
        """A weight sync that outlives generation actors restarting under it: wait for them, push again."""
        pool, timeout = self.topology.generation[name], self.config.runtime.remote_timeout_s
        for attempt in range(self.config.runtime.max_actor_restarts + 1):
            try:
                self.topology.weight_sync[name].push(state, version)
                return
            except RemoteCallError as exc:
                if not generator_fault(exc.__cause__) or attempt == self.config.runtime.max_actor_restarts:
                    raise
                log.warning("weight sync to %s hit a restarting actor; pushing again: %s", pool.name, exc)
                for i, actor in enumerate(pool.actors):
                    _version_once_up(actor, pool.label(i), timeout)
                self.generator_refreshes += 1

    def refresh_generation_pools(self) -> None:
        """After a generation fault: wait until every generation actor answers (Ray restarts dead ones; one that
        ran out of restarts is an error naming it), then push the current weights to any pool holding older ones."""
        timeout = self.config.runtime.remote_timeout_s
        for name, agent in self.agents.items():
            pool = self.topology.generation[name]
            held = [_version_once_up(actor, pool.label(i), timeout) for i, actor in enumerate(pool.actors)]
            wanted = agent.generator.policy_version
            if min(held) < wanted:
                state, version = self.latest_state[name]
                log.warning("%s holds versions %s; pushing version %d again", pool.name, held, version)
                self._push(name, state, version)
                self.generator_refreshes += 1

    def learner_versions(self) -> dict[AgentName, int]:
        return {name: agent.learner.policy_version for name, agent in self.agents.items()}

    def train_step(self, step: int, stage: int, tracker: Tracker) -> dict[str, Any]:
        start = time.perf_counter()
        versions = self.learner_versions()
        record = self.producer.next(versions)
        self.last_launch = record.launch
        episodes = self._unseen(self.producer.episodes(record))
        waited = time.perf_counter() - start
        timer = StageTimer()
        timer.seconds.update(record.seconds)  # the rollout's stages come first, under their own names
        metrics = self.learn(step, stage, episodes, timer, tracker)
        metrics.update(self.queue.metrics())
        metrics["queue/in_flight"] = float(len(self.producer.pending))
        metrics.update({f"queue/record_tokens_{agent}": float(n) for agent, n in record.tokens.items()})
        metrics.update(staleness_metrics(record, versions))
        lags = record.lags(versions)
        tracker.log_histograms({f"staleness/{agent}/lag": [float(x) for x in v] for agent, v in lags.items()}, step + 1)
        metrics["time/rollout_wait"] = waited
        metrics["faults/rollout_relaunches"] = float(self.producer.relaunches)
        metrics["faults/generator_refreshes"] = float(self.generator_refreshes)
        metrics["faults/duplicate_episodes"] = float(self.duplicate_episodes)
        return metrics

    def update_agents(
        self, trained: list[tuple[Agent, list[Sample]]], timer: StageTimer, group_size: int
    ) -> dict[str, float]:
        """With ``runtime.concurrent_updates`` (the default) each agent's log-probs, advantages and update run in a
        driver thread of their own, so both learner groups work at the same time instead of one waiting for the
        other; the metrics are the inline ones, in the same order."""
        if not self.config.runtime.concurrent_updates:
            return super().update_agents(trained, timer, group_size)
        calls = [partial(self._update, agent, samples, timer, group_size) for agent, samples in trained]
        return {k: v for part in concurrently(calls, "learner-update") for k, v in part.items()}

    def _unseen(self, episodes: list[Episode]) -> list[Episode]:
        """Episodes whose id was never learned before (a regenerated batch must not be learned twice); duplicates
        are dropped and counted."""
        fresh = [e for e in episodes if e.episode_id not in self.seen_episodes]
        self.duplicate_episodes += len(episodes) - len(fresh)
        self.seen_episodes.update(e.episode_id for e in fresh)
        return fresh

    def sync_weights(self, agents: list[Agent], timer: StageTimer) -> None:
        """Push each updated learner's weights to its generation pool (state dict by reference, never by value)."""
        with timer("weight_sync"):
            for agent in agents:
                version = agent.learner.policy_version
                if version == agent.generator.policy_version:
                    continue  # nothing trained (empty batch)
                state = agent.learner.state_dict_ref()
                self._push(agent.name, state, version)
                self.latest_state[agent.name] = (state, version)  # a restarted generator gets these again
                agent.generator.policy_version = version

    def save_checkpoint(self, path: Path) -> None:
        for agent in self.agents.values():
            agent.learner.save_pretrained(path / agent.name)
            agent.tokenizer.save_pretrained(path / agent.name)

    # write_resume_payload is the inline one: agent.learner.save_state runs on the learner group's actors, so on a
    # cluster the run directory must be shared storage that every learner node mounts at the same path.


def _version_once_up(actor: Any, label: str, timeout_s: float) -> int:
    """The actor's policy version as soon as it answers; while Ray is restarting it, ask again (bounded)."""
    from ray.exceptions import ActorUnavailableError

    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            return int(wait_all([actor.get_policy_version.remote()], [label], max(remaining, 1.0), "restart")[0])
        except RemoteCallError as exc:
            if not isinstance(exc.__cause__, ActorUnavailableError) or remaining <= 0:
                raise RemoteCallError(f"{label} did not come back after a restart: {exc}") from exc
            time.sleep(0.2)


@contextmanager
def ray_session() -> Iterator[None]:
    """Connect to ``$RAY_ADDRESS`` or start a local Ray with this machine's CPUs; shut down only what we started."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"address": address, "include_dashboard": False}
    if address is None:
        # a local Ray of our own: this machine's CPUs, every server on loopback (Ray binds all interfaces otherwise)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray lowers its workers' priority by 15 nice levels by default (to keep the driver responsive), but here the
        # actors do all the work while the driver waits: on a shared machine that default starves the run.
        os.environ.setdefault("RAY_worker_niceness", "0")
        kwargs.update(num_cpus=os.cpu_count() or 1, _node_ip_address="127.0.0.1")
    ray.init(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def train_ray(config: WaltzConfig, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """``waltz-ray train --runtime ray``: the Ray counterpart of ``waltz_ray.train.train``."""
    start = time.perf_counter()
    point = find_resume_point(config, out_dir) if resume else None  # before Ray starts: a bad checkpoint fails fast
    with ray_session():
        result = RayTrainer(config, out_dir, resume=point).run()
    result["seconds"] = time.perf_counter() - start
    return result
