"""Peak resident memory of every actor of a Ray run, logged with each step as ``memory/<pool label>_peak_rss_mb``
(``memory/conversation_generation[0]_peak_rss_mb``, ``memory/rollout_peak_rss_mb``, ...) plus the driver's own
``memory/driver_peak_rss_mb``.

Cheap and never blocking: the actors run one call at a time (the rollout actor is busy for a whole rollout, a
generation actor for a whole ``generate``), so waiting for their answer would stall the loop and spoil the overlap.
``MemoryProbe.metrics`` instead takes the answers that have arrived (``ray.wait`` with no timeout), asks each actor
that has no question outstanding again, and reports the last answer of each. A value can lag a step or two behind
(a peak only grows, so it is a lower bound), and an actor appears once it has answered at least once. An actor that
fails to answer (dead, restarting) is skipped and asked again at the next step.
"""

from __future__ import annotations

import logging
from typing import Any

from waltz_ray.memory import peak_rss_mb

log = logging.getLogger(__name__)


def labelled_actors(topology: Any) -> list[tuple[str, Any]]:
    """(pool label, actor handle) for every actor of the topology: generation, reference, learner, judge pools and
    the rollout actor."""
    pools = [
        *topology.generation.values(),
        *topology.references.values(),
        *topology.learners.values(),
        *([topology.judge] if topology.judge is not None else []),
    ]
    out = [(pool.label(i), actor) for pool in pools for i, actor in enumerate(pool.actors)]
    return out + ([("rollout", topology.rollout)] if topology.rollout is not None else [])


class MemoryProbe:
    """Asks every actor of a topology for its peak RSS without waiting; ``metrics()`` once per step."""

    def __init__(self, topology: Any) -> None:
        self.topology = topology
        self.pending: dict[Any, str] = {}  # outstanding memory() call -> actor label
        self.peaks: dict[str, float] = {}

    def metrics(self) -> dict[str, float]:
        import ray

        if self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0, fetch_local=True)
            for ref in ready:
                label = self.pending.pop(ref)
                try:
                    self.peaks[label] = float(ray.get(ref, timeout=1.0)["peak_rss_mb"])
                except Exception as exc:  # a dead or restarting actor: ask again next step
                    log.debug("memory of %s: %s", label, exc)
        asked = set(self.pending.values())
        for label, actor in labelled_actors(self.topology):
            if label not in asked:
                try:
                    self.pending[actor.memory.remote()] = label
                except Exception as exc:  # a killed actor handle
                    log.debug("asking %s for its memory: %s", label, exc)
        out = {f"memory/{label}_peak_rss_mb": value for label, value in sorted(self.peaks.items())}
        out["memory/driver_peak_rss_mb"] = peak_rss_mb()
        return out
