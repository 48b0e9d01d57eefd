"""The in-process parts (``--runtime inline``): everything in one process, the debuggable reference the Ray run is
checked against. Generators share the learners' model objects, so a weight sync is a version number."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from waltz_ray.checkpoint import CheckpointManager, ResumePoint
from waltz_ray.config import WaltzConfig, load_config
from waltz_ray.engines.base import Judge, ReferenceModel
from waltz_ray.factory import (
    Agent,
    build_agent,
    build_judge,
    fit_prompts_to_context,
    reference_paths,
    rollout_settings,
)
from waltz_ray.memory import peak_rss_mb
from waltz_ray.rollout import StageTimer, run_episodes
from waltz_ray.trainer.batches import BatchPlanner
from waltz_ray.trainer.loop import StepHook, Trainer
from waltz_ray.trainer.parts import RolloutBatch, TrainParts
from waltz_ray.trainer.update import AgentUpdate, SequentialUpdater
from waltz_ray.types import AGENTS, AgentName, Episode, Prompt

log = logging.getLogger(__name__)


class InlineRollout:
    """Generates each batch when it is asked for, with the agents' current weights (always on-policy)."""

    def __init__(
        self,
        config: WaltzConfig,
        agents: dict[AgentName, Agent],
        judge: Judge,
        planner: BatchPlanner,
        next_launch: int = 0,
    ) -> None:
        self.config, self.agents, self.judge, self.planner = config, agents, judge, planner
        self.next_launch = next_launch
        # reference_on: rollout scores the sampled tokens right after the rollout with the learners' own reference
        # models (the Ray runtime has a reference pool per agent instead)
        self.references: dict[AgentName, ReferenceModel] = {}
        if config.runtime.reference_on == "rollout":
            from waltz_ray.engines.learner import ReferenceScorer

            self.references = {
                name: ReferenceScorer(
                    a.learner.reference,  # type: ignore[attr-defined]  (a TorchLearner in-process)
                    a.tokenizer.pad_token_id,
                    config.learner.micro_batch_size,
                    config.learner.logits_from_first_action,
                )
                for name, a in agents.items()
            }

    def next_batch(self, learner_versions: dict[AgentName, int]) -> RolloutBatch:
        launch = self.next_launch
        self.next_launch += 1
        prompts, settings, ids = self.planner.plan(launch)
        timer = StageTimer()
        conv, fb = self.agents["conversation"], self.agents["feedback"]
        episodes = run_episodes(
            prompts, conv.generator, fb.generator, self.judge, settings, ids, timer, references=self.references
        )
        return RolloutBatch(episodes, launch, dict(timer.seconds), {"memory/driver_peak_rss_mb": peak_rss_mb()})

    def evaluate(self, prompts: Sequence[Prompt]) -> list[Episode]:
        ids = [f"eval-{i}" for i in range(len(prompts))]
        settings = rollout_settings(self.config, evaluation=True)
        conv, fb = self.agents["conversation"], self.agents["feedback"]
        return run_episodes(list(prompts), conv.generator, fb.generator, self.judge, settings, ids)

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class InlineWeightSync:
    """In-process the generator shares the learner's model object: the sync is the version number."""

    def sync(self, agents: Sequence[Agent], timer: StageTimer) -> dict[str, float]:
        for agent in agents:
            agent.generator.policy_version = agent.learner.policy_version
        return {}

    def counters(self) -> dict[str, int]:
        return {}


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_run_prompts(config: WaltzConfig, tokenizers: dict[AgentName, Any]) -> tuple[list[Prompt], list[Prompt]]:
    """The training and held-out prompts of a run, without those too long for an episode to fit the agents'
    contexts (counted and logged: ``fit_prompts_to_context``)."""
    from waltz_ray.data.loaders import load_prompts

    train = load_prompts(config.data.train, benchmark=config.data.benchmark)
    held_out = load_prompts(
        config.data.eval, benchmark=config.data.benchmark, limit=config.data.eval_limit, seed=config.seed
    )
    train, _ = fit_prompts_to_context(train, config, tokenizers, what="training prompts")
    held_out, _ = fit_prompts_to_context(held_out, config, tokenizers, what="evaluation prompts")
    return train, held_out


def inline_trainer(
    config: WaltzConfig,
    out_dir: str | Path,
    *,
    judge: Judge | None = None,
    resume: ResumePoint | None = None,
    hooks: Sequence[StepHook] = (),
) -> Trainer:
    """A trainer on in-process parts; ``judge`` replaces the configured one (tests inject failing judges)."""
    if config.runtime.num_threads:
        torch.set_num_threads(config.runtime.num_threads)
    seed_everything(config.seed)
    agents = {name: build_agent(name, config, resume) for name in AGENTS}
    train_prompts, eval_prompts = load_run_prompts(config, {name: a.tokenizer for name, a in agents.items()})
    state = resume.state if resume is not None else None
    planner = BatchPlanner(config, train_prompts, state.data_position if state else 0)
    rollout = InlineRollout(
        config, agents, judge if judge is not None else build_judge(config), planner, state.launch if state else 0
    )
    update = AgentUpdate(config, state.counters if state else None)
    parts = TrainParts(agents, planner, rollout, SequentialUpdater(update), InlineWeightSync())
    paths = reference_paths(config, resume)
    return Trainer(config, out_dir, parts, eval_prompts, resume=resume, reference_paths=paths, hooks=hooks)


def find_resume_point(config: WaltzConfig, out_dir: str | Path) -> ResumePoint:
    """The latest complete checkpoint of the run in ``out_dir`` (``CheckpointError`` if none or corrupt); warns
    about config fields that differ from the checkpoint's."""
    point = CheckpointManager(Path(out_dir) / "checkpoints", config.checkpoint.keep_last).resume_point()
    saved = load_config(point.path / "config.yaml", saved=True).model_dump(mode="json")
    current = config.model_dump(mode="json")
    changed = sorted(k for k in current if current[k] != saved.get(k))
    if changed:
        log.warning("resuming %s with a config that differs in: %s", point.path, ", ".join(changed))
    return point


def train(config: WaltzConfig, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """``waltz-ray train --runtime inline``."""
    start = time.perf_counter()
    point = find_resume_point(config, out_dir) if resume else None
    result = inline_trainer(config, out_dir, resume=point).run()
    result["seconds"] = time.perf_counter() - start
    return result
