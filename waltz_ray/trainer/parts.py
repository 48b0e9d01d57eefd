"""The parts a training loop is handed: where batches come from, how the agents are updated, how new weights reach
the generators. Each is a small Protocol with an inline implementation (``waltz_ray.trainer.inline``) and a Ray one
(``waltz_ray.runtime.driver``); the loop (``waltz_ray.trainer.loop``) is the same for both."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from waltz_ray.types import AgentName, Episode, Prompt, Sample

if TYPE_CHECKING:
    from waltz_ray.factory import Agent
    from waltz_ray.rollout import StageTimer
    from waltz_ray.trainer.batches import BatchPlanner


@dataclass
class RolloutBatch:
    """One batch of finished episodes, ready to learn from.

    ``launch``: the planner's batch number (prompts, seeds and episode ids follow from it); ``seconds``: the
    rollout's stage timings; ``metrics`` and ``histograms``: whatever the source measured on the way (queue depth,
    staleness), logged with the step."""

    episodes: list[Episode]
    launch: int
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, list[float]] = field(default_factory=dict)


class RolloutSource(Protocol):
    """Produces the episode batches a run learns from, in launch order, and runs the greedy evaluations."""

    def next_batch(self, learner_versions: dict[AgentName, int]) -> RolloutBatch:
        """The next batch to learn (generated with weights at most ``runtime.max_staleness`` versions behind
        ``learner_versions``)."""
        ...

    def evaluate(self, prompts: Sequence[Prompt]) -> list[Episode]:
        """Greedy episodes of the current pair on ``prompts``, through the same generators and judge."""
        ...

    def counters(self) -> dict[str, int]:
        """Cumulative counters a resume carries on (relaunches, dropped batches, ...)."""
        ...

    def close(self) -> None: ...


class Updater(Protocol):
    """Turns each trained agent's samples into advantages and one learner update; returns the metrics."""

    def update(self, trained: Sequence[tuple[Agent, list[Sample]]], timer: StageTimer) -> dict[str, float]: ...

    def counters(self) -> dict[str, int]: ...


class WeightSync(Protocol):
    """Makes the generators of ``agents`` serve their learners' current weights; returns its metrics."""

    def sync(self, agents: Sequence[Agent], timer: StageTimer) -> dict[str, float]: ...

    def counters(self) -> dict[str, int]: ...


@dataclass
class TrainParts:
    """Everything a ``Trainer`` runs on. ``close`` releases what the parts hold (Ray actors, threads)."""

    agents: dict[AgentName, Agent]
    planner: BatchPlanner
    rollout: RolloutSource
    updater: Updater
    weight_sync: WeightSync
    close: Callable[[], None] = lambda: None
    runtime: Any = None  # what built the parts, for tests and tools (the Ray topology; None inline)
