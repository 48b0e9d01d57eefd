"""The in-process WaltzRL trainer (``--runtime inline``): rollout, judge, rewards, samples, REINFORCE++, two stages.

Each step reads top to bottom in the order of the data flow, and each stage is timed under its name.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from waltz_ray.checkpoint import CheckpointManager, PreemptionGuard, ResumePoint, TrainerState, restore_rng
from waltz_ray.config import WaltzConfig, save_config
from waltz_ray.core.advantages import get_advantage_estimator
from waltz_ray.core.losses import kl_estimate, truncated_is_weights
from waltz_ray.core.rewards import judge_failure_rate, stage_weights
from waltz_ray.core.samples import batch_samples
from waltz_ray.engines.base import Judge
from waltz_ray.engines.learner import (
    ReferenceScorer,
    UpdateStats,
    behaviour_logprobs,
    make_batch,
    rollout_reference_logprobs,
)
from waltz_ray.eval.metrics import pair_metrics
from waltz_ray.factory import Agent, build_agent, build_judge, reference_paths, rollout_settings
from waltz_ray.rollout import RolloutSettings, StageTimer, run_episodes
from waltz_ray.tracking import Tracker
from waltz_ray.types import AGENTS, AgentName, Episode, Prompt, Sample

log = logging.getLogger(__name__)


class JudgeFailureError(RuntimeError):
    """Too many judge calls failed in one step (SPEC §3: stop above the configured rate)."""


class TrainingDivergedError(RuntimeError):
    """One agent's updates were skipped ``algorithm.max_consecutive_skips`` times in a row (non-finite loss or
    gradient, or KL to the reference past ``algorithm.max_kl``)."""


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prompt_stream(prompts: list[Prompt], seed: int) -> Iterator[Prompt]:
    """Endless seeded epochs over the training prompts (reshuffled each epoch)."""
    rng = random.Random(seed)
    while True:
        order = list(prompts)
        rng.shuffle(order)
        yield from order


def prompt_groups(episode_ids: list[str], group_size: int) -> list[int]:
    """Dense prompt-group ids for GRPO/RLOO: episode ``<launch>-<i>`` answers prompt ``i // group_size`` of its
    launch (``step_batch`` repeats each prompt ``group_size`` times in a row); ids not of that form group alone."""
    keys: list[tuple[str, int | str]] = []
    for eid in episode_ids:
        launch, _, index = eid.rpartition("-")
        keys.append((launch, int(index) // group_size) if index.isdigit() else (eid, ""))
    dense = {key: n for n, key in enumerate(dict.fromkeys(keys))}
    return [dense[key] for key in keys]


def step_seed(seed: int, step: int, role: str) -> int:
    return (seed * 1_000_003 + step * 7919 + sum(map(ord, role))) % (2**31)


def evaluate(
    agents: dict[AgentName, Agent], judge: Any, prompts: list[Prompt], config: WaltzConfig
) -> tuple[dict[str, float], list[Episode]]:
    """Greedy pair on held-out prompts; returns the metrics and the episodes."""
    settings = rollout_settings(config, evaluation=True)
    ids = [f"eval-{i}" for i in range(len(prompts))]
    episodes = run_episodes(
        prompts, agents["conversation"].generator, agents["feedback"].generator, judge, settings, ids
    )
    return pair_metrics(episodes), episodes


class InlineTrainer:
    """Everything in one process: the debuggable reference the Ray runtime is checked against."""

    def __init__(
        self,
        config: WaltzConfig,
        out_dir: str | Path,
        agents: dict[AgentName, Agent] | None = None,
        judge: Judge | None = None,
        resume: ResumePoint | None = None,
    ) -> None:
        """``agents`` / ``judge``: pre-built ones (the Ray runtime's remote proxies); None builds them in-process.
        ``resume``: continue from this checkpoint (``find_resume_point``); pre-built agents must already hold it."""
        from waltz_ray.data.loaders import load_prompts

        self.config = config
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(config, self.out / "config.yaml")
        if config.runtime.num_threads:
            torch.set_num_threads(config.runtime.num_threads)
        seed_everything(config.seed)
        self.resume = resume
        self.checkpoints = CheckpointManager(self.out / "checkpoints", config.checkpoint.keep_last)
        self.reference_paths = reference_paths(config, resume)
        self.agents: dict[AgentName, Agent] = (
            agents if agents is not None else {name: build_agent(name, config, resume) for name in AGENTS}
        )
        self.judge: Judge = judge if judge is not None else build_judge(config)
        # reference_on: rollout scores the sampled tokens right after the rollout (in-process: the learners' own
        # reference models; the Ray runtime's rollout actor has a reference pool per agent instead)
        self.references: dict[AgentName, ReferenceScorer] = {}
        if config.runtime.reference_on == "rollout" and agents is None:
            self.references = {
                name: ReferenceScorer(
                    a.learner.reference,
                    a.tokenizer.pad_token_id,
                    config.learner.micro_batch_size,
                    config.learner.logits_from_first_action,
                )
                for name, a in self.agents.items()
            }
        self.train_prompts = load_prompts(config.data.train, benchmark=config.data.benchmark)
        self.eval_prompts = load_prompts(
            config.data.eval, benchmark=config.data.benchmark, limit=config.data.eval_limit, seed=config.seed
        )
        self.stream = prompt_stream(self.train_prompts, config.seed)
        self.data_position = 0  # prompts drawn from the stream so far
        self.position_after: dict[int, int] = {}  # launch -> data position once its prompts were drawn
        self.start_step = 0
        self.last_launch = -1  # the launch (step batch) whose episodes were learned last
        if resume is not None:
            for _ in range(resume.state.data_position):
                next(self.stream)
            self.data_position = resume.state.data_position
            self.start_step = resume.state.step
            self.last_launch = resume.state.launch - 1
        self.estimator = get_advantage_estimator(config.algorithm.advantage_estimator)
        counters = resume.state.counters if resume is not None else {}
        self.skipped_updates = {a: counters.get(f"skipped_updates_{a}", 0) for a in AGENTS}
        self.consecutive_skips = {a: counters.get(f"consecutive_skips_{a}", 0) for a in AGENTS}

    def run(self) -> dict[str, Any]:
        """Stage 1 then stage 2 from ``start_step``; periodic checkpoints (``checkpoint.every``); on SIGTERM the
        current step finishes, a checkpoint is written and the result says ``preempted``."""
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
                    initial = self._evaluate("eval_initial.json")
                    tracker.log({f"eval/{k}": v for k, v in initial.items()}, step=0)
                else:
                    initial = json.loads((self.out / "eval_initial.json").read_text())
                    restore_rng(self.checkpoints.load_rng(self.resume.path))
                    log.info("resumed from %s after step %d", self.resume.path, self.start_step)
                for step in _progress(range(self.start_step, total), cfg.logging.progress):
                    stage = 1 if step < cfg.stages.stage1_steps else 2
                    began = time.perf_counter()
                    metrics = self.train_step(step, stage, tracker)
                    metrics.update(pipeline_metrics(metrics, time.perf_counter() - began))
                    if cfg.stages.eval_every and (step + 1) % cfg.stages.eval_every == 0 and step + 1 < total:
                        metrics.update({f"eval/{k}": v for k, v in self._evaluate(None).items()})
                    tracker.log(metrics, step=step + 1)
                    every = cfg.checkpoint.every
                    if preemption.requested or (every and (step + 1) % every == 0 and step + 1 < total):
                        self.write_checkpoint(step + 1, stage, tracker)
                    if preemption.requested:
                        log.warning("preempted: checkpoint after step %d written; exiting", step + 1)
                        return {"initial": initial, "final": None, "preempted": True, "step": step + 1}
            final = self._evaluate("eval_final.json")
            tracker.log({f"eval/{k}": v for k, v in final.items()}, step=total)
            self.save_checkpoint(self.out / "checkpoints" / "final")
        finally:
            tracker.close()
        return {"initial": initial, "final": final}

    def train_step(self, step: int, stage: int, tracker: Tracker) -> dict[str, Any]:
        timer = StageTimer()
        prompts, settings, ids = self.step_batch(step)
        self.last_launch = step
        conv, fb = self.agents["conversation"], self.agents["feedback"]
        episodes = run_episodes(
            prompts, conv.generator, fb.generator, self.judge, settings, ids, timer, references=self.references
        )
        return self.learn(step, stage, episodes, timer, tracker)

    def step_batch(self, step: int) -> tuple[list[Prompt], RolloutSettings, list[str]]:
        """The next prompts from the stream (each repeated per group), the step-seeded settings and episode ids."""
        cfg = self.config
        prompts = [next(self.stream) for _ in range(cfg.rollout.prompts_per_step)]
        self.data_position += len(prompts)
        self.position_after[step] = self.data_position
        prompts = [p for p in prompts for _ in range(cfg.algorithm.samples_per_prompt)]
        settings = _seeded(rollout_settings(cfg), cfg.seed, step)
        if step < cfg.stages.stage1_steps:  # stage 1 trains only the feedback agent (a batch learned later in
            settings = replace(settings, reference_agents=("feedback",))  # stage 2 falls back to learner scoring)
        return prompts, settings, [f"{step}-{i}" for i in range(len(prompts))]

    def learn(
        self, step: int, stage: int, episodes: list[Episode], timer: StageTimer, tracker: Tracker
    ) -> dict[str, Any]:
        """Everything after the rollout: judge-failure check, rewards, samples, updates, weight sync, metrics."""
        cfg = self.config
        conv, fb = self.agents["conversation"], self.agents["feedback"]
        failure_rate = judge_failure_rate(episodes)
        if failure_rate > cfg.judge.max_failure_rate:
            raise JudgeFailureError(
                f"judge failed on {failure_rate:.1%} of calls at step {step} "
                f"(> judge.max_failure_rate {cfg.judge.max_failure_rate:.1%})"
            )
        with timer("reward"):
            weights = stage_weights(
                stage,
                cfg.reward.dir_weight,
                cfg.reward.label_weight_stage1,
                cfg.reward.label_weight_stage2,
                cfg.reward.format_weight,
            )
            fb_samples, conv_samples, sample_stats = batch_samples(
                episodes, cfg.seed, step, weights, cfg.rollout.mix_prob_b
            )
        metrics: dict[str, Any] = {"stage": stage, "judge/failure_rate": failure_rate}
        trained: list[tuple[Agent, list[Sample]]] = [(fb, fb_samples)]
        if stage == 2:
            trained.append((conv, conv_samples))
        metrics.update(self.update_agents(trained, timer, group_size=cfg.algorithm.samples_per_prompt))
        self.sync_weights([agent for agent, _ in trained], timer)
        metrics.update(rollout_metrics(episodes, fb_samples, conv_samples))
        metrics.update(generated_tokens(episodes))
        tracker.log_histograms({"feedback/dir": [s.reward_terms.get("dir", 0.0) for s in fb_samples]}, step=step + 1)
        metrics.update({f"samples/{k}": v for k, v in vars(sample_stats).items()})
        metrics.update({f"time/{k}": v for k, v in timer.seconds.items()})
        metrics.update({f"version/{a.name}": a.learner.policy_version for a in self.agents.values()})
        if cfg.logging.sample_table_every and step % cfg.logging.sample_table_every == 0:
            tracker.log_table("samples", *sample_table(episodes[:8]), step=step + 1)
        return metrics

    def update_agents(
        self, trained: list[tuple[Agent, list[Sample]]], timer: StageTimer, group_size: int
    ) -> dict[str, float]:
        """Each agent's log-probs, advantages and update, one agent after the other (in-process they share the
        cores); the metrics of all of them, in the order of ``trained``."""
        metrics: dict[str, float] = {}
        for agent, samples in trained:
            metrics.update(self._update(agent, samples, timer, group_size))
        return metrics

    def _update(self, agent: Agent, samples: list[Sample], timer: StageTimer, group_size: int) -> dict[str, float]:
        if not samples:
            return {f"{agent.name}/skipped_empty": 1.0}
        cfg = self.config.algorithm
        batch = make_batch([s.completion for s in samples], agent.tokenizer.pad_token_id)
        scored = rollout_reference_logprobs([s.completion for s in samples], batch.input_ids.shape[1])
        on_policy = self._on_policy_update(agent, samples)
        old_logp, ref_logp = None, scored
        if not (on_policy and scored is not None):  # on-policy: the update scores the policy itself
            with timer(f"{agent.name}_logprobs"):
                old_logp, learner_ref = agent.learner.logprobs(
                    batch, with_reference=scored is None, with_policy=not on_policy
                )
            ref_logp = learner_ref if scored is None else scored
        with timer("advantage"):
            rewards = torch.tensor([s.reward for s in samples], dtype=torch.float32)
            kl = None if old_logp is None else kl_estimate(old_logp, ref_logp, cfg.kl_estimator) * batch.action_mask
            groups = prompt_groups([s.episode_id for s in samples], group_size) if group_size > 1 else None
            advantages = self.estimator(
                rewards, batch.action_mask, kl=kl, kl_coef=cfg.kl_coef, group_ids=groups, gamma=cfg.discount
            )
            off_policy = None
            if old_logp is not None:
                off_policy = self._off_policy_weights(agent, samples, old_logp, batch.input_ids.shape[1])
            if off_policy is not None:
                weights, stale = off_policy
                advantages = advantages * weights
        tokens = batch.num_tokens
        batch_kl = float("nan") if kl is None else float(kl.sum() / max(tokens, 1.0))
        if cfg.max_kl is not None and not batch_kl <= cfg.max_kl:  # (a NaN KL is past any bound)
            stats = self._skip(agent, f"KL to the reference {batch_kl:.4g} > algorithm.max_kl {cfg.max_kl:g}")
        else:
            with timer(f"{agent.name}_update"):
                stats = agent.learner.update(batch, old_logp, ref_logp, advantages)
            if stats.skipped:
                self._skip(agent, f"non-finite loss {stats.loss} or gradient norm {stats.grad_norm}")
            else:
                self.consecutive_skips[agent.name] = 0
        if kl is None:
            batch_kl = stats.ref_kl  # the update measured it on the same forward pass
        extra: dict[str, float] = {}
        if off_policy is not None:
            corrected = float(stale.sum())
            extra = {
                f"{agent.name}/offpolicy_token_fraction": corrected / max(tokens, 1.0),
                f"{agent.name}/offpolicy_is_weight_mean": float((weights * stale).sum()) / max(corrected, 1.0),
                f"{agent.name}/offpolicy_is_truncated": float(((weights >= cfg.off_policy_is_cap) * stale).sum())
                / max(corrected, 1.0),
            }
        return extra | {
            f"{agent.name}/reward_mean": float(rewards.mean()),
            f"{agent.name}/kl": batch_kl,
            f"{agent.name}/loss": stats.loss,
            f"{agent.name}/clip_fraction": stats.clip_fraction,
            f"{agent.name}/entropy": stats.entropy,
            f"{agent.name}/grad_norm": stats.grad_norm,
            f"{agent.name}/lr": stats.lr,
            f"{agent.name}/skipped_steps": float(stats.skipped),
            f"faults/skipped_updates_{agent.name}": float(self.skipped_updates[agent.name]),
            f"{agent.name}/response_tokens": tokens / len(samples),
        }

    def _on_policy_update(self, agent: Agent, samples: list[Sample]) -> bool:
        """Whether the update can take its old log-probs from its own forward pass instead of a separate scoring
        pass (TRL's GRPO and OpenRLHF do the same): one epoch, a group estimator (the KL goes into the loss, not into
        the advantages), no KL bound to check before the update, and no sample older than the learner."""
        cfg = self.config.algorithm
        current = agent.learner.policy_version
        return (
            cfg.ppo_epochs == 1
            and cfg.advantage_estimator in ("grpo", "rloo")
            and cfg.max_kl is None
            and all(s.policy_version >= current for s in samples)
        )

    def _skip(self, agent: Agent, why: str) -> UpdateStats:
        """Count a skipped update (the trainer's KL bound, or the learner's own non-finite check) and stop the run
        after ``max_consecutive_skips`` in a row."""
        self.skipped_updates[agent.name] += 1
        self.consecutive_skips[agent.name] += 1
        limit = self.config.algorithm.max_consecutive_skips
        log.warning("%s update skipped (%d in a row): %s", agent.name, self.consecutive_skips[agent.name], why)
        if self.consecutive_skips[agent.name] >= limit:
            raise TrainingDivergedError(
                f"{agent.name}: {limit} updates in a row skipped (algorithm.max_consecutive_skips); last: {why}"
            )
        nan = float("nan")
        return UpdateStats(nan, nan, nan, nan, nan, nan, skipped=True)

    def _off_policy_weights(
        self, agent: Agent, samples: list[Sample], learner_logp: torch.Tensor, width: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Truncated importance weights for the tokens of samples older than the learner (None: nothing to correct).

        Synchronous runs never get here with stale samples, so ``max_staleness: 0`` stays exactly on-policy."""
        cfg = self.config.algorithm
        if cfg.off_policy_correction == "none":
            return None
        behaviour, stale = behaviour_logprobs(
            [s.completion for s in samples], width, stale_below=agent.learner.policy_version
        )
        if not stale.any():
            return None
        return truncated_is_weights(learner_logp, behaviour, stale, cfg.off_policy_is_cap), stale

    def sync_weights(self, agents: list[Agent], timer: StageTimer) -> None:
        """In-process the generator shares the learner's model object: the sync is the version number."""
        for agent in agents:
            agent.generator.policy_version = agent.learner.policy_version

    def _evaluate(self, filename: str | None) -> dict[str, float]:
        metrics, _ = evaluate(self.agents, self.judge, self.eval_prompts, self.config)
        if filename:
            (self.out / filename).write_text(json.dumps(metrics, indent=2, sort_keys=True))
        return metrics

    def save_checkpoint(self, path: Path) -> None:
        for agent in self.agents.values():
            agent.learner.policy.save_pretrained(path / agent.name)
            agent.tokenizer.save_pretrained(path / agent.name)

    def write_checkpoint(self, step: int, stage: int, tracker: Tracker) -> Path:
        """A resumable checkpoint after ``step`` completed steps (``waltz_ray.checkpoint`` for the layout)."""
        state = TrainerState(
            step=step,
            stage=stage,
            data_position=self.position_after[self.last_launch],
            launch=self.last_launch + 1,
            policy_versions={a.name: a.learner.policy_version for a in self.agents.values()},
            reference_paths=dict(self.reference_paths),
            metrics_rows=tracker.rows,
            wandb_run_id=tracker.run_id,
            counters=self.counters(),
        )
        path = self.checkpoints.save(state, self.write_resume_payload)
        log.info("checkpoint %s written", path)
        return path

    def counters(self) -> dict[str, int]:
        """Cumulative counters a resume must carry on (skipped updates; the Ray runtime adds its own)."""
        return {
            **{f"skipped_updates_{a}": n for a, n in self.skipped_updates.items()},
            **{f"consecutive_skips_{a}": n for a, n in self.consecutive_skips.items()},
        }

    def write_resume_payload(self, directory: Path) -> None:
        """Each agent's policy (Hugging Face format), tokenizer and learner state; the resolved config."""
        for agent in self.agents.values():
            agent.learner.save_state(directory / agent.name)
            agent.tokenizer.save_pretrained(directory / agent.name)
        save_config(self.config, directory / "config.yaml")


