"""The Ray parts of the training loop (``--runtime ray``): the same ``Trainer`` as inline, handed remote parts.

- ``RayRollout``: the rollout actor generates up to ``runtime.max_staleness`` batches ahead of the learners
  (``RolloutProducer`` + the bounded, versioned ``EpisodeQueue``); evaluation runs through the generation pools.
- ``ConcurrentUpdater`` (``waltz_ray.trainer.update``): in stage 2 both learner groups update at the same time
  (``runtime.concurrent_updates``).
- ``PoolWeightSync``: pushes each updated learner group's weights to its generation pool and brings restarted
  generation actors back to the current weights.

The output contract is the inline one; metrics add queue/, staleness/, faults/, time/weight_sync,
time/rollout_wait and every actor's peak RSS (memory/<pool label>_peak_rss_mb, ``runtime.memory``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from waltz_ray.checkpoint import ResumePoint
from waltz_ray.config import WaltzConfig
from waltz_ray.engines.hf import load_tokenizer
from waltz_ray.factory import Agent, rollout_settings
from waltz_ray.rollout import StageTimer, run_episodes
from waltz_ray.runtime.memory import MemoryProbe
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
from waltz_ray.trainer.batches import BatchPlanner, PlannedBatch
from waltz_ray.trainer.inline import find_resume_point, load_run_prompts, seed_everything
from waltz_ray.trainer.loop import StepHook, Trainer
from waltz_ray.trainer.parts import RolloutBatch, TrainParts
from waltz_ray.trainer.update import AgentUpdate, ConcurrentUpdater, SequentialUpdater
from waltz_ray.types import AGENTS, AgentName, Episode, Prompt

log = logging.getLogger(__name__)


def queue_capacity(config: WaltzConfig) -> int:
    """``max_staleness + 1``: one batch being learned plus ``max_staleness`` produced ahead; any more would be
    stale by the time it is learned."""
    return config.runtime.max_staleness + 1


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


class PoolWeightSync:
    """Pushes learner weights to the generation pools (state dict by reference, never by value) and keeps the last
    pushed weights, so a generation actor Ray restarted can be brought back to them (``refresh``)."""

    def __init__(self, topology: Topology, agents: dict[AgentName, Agent], counters: dict[str, int]) -> None:
        self.topology, self.agents = topology, agents
        self.timeout = topology.config.runtime.remote_timeout_s
        self.max_restarts = topology.config.runtime.max_actor_restarts
        self.latest_state: dict[AgentName, tuple[Any, int]] = {}  # each agent's last pushed weights (by ref)
        self.generator_refreshes = counters.get("generator_refreshes", 0)

    def sync(self, agents: Sequence[Agent], timer: StageTimer) -> dict[str, float]:
        with timer("weight_sync"):
            for agent in agents:
                version = agent.learner.policy_version
                if version == agent.generator.policy_version:
                    continue  # nothing trained (empty batch)
                state = agent.learner.state_dict_ref()  # type: ignore[attr-defined]  (a RemoteLearnerGroup)
                self.push(agent.name, state, version)
                self.latest_state[agent.name] = (state, version)  # a restarted generator gets these again
                agent.generator.policy_version = version
        return {"faults/generator_refreshes": float(self.generator_refreshes)}

    def counters(self) -> dict[str, int]:
        return {"generator_refreshes": self.generator_refreshes}

    def push(self, name: AgentName, state: Any, version: int) -> None:
        """A weight sync that outlives generation actors restarting under it: wait for them, push again."""
        pool = self.topology.generation[name]
        for attempt in range(self.max_restarts + 1):
            try:
                self.topology.weight_sync[name].push(state, version)
                return
            except RemoteCallError as exc:
                if not generator_fault(exc.__cause__) or attempt == self.max_restarts:
                    raise
                log.warning("weight sync to %s hit a restarting actor; pushing again: %s", pool.name, exc)
                for i, actor in enumerate(pool.actors):
                    _version_once_up(actor, pool.label(i), self.timeout)
                self.generator_refreshes += 1

    def refresh(self) -> None:
        """After a generation fault: wait until every generation actor answers (Ray restarts dead ones; one that
        ran out of restarts is an error naming it), then push the current weights to any pool holding older ones."""
        for name, agent in self.agents.items():
            pool = self.topology.generation[name]
            held = [_version_once_up(actor, pool.label(i), self.timeout) for i, actor in enumerate(pool.actors)]
            if held and min(held) < agent.generator.policy_version:  # an idle agent's pool holds no actor
                state, version = self.latest_state[name]
                log.warning("%s holds versions %s; pushing version %d again", pool.name, held, version)
                self.push(name, state, version)
                self.generator_refreshes += 1


class RayRollout:
    """Episode batches from the rollout actor, produced ahead of the learners and admitted by staleness; each
    episode id is learned at most once (a batch generated again after a fault is not learned twice)."""

    def __init__(
        self,
        config: WaltzConfig,
        topology: Topology,
        agents: dict[AgentName, Agent],
        judge: RemoteJudge,
        planner: BatchPlanner,
        pools: PoolWeightSync,
        resume: ResumePoint | None,
    ) -> None:
        self.config, self.agents, self.judge, self.planner, self.pools = config, agents, judge, planner, pools
        state = resume.state if resume is not None else None
        counters = state.counters if state is not None else {}
        self.queue = EpisodeQueue(queue_capacity(config), config.runtime.max_staleness)
        self.queue.restore_counters(counters)
        # each stage of a rollout (c0, every feedback and revision round, judge) is bounded by remote_timeout_s
        timeout = config.runtime.remote_timeout_s * (2 * config.rollout.t_max + 2)
        total = config.stages.stage1_steps + config.stages.stage2_steps
        start = (state.launch, state.step) if state is not None else (0, 0)
        self.producer = RolloutProducer(
            topology.rollout, self.queue, self.plan, total, timeout, start=start, recover=pools.refresh
        )
        self.producer.relaunches = counters.get("rollout_relaunches", 0)
        self.duplicate_episodes = 0
        self.seen_episodes: set[str] = set()
        self.memory = MemoryProbe(topology)  # never waits: an actor's answer is logged the step it arrives

    def plan(self, launch: int) -> PlannedBatch:
        """The planned batch, plus the policy version every generator must hold to take its work."""
        prompts, settings, ids = self.planner.plan(launch)
        versions = {name: agent.generator.policy_version for name, agent in self.agents.items()}
        return prompts, replace(settings, min_versions=versions), ids

    def next_batch(self, learner_versions: dict[AgentName, int]) -> RolloutBatch:
        start = time.perf_counter()
        record = self.producer.next(learner_versions)
        episodes = self._unseen(self.producer.episodes(record))
        metrics = self.queue.metrics()
        metrics["queue/in_flight"] = float(len(self.producer.pending))
        metrics.update({f"queue/record_tokens_{agent}": float(n) for agent, n in record.tokens.items()})
        metrics.update(staleness_metrics(record, learner_versions))
        metrics["time/rollout_wait"] = time.perf_counter() - start
        metrics["faults/rollout_relaunches"] = float(self.producer.relaunches)
        metrics["faults/duplicate_episodes"] = float(self.duplicate_episodes)
        metrics.update(self.memory.metrics())
        lags = record.lags(learner_versions)
        histograms = {f"staleness/{agent}/lag": [float(x) for x in v] for agent, v in lags.items()}
        return RolloutBatch(episodes, record.launch, dict(record.seconds), metrics, histograms)

    def _unseen(self, episodes: list[Episode]) -> list[Episode]:
        fresh = [e for e in episodes if e.episode_id not in self.seen_episodes]
        self.duplicate_episodes += len(episodes) - len(fresh)
        self.seen_episodes.update(e.episode_id for e in fresh)
        return fresh

    def evaluate(self, prompts: Sequence[Prompt]) -> list[Episode]:
        """The inline evaluation through the generation pools; a generation fault during it (an actor restarting,
        or back with stale weights) refreshes the pools and evaluates again (greedy: the same result)."""
        for agent in self.agents.values():  # a restarted actor must not evaluate with older weights
            agent.generator.min_version = agent.generator.policy_version  # type: ignore[attr-defined]
        ids = [f"eval-{i}" for i in range(len(prompts))]
        settings = rollout_settings(self.config, evaluation=True)
        conv, fb = self.agents["conversation"], self.agents["feedback"]
        attempts = self.config.runtime.max_actor_restarts + 1
        for attempt in range(attempts):
            try:
                return run_episodes(list(prompts), conv.generator, fb.generator, self.judge, settings, ids)
            except GeneratorFault as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("evaluation hit a generation fault, refreshing the pools and evaluating again: %s", exc)
                self.pools.refresh()
        raise AssertionError("unreachable")

    def counters(self) -> dict[str, int]:
        return self.queue.counters() | {"rollout_relaunches": self.producer.relaunches}

    def close(self) -> None:
        self.producer.drain()


def ray_trainer(
    config: WaltzConfig,
    out_dir: str | Path,
    *,
    check_resources: bool = True,
    resume: ResumePoint | None = None,
    hooks: Sequence[StepHook] = (),
) -> Trainer:
    """A trainer on Ray parts. ``resume``: every pool loads the checkpoint's weights (learners its optimizer state
    too) before the first rollout, and the producer continues at the checkpoint's launch. Inside ``ray_session``."""
    topology = build_topology(config, check=check_resources, resume=resume)
    try:
        if config.runtime.num_threads:
            torch.set_num_threads(config.runtime.num_threads)
        seed_everything(config.seed)
        assert topology.judge is not None
        judge = RemoteJudge(topology.judge, config.runtime.remote_timeout_s)
        agents = remote_agents(topology)
        train_prompts, eval_prompts = load_run_prompts(config, {name: a.tokenizer for name, a in agents.items()})
        state = resume.state if resume is not None else None
        counters = state.counters if state is not None else {}
        planner = BatchPlanner(config, train_prompts, state.data_position if state else 0)
        pools = PoolWeightSync(topology, agents, counters)
        rollout = RayRollout(config, topology, agents, judge, planner, pools, resume)
        update = AgentUpdate(config, counters)
        updater = ConcurrentUpdater(update) if config.runtime.concurrent_updates else SequentialUpdater(update)

        def close() -> None:
            rollout.close()
            topology.shutdown()

        parts = TrainParts(agents, planner, rollout, updater, pools, close=close, runtime=topology)
        return Trainer(
            config, out_dir, parts, eval_prompts, resume=resume, reference_paths=topology.reference_paths, hooks=hooks
        )
    except BaseException:
        topology.shutdown()
        raise


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
    if os.environ.get("WALTZ_FORBID_RAY") == "1":
        raise RuntimeError("Ray is switched off here (WALTZ_FORBID_RAY=1, set by make fast-test)")
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
    """``waltz-ray train --runtime ray``."""
    start = time.perf_counter()
    point = find_resume_point(config, out_dir) if resume else None  # before Ray starts: a bad checkpoint fails fast
    with ray_session():
        result = ray_trainer(config, out_dir, resume=point).run()
    result["seconds"] = time.perf_counter() - start
    return result
