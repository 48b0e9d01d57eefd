"""The actors that hold no model: the judge host and the rollout host (the producer).

They live apart from ``runtime.actors`` so that importing their classes pulls in neither torch nor transformers
(about 4 CPU seconds of start-up each, the rule judge and the rollout loop use neither): the rule judge's actor peak
RSS fell from 311 to 131 MB. The rollout actor still ends up with torch loaded (about 315 MB), through something it
is sent; that is not traced yet. A judge that loads a model imports them when it is built. ``runtime.actors``
re-exports them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from waltz_ray.config import WaltzConfig
from waltz_ray.memory import ReportsMemory
from waltz_ray.rollout import RolloutSettings, StageTimer, run_episodes
from waltz_ray.types import AgentName, Episode, JudgeVerdict, Prompt


class JudgeHost(ReportsMemory):
    """One judge actor: the configured judge (rule, local LLM or HTTP) built inside the actor."""

    def __init__(self, config: WaltzConfig, *, num_cpus: float = 1.0) -> None:
        from waltz_ray.factory import build_judge

        self.judge_impl = build_judge(config)
        if "torch" in sys.modules:  # a judge with a local model: its threads, as every model-holding actor's
            torch = sys.modules["torch"]
            torch.set_num_threads(config.runtime.num_threads or max(1, int(num_cpus)))

    def ready(self) -> bool:
        return True

    def judge(self, prompts: list[str], responses: list[str], labels: list[Any] | None = None) -> list[JudgeVerdict]:
        return self.judge_impl.judge(prompts, responses, labels)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RolloutSummary:
    """The small half of a rollout's result (the episodes are the other, by reference)."""

    versions: dict[AgentName, tuple[int, ...]]
    tokens: dict[AgentName, int]
    seconds: dict[str, float]


class RolloutHost(ReportsMemory):
    """The producer: plays episode batches against the pools' proxies (``run_episodes``, the same code as inline).

    ``run`` is called with ``num_returns=2``: a ``RolloutSummary`` for the queue and the episodes, which stay in the
    object store until the driver takes them.
    """

    def __init__(self, conversation: Any, feedback: Any, judge: Any, references: dict[AgentName, Any]) -> None:
        self.conversation, self.feedback, self.judge = conversation, feedback, judge
        self.references = references

    def ready(self) -> bool:
        return True

    def run(
        self, prompts: list[Prompt], settings: RolloutSettings, episode_ids: list[str]
    ) -> tuple[RolloutSummary, list[Episode]]:
        from waltz_ray.runtime.queue import batch_versions

        timer = StageTimer()
        for agent, proxy in (("conversation", self.conversation), ("feedback", self.feedback)):
            proxy.min_version = settings.min_versions.get(agent, 0)
        episodes = run_episodes(
            prompts, self.conversation, self.feedback, self.judge, settings, episode_ids, timer, self.references
        )
        versions, tokens = batch_versions(episodes)
        return RolloutSummary(versions, tokens, dict(timer.seconds)), episodes