def _seeded(settings: RolloutSettings, seed: int, step: int) -> RolloutSettings:
    return replace(
        settings,
        conversation_params=replace(settings.conversation_params, seed=step_seed(seed, step, "conversation")),
        feedback_params=replace(settings.feedback_params, seed=step_seed(seed, step, "feedback")),
    )


def rollout_metrics(episodes: list[Episode], fb_samples: list[Sample], conv_samples: list[Sample]) -> dict[str, float]:
    """Per-step training-rollout metrics: protocol rates, DIR distribution, feedback length (SPEC §7 watch list)."""
    rollout = {f"rollout/{k}": v for k, v in pair_metrics(episodes).items()}
    dirs = [s.reward_terms.get("dir", 0.0) for s in fb_samples]
    lengths = [len(e.rounds[0].feedback.token_ids) for e in episodes if e.rounds[0].feedback is not None]
    rollout.update(
        {
            "feedback/dir_mean": sum(dirs) / max(1, len(dirs)),
            "feedback/dir_positive": sum(1 for d in dirs if d > 0) / max(1, len(dirs)),
            "feedback/dir_negative": sum(1 for d in dirs if d < 0) / max(1, len(dirs)),
            "feedback/length_tokens": sum(lengths) / max(1, len(lengths)),
            "conversation/type_b_share": sum(1 for s in conv_samples if s.kind == "B") / max(1, len(conv_samples)),
        }
    )
    return rollout


