"""The training loop on stand-in parts (no models): the order of the data flow within a step, the stage schedule,
what a checkpoint records and how a resume continues; and the batch planner both runtimes share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_world import tiny_config
from waltz_ray.factory import Agent
from waltz_ray.trainer.batches import BatchPlanner, prompt_groups, step_seed
from waltz_ray.trainer.loop import JudgeFailureError, Trainer
from waltz_ray.trainer.parts import RolloutBatch, TrainParts
from waltz_ray.types import Completion, Episode, FeedbackVerdict, JudgeVerdict, Prompt, Round

PROMPTS = [Prompt(f"prompt {i}", "harmful" if i % 2 else "benign") for i in range(10)]


def config(*extra: str) -> Any:
    return tiny_config("stages.stage1_steps=1", "stages.stage2_steps=2", "checkpoint.every=0", *extra)


def episode(eid: str, prompt: Prompt, judge: JudgeVerdict) -> Episode:
    c0 = Completion("an answer", (1, 2), (5, 6), (-0.1, -0.2))
    fb = Completion('{"unsafe": false}', (1, 2), (7,), (-0.3,))
    verdict = FeedbackVerdict(ok=True, unsafe=False, overrefuse=False, reasoning="fine", feedback="")
    return Episode(eid, prompt, (Round(c0, fb, verdict, judge),))


@dataclass
class Log:
    events: list[str] = field(default_factory=list)


class Versioned:
    """A learner stand-in: counts updates as its policy version."""

    def __init__(self, name: str, log: Log) -> None:
        self.name, self.log, self.policy_version = name, log, 0

    def save_pretrained(self, path: Path) -> None:
        self.log.events.append(f"save {self.name} v{self.policy_version}")


class Tokenizer:
    def save_pretrained(self, path: Path) -> None:
        pass


class StubRollout:
    def __init__(self, planner: BatchPlanner, log: Log, judge: JudgeVerdict) -> None:
        self.planner, self.log, self.judge, self.launch = planner, log, judge, 0

    def next_batch(self, learner_versions: dict[str, int]) -> RolloutBatch:
        prompts, _, ids = self.planner.plan(self.launch)
        self.log.events.append(
            f"batch {self.launch} at {learner_versions['feedback']}/{learner_versions['conversation']}"
        )
        self.launch += 1
        return RolloutBatch([episode(i, p, self.judge) for i, p in zip(ids, prompts, strict=True)], self.launch - 1)

    def evaluate(self, prompts: Any) -> list[Episode]:
        self.log.events.append("evaluate")
        return [episode(f"eval-{i}", p, self.judge) for i, p in enumerate(prompts)]

    def counters(self) -> dict[str, int]:
        return {"launched": self.launch}

    def close(self) -> None:
        self.log.events.append("close")


class StubUpdater:
    def __init__(self, agents: dict[str, Any], log: Log) -> None:
        self.agents, self.log = agents, log

    def update(self, trained: Any, timer: Any) -> dict[str, float]:
        for agent, samples in trained:
            agent.learner.policy_version += 1
            self.log.events.append(f"update {agent.name} on {len(samples)}")
        return {}

    def counters(self) -> dict[str, int]:
        return {}


class StubSync:
    def __init__(self, log: Log) -> None:
        self.log = log

    def sync(self, agents: Any, timer: Any) -> dict[str, float]:
        self.log.events.append("sync " + ",".join(a.name for a in agents))
        return {}

    def counters(self) -> dict[str, int]:
        return {}


def stub_trainer(out: Path, cfg: Any, judge: JudgeVerdict | None = None) -> tuple[Trainer, Log]:
    log = Log()
    agents = {name: Agent(name, None, Versioned(name, log), Tokenizer()) for name in ("conversation", "feedback")}  # type: ignore[arg-type]
    planner = BatchPlanner(cfg, PROMPTS)
    verdict = judge or JudgeVerdict(unsafe=False, overrefuse=False)
    parts = TrainParts(
        agents, planner, StubRollout(planner, log, verdict), StubUpdater(agents, log), StubSync(log), close=lambda: None
    )
    return Trainer(cfg, out, parts, PROMPTS[:2]), log


def test_a_step_is_batch_then_updates_then_sync_and_stage_one_trains_the_feedback_agent_alone(tmp_path: Path) -> None:
    trainer, log = stub_trainer(tmp_path, config("rollout.prompts_per_step=3", "algorithm.samples_per_prompt=1"))
    result = trainer.run()
    assert log.events == [
        "evaluate",
        "batch 0 at 0/0",
        "update feedback on 3",
        "sync feedback",
        "batch 1 at 1/0",
        "update feedback on 3",
        "update conversation on 3",
        "sync feedback,conversation",
        "batch 2 at 2/1",
        "update feedback on 3",
        "update conversation on 3",
        "sync feedback,conversation",
        "evaluate",
        "save conversation v2",
        "save feedback v3",
    ]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("stage") for r in rows if "stage" in r] == [1, 2, 2]
    assert result["final"] == json.loads((tmp_path / "eval_final.json").read_text())


def test_too_many_judge_failures_stop_the_step(tmp_path: Path) -> None:
    trainer, _ = stub_trainer(tmp_path, config(), judge=JudgeVerdict.failure("down"))
    trainer.evaluate = lambda filename: {}  # type: ignore[method-assign]
    with pytest.raises(JudgeFailureError, match="at step 0"):
        trainer.run()


def test_planner_repeats_each_prompt_per_group_and_records_positions() -> None:
    cfg = config("rollout.prompts_per_step=2", "algorithm.samples_per_prompt=3")
    planner = BatchPlanner(cfg, PROMPTS)
    prompts, settings, ids = planner.plan(0)
    assert ids == [f"0-{i}" for i in range(6)] and len(prompts) == 6
    assert prompts[0] == prompts[1] == prompts[2] and prompts[3] == prompts[4] == prompts[5]
    assert prompt_groups(ids, 3) == [0, 0, 0, 1, 1, 1]
    assert settings.conversation_params.seed == step_seed(cfg.seed, 0, "conversation")
    assert settings.reference_agents == ("feedback",)  # launch 0 is a stage-1 batch
    later = planner.plan(1)
    assert planner.position_after == {0: 2, 1: 4}
    assert later[1].conversation_params.seed != settings.conversation_params.seed
    assert later[1].reference_agents == ("conversation", "feedback")


def test_a_resumed_planner_draws_the_prompts_the_uninterrupted_one_would() -> None:
    cfg = config("rollout.prompts_per_step=3", "algorithm.samples_per_prompt=1")
    straight = BatchPlanner(cfg, PROMPTS)
    batches = [straight.plan(n)[0] for n in range(5)]  # crosses an epoch of 10 prompts
    resumed = BatchPlanner(cfg, PROMPTS, data_position=straight.position_after[2])
    assert [resumed.plan(n)[0] for n in (3, 4)] == batches[3:]
