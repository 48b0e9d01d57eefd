"""The episode queue between the rollout producer and the learners: bounded, versioned, with staleness admission.

Records are small: an object ref to the episode batch plus each agent's policy versions and token counts. A record
whose oldest completion lags the learner by more than ``max_staleness`` versions for either agent is dropped and
counted, never used and never silently lost. Pure Python (no ray): the refs are opaque here.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from waltz_ray.types import AGENTS, AgentName, Episode


class QueueFullError(RuntimeError):
    """``put`` on a full queue: the producer must check ``free`` before launching more rollouts."""


@dataclass(frozen=True)
class EpisodeRecord:
    """One produced episode batch, by reference.

    ``versions[agent]`` holds the policy version stamped on every completion that agent generated in the batch
    (weights may change between the stages of one rollout, so a batch can mix versions); ``tokens[agent]`` counts
    the tokens it generated; ``seconds`` are the rollout's stage timings (conversation_generation, ...).
    """

    episodes: Any  # ray.ObjectRef to list[Episode]; never the episodes themselves
    launch: int
    versions: Mapping[AgentName, tuple[int, ...]]
    tokens: Mapping[AgentName, int]
    seconds: Mapping[str, float] = field(default_factory=dict)

    def oldest(self, agent: AgentName) -> int | None:
        """The oldest policy version of ``agent`` in the batch (None when it generated nothing)."""
        return min(self.versions.get(agent, ()), default=None)

    def lags(self, learner_versions: Mapping[AgentName, int]) -> dict[AgentName, list[int]]:
        """Per completion, how many versions its policy lags the learner's current one."""
        return {a: [learner_versions[a] - v for v in self.versions.get(a, ())] for a in AGENTS}


def batch_versions(episodes: Sequence[Episode]) -> tuple[dict[AgentName, tuple[int, ...]], dict[AgentName, int]]:
    """(policy versions of every completion, generated tokens) per agent for one episode batch."""
    versions: dict[AgentName, list[int]] = {a: [] for a in AGENTS}
    tokens: dict[AgentName, int] = dict.fromkeys(AGENTS, 0)
    for episode in episodes:
        for rnd in episode.rounds:
            versions["conversation"].append(rnd.response.policy_version)
            tokens["conversation"] += len(rnd.response.token_ids)
            if rnd.feedback is not None:
                versions["feedback"].append(rnd.feedback.policy_version)
                tokens["feedback"] += len(rnd.feedback.token_ids)
    return {a: tuple(v) for a, v in versions.items()}, tokens


class EpisodeQueue:
    """A bounded FIFO of ``EpisodeRecord`` with admission control on staleness.

    ``capacity`` bounds the records produced but not yet consumed; the producer also counts its in-flight rollouts
    against it (``free``), so the rollouts ahead of the learners never exceed it. ``take`` returns the oldest
    admissible record, dropping (and counting in ``dropped_stale``) every older one that is too stale.
    """

    def __init__(self, capacity: int, max_staleness: int) -> None:
        if capacity < 1:
            raise ValueError(f"EpisodeQueue capacity must be >= 1 (got {capacity})")
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0 (got {max_staleness})")
        self.capacity = capacity
        self.max_staleness = max_staleness
        self._records: deque[EpisodeRecord] = deque()
        self.admitted = 0
        self.dropped_stale = 0
        self.dropped_by_agent: Counter[str] = Counter()
        self.histogram: dict[AgentName, Counter[int]] = {a: Counter() for a in AGENTS}

    def __len__(self) -> int:
        return len(self._records)

    def free(self, in_flight: int = 0) -> int:
        """Slots left for new rollouts, counting ``in_flight`` ones that will land here."""
        return max(0, self.capacity - len(self._records) - in_flight)

    def put(self, record: EpisodeRecord) -> None:
        if len(self._records) >= self.capacity:
            raise QueueFullError(f"episode queue is full ({self.capacity} records); the producer ran ahead of it")
        self._records.append(record)

    def clear(self) -> int:
        """Forget every waiting record (end of run); returns how many there were."""
        count = len(self._records)
        self._records.clear()
        return count

    def stale_agents(self, record: EpisodeRecord, learner_versions: Mapping[AgentName, int]) -> list[AgentName]:
        """Agents whose oldest completion in ``record`` lags its learner by more than ``max_staleness``."""
        stale: list[AgentName] = []
        for agent in AGENTS:
            oldest = record.oldest(agent)
            if oldest is not None and learner_versions[agent] - oldest > self.max_staleness:
                stale.append(agent)
        return stale

    def take(self, learner_versions: Mapping[AgentName, int]) -> EpisodeRecord | None:
        """The oldest admissible record (None when none is left); stale ones on the way are dropped and counted."""
        while self._records:
            record = self._records.popleft()
            stale = self.stale_agents(record, learner_versions)
            if stale:
                self.dropped_stale += 1
                self.dropped_by_agent.update(stale)
                continue
            self.admitted += 1
            for agent, lags in record.lags(learner_versions).items():
                self.histogram[agent].update(lags)
            return record
        return None

    def counters(self) -> dict[str, int]:
        """The cumulative admission counters (saved in checkpoints so a resumed run continues them)."""
        return {
            "admitted": self.admitted,
            "dropped_stale": self.dropped_stale,
            **{f"dropped_stale_{a}": int(self.dropped_by_agent[a]) for a in AGENTS},
        }

    def restore_counters(self, counters: Mapping[str, int]) -> None:
        self.admitted = int(counters.get("admitted", 0))
        self.dropped_stale = int(counters.get("dropped_stale", 0))
        for a in AGENTS:
            self.dropped_by_agent[a] = int(counters.get(f"dropped_stale_{a}", 0))

    def metrics(self) -> dict[str, float]:
        """Depth, capacity and the cumulative admission counters."""
        out: dict[str, float] = {
            "queue/depth": float(len(self._records)),
            "queue/capacity": float(self.capacity),
            "queue/admitted": float(self.admitted),
            "queue/dropped_stale": float(self.dropped_stale),
        }
        out.update({f"queue/dropped_stale_{a}": float(self.dropped_by_agent[a]) for a in AGENTS})
        return out


def staleness_metrics(record: EpisodeRecord, learner_versions: Mapping[AgentName, int]) -> dict[str, float]:
    """Per agent: the batch's max and mean version lag and a histogram (``staleness/<agent>/lag_<k>`` counts)."""
    out: dict[str, float] = {}
    for agent, lags in record.lags(learner_versions).items():
        if not lags:
            continue
        out[f"staleness/{agent}/max"] = float(max(lags))
        out[f"staleness/{agent}/mean"] = sum(lags) / len(lags)
        out.update({f"staleness/{agent}/lag_{k}": float(n) for k, n in sorted(Counter(lags).items())})
    return out