def generated_tokens(episodes: list[Episode]) -> dict[str, float]:
    """Tokens each agent generated for this step's episodes (every round), and the responses judged."""
    conv = sum(len(r.response.token_ids) for e in episodes for r in e.rounds)
    fb = sum(len(r.feedback.token_ids) for e in episodes for r in e.rounds if r.feedback is not None)
    judged = sum(len(e.rounds) for e in episodes)
    return {
        "tokens/conversation_generated": float(conv),
        "tokens/feedback_generated": float(fb),
        "judge/n_responses": float(judged),
    }


# Which timed stages keep each pool busy (the inline runtime has the same names, one process standing in for all).
POOL_STAGES = {
    "conversation_generation": ("conversation_generation", "revision_generation"),
    "feedback_generation": ("feedback_generation",),
    "judge": ("judge",),
    "reference": ("reference_logprobs",),
    "conversation_learner": ("conversation_logprobs", "conversation_update"),
    "feedback_learner": ("feedback_logprobs", "feedback_update"),
}


def pipeline_metrics(metrics: dict[str, Any], wall_s: float) -> dict[str, float]:
    """Throughput and idle time per pool for one step, from its stage timers and its wall time.

    ``pool/<name>_idle_fraction`` = 1 - (the pool's stage seconds) / (step wall seconds). With ``max_staleness`` > 0
    the rollout stages were timed on the batch produced while the previous step learned, so this is a per-step
    estimate; its mean over a run is the pool's idle share. ``judge/latency_s`` is the judge stage of the step (one
    batched call per rollout), ``judge/latency_s_per_response`` that divided by the responses judged."""
    wall = max(wall_s, 1e-9)
    out = {"time/step_wall": wall_s}
    conv, fb = metrics.get("tokens/conversation_generated", 0.0), metrics.get("tokens/feedback_generated", 0.0)
    out["throughput/tokens_per_s"] = (conv + fb) / wall
    out["throughput/conversation_tokens_per_s"] = conv / wall
    out["throughput/feedback_tokens_per_s"] = fb / wall
    for pool, stages in POOL_STAGES.items():
        timed = [metrics[f"time/{s}"] for s in stages if f"time/{s}" in metrics]
        if timed:
            out[f"pool/{pool}_idle_fraction"] = max(0.0, 1.0 - sum(timed) / wall)
    if "time/judge" in metrics:
        judged = metrics.get("judge/n_responses", 0.0)
        out["judge/latency_s"] = metrics["time/judge"]
        if judged:
            out["judge/latency_s_per_response"] = metrics["time/judge"] / judged
    return out


