"""The WaltzRL training loop, read top to bottom in the order of the data flow:

    next batch -> rewards -> samples -> advantages and updates of both agents -> weight sync
    -> log / evaluate / checkpoint

It is handed its parts (``TrainParts``: a rollout source, an updater over the learner groups, a weight sync), built
in-process by ``waltz_ray.trainer.inline`` or on Ray by ``waltz_ray.runtime.driver``; the loop does not know which.
Stage 1 trains the feedback agent alone, stage 2 both agents.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from waltz_ray.checkpoint import CheckpointManager, PreemptionGuard, ResumePoint, TrainerState, restore_rng
from waltz_ray.config import WaltzConfig, save_config
from waltz_ray.core.metrics import pair_metrics
from waltz_ray.core.rewards import judge_failure_rate, stage_weights
from waltz_ray.core.samples import batch_samples
from waltz_ray.factory import Agent
from waltz_ray.rollout import StageTimer
from waltz_ray.tracking import Tracker
from waltz_ray.trainer.metrics import generated_tokens, pipeline_metrics, rollout_metrics, sample_table
from waltz_ray.trainer.parts import TrainParts
from waltz_ray.types import AgentName, Prompt, Sample

log = logging.getLogger(__name__)


class JudgeFailureError(RuntimeError):
    """Too many judge calls failed in one step (above ``judge.max_failure_rate``)."""


class StepHook(Protocol):
    """Called with ``when`` "before" and "after" every training step, and "final" before the final evaluation (tests
    and benchmarks use it to inject faults or time steps)."""

    def __call__(self, trainer: Trainer, step: int, when: str) -> None: ...


class Trainer:
    """Runs stage 1 then stage 2 on the given parts; writes config.yaml, metrics.jsonl, eval_initial.json,
    eval_final.json, checkpoints/ and checkpoints/final/{conversation,feedback} under ``out_dir``."""

    def __init__(
        self,
        config: WaltzConfig,
        out_dir: str | Path,
        parts: TrainParts,
        eval_prompts: Sequence[Prompt],
        resume: ResumePoint | None = None,
        reference_paths: dict[AgentName, str] | None = None,
        hooks: Sequence[StepHook] = (),
    ) -> None:
        self.config, self.parts, self.resume = config, parts, resume
        self.agents: dict[AgentName, Agent] = parts.agents
        self.eval_prompts = list(eval_prompts)
        self.reference_paths = dict(reference_paths or {})
        self.hooks = list(hooks)
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(config, self.out / "config.yaml")
        self.checkpoints = CheckpointManager(self.out / "checkpoints", config.checkpoint.keep_last)
        self.start_step = resume.state.step if resume is not None else 0
        self.last_launch = resume.state.launch - 1 if resume is not None else -1  # the launch learned last

    def run(self) -> dict[str, Any]:
        """Train from ``start_step`` to the end; on SIGTERM the current step finishes, a checkpoint is written and
        the result says ``preempted``. The parts are closed at the end, whatever happens."""
        try:
            return self._run()
        finally:
            self.parts.close()

    def _run(self) -> dict[str, Any]:
        cfg = self.config
        total = cfg.stages.stage1_steps + cfg.stages.stage2_steps
        state = self.resume.state if self.resume is not None else None
        tracker = Tracker(
            self.out,
            cfg.logging,
            cfg.model_dump(mode="json"),
            name=self.out.name,
            resume_rows=state.metrics_rows if state else None,
            run_id=state.wandb_run_id if state else None,
        )
        try:
            with PreemptionGuard() as preemption:
                if self.resume is None:
                    initial = self.evaluate("eval_initial.json")
                    tracker.log({f"eval/{k}": v for k, v in initial.items()}, step=0)
                else:
                    initial = json.loads((self.out / "eval_initial.json").read_text())
                    restore_rng(self.checkpoints.load_rng(self.resume.path))
                    log.info("resumed from %s after step %d", self.resume.path, self.start_step)
                for step in _progress(range(self.start_step, total), cfg.logging.progress):
                    began = time.perf_counter()
                    self._hook(step, "before")
                    metrics = self.step(step, tracker)
                    self._hook(step, "after")
                    metrics.update(pipeline_metrics(metrics, time.perf_counter() - began))
                    if cfg.stages.eval_every and (step + 1) % cfg.stages.eval_every == 0 and step + 1 < total:
                        metrics.update({f"eval/{k}": v for k, v in self.evaluate(None).items()})
                    tracker.log(metrics, step=step + 1)
                    every = cfg.checkpoint.every
                    if preemption.requested or (every and (step + 1) % every == 0 and step + 1 < total):
                        self.write_checkpoint(step + 1, tracker)
                    if preemption.requested:
                        log.warning("preempted: checkpoint after step %d written; exiting", step + 1)
                        return {"initial": initial, "final": None, "preempted": True, "step": step + 1}
            self._hook(total, "final")
            final = self.evaluate("eval_final.json")
            tracker.log({f"eval/{k}": v for k, v in final.items()}, step=total)
            self.save_pretrained(self.out / "checkpoints" / "final")
        finally:
            tracker.close()
        return {"initial": initial, "final": final}

    def step(self, step: int, tracker: Tracker) -> dict[str, Any]:
        """One training step: learn the next batch of episodes."""
        cfg = self.config
        stage = 1 if step < cfg.stages.stage1_steps else 2
        conv, fb = self.agents["conversation"], self.agents["feedback"]
        # 1. the next batch (generated ahead on Ray, with weights at most max_staleness versions old)
        batch = self.parts.rollout.next_batch({name: a.learner.policy_version for name, a in self.agents.items()})
        self.last_launch = batch.launch
        episodes, timer = batch.episodes, StageTimer()
        timer.seconds.update(batch.seconds)  # the rollout's stages come first, under their own names
        failure_rate = judge_failure_rate(episodes)
        if failure_rate > cfg.judge.max_failure_rate:
            raise JudgeFailureError(
                f"judge failed on {failure_rate:.1%} of calls at step {step} "
                f"(> judge.max_failure_rate {cfg.judge.max_failure_rate:.1%})"
            )
        # 2. rewards and samples: the feedback agent's DIR-rewarded samples, the conversation agent's A/B mix
        with timer("reward"):
            r = cfg.reward
            weights = stage_weights(stage, r.dir_weight, r.label_weight_stage1, r.label_weight_stage2, r.format_weight)
            fb_samples, conv_samples, sample_stats = batch_samples(
                episodes, cfg.seed, step, weights, cfg.rollout.mix_prob_b
            )
        # 3. advantages and one update per trained agent (stage 1: the feedback agent alone)
        trained: list[tuple[Agent, list[Sample]]] = [(fb, fb_samples)]
        if stage == 2:
            trained.append((conv, conv_samples))
        metrics: dict[str, Any] = {"stage": stage, "judge/failure_rate": failure_rate}
        metrics.update(self.parts.updater.update(trained, timer))
        # 4. the generators serve the new weights
        synced = self.parts.weight_sync.sync([agent for agent, _ in trained], timer)
        # 5. what happened, for the log
        metrics.update(rollout_metrics(episodes, fb_samples, conv_samples))
        metrics.update(generated_tokens(episodes))
        metrics.update({f"samples/{k}": v for k, v in vars(sample_stats).items()})
        metrics.update({f"time/{k}": v for k, v in timer.seconds.items()})
        metrics.update({f"version/{a.name}": a.learner.policy_version for a in self.agents.values()})
        metrics.update(batch.metrics)
        metrics.update(synced)
        histograms = {"feedback/dir": [s.reward_terms.get("dir", 0.0) for s in fb_samples], **batch.histograms}
        tracker.log_histograms(histograms, step=step + 1)
        if cfg.logging.sample_table_every and step % cfg.logging.sample_table_every == 0:
            tracker.log_table("samples", *sample_table(episodes[:8]), step=step + 1)
        return metrics

    def evaluate(self, filename: str | None) -> dict[str, float]:
        """The greedy pair on the held-out prompts; written to ``filename`` under the run directory if given."""
        metrics = pair_metrics(self.parts.rollout.evaluate(self.eval_prompts))
        if filename:
            (self.out / filename).write_text(json.dumps(metrics, indent=2, sort_keys=True))
        return metrics

    def counters(self) -> dict[str, int]:
        """Every part's cumulative counters (a checkpoint carries them; a resume hands them back to the parts)."""
        parts = self.parts
        return parts.updater.counters() | parts.rollout.counters() | parts.weight_sync.counters()

    def save_pretrained(self, path: Path) -> None:
        for agent in self.agents.values():
            agent.learner.save_pretrained(path / agent.name)
            agent.tokenizer.save_pretrained(path / agent.name)

    def write_checkpoint(self, step: int, tracker: Tracker) -> Path:
        """A resumable checkpoint after ``step`` completed steps (``waltz_ray.checkpoint`` for the layout). On a
        cluster the run directory must be storage every learner node mounts at the same path."""
        state = TrainerState(
            step=step,
            stage=1 if step <= self.config.stages.stage1_steps else 2,
            data_position=self.parts.planner.position_after[self.last_launch],
            launch=self.last_launch + 1,
            policy_versions={a.name: a.learner.policy_version for a in self.agents.values()},
            reference_paths=dict(self.reference_paths),
            metrics_rows=tracker.rows,
            wandb_run_id=tracker.run_id,
            counters=self.counters(),
        )
        path = self.checkpoints.save(state, self._write_resume_payload)
        log.info("checkpoint %s written", path)
        return path

    def _write_resume_payload(self, directory: Path) -> None:
        """Each agent's policy (Hugging Face format), tokenizer and learner state; the resolved config."""
        for agent in self.agents.values():
            agent.learner.save_state(directory / agent.name)
            agent.tokenizer.save_pretrained(directory / agent.name)
        save_config(self.config, directory / "config.yaml")

    def _hook(self, step: int, when: str) -> None:
        for hook in self.hooks:
            hook(self, step, when)


def _progress(steps: range, enabled: bool) -> Any:
    if not enabled:
        return steps
    from tqdm import tqdm

    return tqdm(steps, desc="waltz-ray train", unit="step")
