"""What each training batch is made of: the next prompts from a seeded endless stream, each repeated once per
GRPO/RLOO group member, the step's sampling seeds and the episode ids. Both runtimes plan batches here, in launch
order, so a Ray run draws exactly the prompts and seeds of the inline run."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import replace

from waltz_ray.config import WaltzConfig
from waltz_ray.factory import rollout_settings
from waltz_ray.rollout import RolloutSettings
from waltz_ray.types import Prompt

PlannedBatch = tuple[list[Prompt], RolloutSettings, list[str]]


def prompt_stream(prompts: Sequence[Prompt], seed: int) -> Iterator[Prompt]:
    """Endless seeded epochs over the training prompts (reshuffled each epoch)."""
    rng = random.Random(seed)
    while True:
        order = list(prompts)
        rng.shuffle(order)
        yield from order


def prompt_groups(episode_ids: Sequence[str], group_size: int) -> list[int]:
    """Dense prompt-group ids for GRPO/RLOO: episode ``<launch>-<i>`` answers prompt ``i // group_size`` of its
    launch (``BatchPlanner.plan`` repeats each prompt ``group_size`` times in a row); ids not of that form group
    alone."""
    keys: list[tuple[str, int | str]] = []
    for eid in episode_ids:
        launch, _, index = eid.rpartition("-")
        keys.append((launch, int(index) // group_size) if index.isdigit() else (eid, ""))
    dense = {key: n for n, key in enumerate(dict.fromkeys(keys))}
    return [dense[key] for key in keys]


def step_seed(seed: int, step: int, role: str) -> int:
    return (seed * 1_000_003 + step * 7919 + sum(map(ord, role))) % (2**31)


def seeded(settings: RolloutSettings, seed: int, launch: int) -> RolloutSettings:
    """The settings with each agent's sampling seed for this launch."""
    return replace(
        settings,
        conversation_params=replace(settings.conversation_params, seed=step_seed(seed, launch, "conversation")),
        feedback_params=replace(settings.feedback_params, seed=step_seed(seed, launch, "feedback")),
    )


class BatchPlanner:
    """Plans launch ``n``'s batch; remembers how many prompts were drawn once each launch was planned (a checkpoint
    records the position after the last learned launch, so a resume draws the same prompts next)."""

    def __init__(self, config: WaltzConfig, prompts: Sequence[Prompt], data_position: int = 0) -> None:
        self.config = config
        self.stream = prompt_stream(prompts, config.seed)
        for _ in range(data_position):
            next(self.stream)
        self.data_position = data_position
        self.position_after: dict[int, int] = {}

    def plan(self, launch: int) -> PlannedBatch:
        cfg = self.config
        prompts = [next(self.stream) for _ in range(cfg.rollout.prompts_per_step)]
        self.data_position += len(prompts)
        self.position_after[launch] = self.data_position
        prompts = [p for p in prompts for _ in range(cfg.algorithm.samples_per_prompt)]
        settings = seeded(rollout_settings(cfg), cfg.seed, launch)
        if launch < cfg.stages.stage1_steps:  # stage 1 trains only the feedback agent (a batch learned later in
            settings = replace(settings, reference_agents=("feedback",))  # stage 2 falls back to learner scoring)
        return prompts, settings, [f"{launch}-{i}" for i in range(len(prompts))]