def sample_table(episodes: list[Episode]) -> tuple[list[str], list[list[Any]]]:
    columns = ["prompt", "label", "c0", "feedback", "c1", "judge_c0", "judge_final"]
    rows = []
    for e in episodes:
        fb = e.rounds[0].feedback
        rows.append(
            [
                e.prompt.text,
                e.prompt.label,
                e.rounds[0].response.text,
                fb.text if fb else "",
                e.final.response.text if e.revised else "",
                str(e.rounds[0].judge),
                str(e.final.judge),
            ]
        )
    return columns, rows


def _progress(steps: range, enabled: bool) -> Any:
    if not enabled:
        return steps
    from tqdm import tqdm

    return tqdm(steps, desc="waltz-ray train", unit="step")


def find_resume_point(config: WaltzConfig, out_dir: str | Path) -> ResumePoint:
    """The latest complete checkpoint of the run in ``out_dir`` (``CheckpointError`` if none or corrupt); warns
    about config fields that differ from the checkpoint's."""
    from waltz_ray.config import load_config

    point = CheckpointManager(Path(out_dir) / "checkpoints", config.checkpoint.keep_last).resume_point()
    saved = load_config(point.path / "config.yaml", saved=True).model_dump(mode="json")
    current = config.model_dump(mode="json")
    changed = sorted(k for k in current if current[k] != saved.get(k))
    if changed:
        log.warning("resuming %s with a config that differs in: %s", point.path, ", ".join(changed))
    return point


def train(config: WaltzConfig, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    start = time.perf_counter()
    point = find_resume_point(config, out_dir) if resume else None
    result = InlineTrainer(config, out_dir, resume=point).run()
    result["seconds"] = time.perf_counter() - start
    return result
