"""The rollout producer: launches episode batches on the rollout actor ahead of the learners.

At most ``capacity = max_staleness + 1`` batches are outstanding (in flight on the rollout actor or waiting in the
queue), so a batch launched now is consumed after at most ``max_staleness`` more learner updates: the staleness
bound holds by construction, and the queue's admission check is the safety net that drops and counts any record
that breaks it anyway. With ``max_staleness: 0`` one batch is launched, awaited and learned at a time: the inline
sequence exactly.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from waltz_ray.rollout import RolloutSettings
from waltz_ray.runtime.proxies import GeneratorFault, RemoteCallError, wait_all
from waltz_ray.runtime.queue import EpisodeQueue, EpisodeRecord
from waltz_ray.types import AgentName, Prompt

log = logging.getLogger(__name__)
StepBatch = Callable[[int], tuple[list[Prompt], RolloutSettings, list[str]]]


@dataclass(frozen=True)
class _Launched:
    launch: int
    summary: Any  # ObjectRef[RolloutSummary]
    episodes: Any  # ObjectRef[list[Episode]]
    inputs: tuple[list[Prompt], RolloutSettings, list[str]]  # kept to generate the batch again after a fault
    attempt: int = 0


class RolloutProducer:
    """Keeps the rollout actor busy ``max_staleness`` batches ahead; ``next`` hands out admitted records in order.

    ``step_batch(n)`` gives launch ``n``'s prompts, seeded settings and episode ids (the inline trainer's
    ``step_batch``, called in launch order, so prompts and seeds follow the inline sequence). ``total`` batches are
    consumed in all; a dropped batch is replaced by a new launch.

    A rollout that hit a dead or stale generation actor (``GeneratorFault``) produced nothing: ``recover()`` (the
    driver's: wait for Ray to restart the actor, push it the current weights) runs, and the same batch (same
    prompts, seeds and episode ids) is launched again, at most ``max_relaunches`` times; ``relaunches`` counts them.
    """

    def __init__(
        self,
        rollout: Any,
        queue: EpisodeQueue,
        step_batch: StepBatch,
        total: int,
        timeout_s: float,
        start: tuple[int, int] = (0, 0),
        recover: Callable[[], None] | None = None,
        max_relaunches: int = 3,
    ) -> None:
        """``start``: (next launch, batches already consumed), a resume point's; (0, 0) for a new run."""
        self.recover = recover
        self.max_relaunches = max_relaunches
        self.relaunches = 0
        self.rollout = rollout
        self.queue = queue
        self.step_batch = step_batch
        self.total = total
        self.timeout_s = timeout_s
        self.pending: deque[_Launched] = deque()
        self.launched, self.consumed = start

    @property
    def outstanding(self) -> int:
        return len(self.pending) + len(self.queue)

    def fill(self) -> None:
        """Launch rollouts while the queue has room (counting in-flight ones) and batches are still needed."""
        while self.queue.free(len(self.pending)) > 0 and self.consumed + self.outstanding < self.total:
            inputs = self.step_batch(self.launched)
            self.pending.append(self._launch(self.launched, inputs))
            self.launched += 1

    def _launch(self, launch: int, inputs: tuple[list[Prompt], RolloutSettings, list[str]], attempt: int = 0) -> Any:
        summary, episodes = self.rollout.run.options(num_returns=2).remote(*inputs)
        return _Launched(launch, summary, episodes, inputs, attempt)

    def _collect(self) -> None:
        """Move the oldest finished rollout into the queue (waiting for it, bounded by the timeout)."""
        if not self.pending:
            raise RuntimeError(f"all {self.total} episode batches have been consumed; nothing left to produce")
        head = self.pending.popleft()
        try:
            summary = wait_all([head.summary], [f"rollout {head.launch}"], self.timeout_s, "rollout actor")[0]
        except RemoteCallError as exc:
            if not isinstance(exc.__cause__, GeneratorFault) or self.recover is None:
                raise
            if head.attempt >= self.max_relaunches:
                raise RemoteCallError(
                    f"rollout {head.launch} hit a failed generation actor {head.attempt + 1} times; giving up: {exc}"
                ) from exc
            log.warning("rollout %d lost to a generation fault, regenerating it: %s", head.launch, exc.__cause__)
            self.recover()
            self.relaunches += 1
            self.pending.appendleft(self._launch(head.launch, head.inputs, head.attempt + 1))
            return
        self.queue.put(EpisodeRecord(head.episodes, head.launch, summary.versions, summary.tokens, summary.seconds))

    def next(self, learner_versions: Mapping[AgentName, int]) -> EpisodeRecord:
        """The next admitted record. Launches ahead first, so generation overlaps the caller's update that follows;
        call it after the previous batch's update and weight sync."""
        while True:
            self.fill()
            if not len(self.queue):
                self._collect()
            record = self.queue.take(learner_versions)
            if record is not None:
                # No launch until the next call: a batch launched now would miss the update this one is for.
                self.consumed += 1
                return record

    def episodes(self, record: EpisodeRecord) -> Any:
        return wait_all([record.episodes], [f"rollout {record.launch}"], self.timeout_s, "episode batch")[0]

    def drain(self) -> None:
        """Forget outstanding rollouts (end of run or error); their refs are released with the records."""
        self.pending.clear()
        self.queue.clear()
