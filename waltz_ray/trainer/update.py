"""One agent's update from its samples: score them (policy and reference log-probs, unless the rollout or the update
itself already does), compute the advantages, correct stale samples, bound the KL, step the learner. The two
updaters run it for every trained agent, one after the other (inline) or at the same time (Ray learner groups)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import torch

from waltz_ray.config import WaltzConfig
from waltz_ray.core.advantages import estimator_spec
from waltz_ray.core.losses import kl_estimate, truncated_is_weights
from waltz_ray.engines.learner import (
    UpdateStats,
    behaviour_logprobs,
    kl_settings,
    make_batch,
    rollout_reference_logprobs,
)
from waltz_ray.factory import Agent
from waltz_ray.rollout import StageTimer
from waltz_ray.trainer.batches import prompt_groups
from waltz_ray.types import AGENTS, AgentName, Sample

log = logging.getLogger(__name__)
T = TypeVar("T")


class TrainingDivergedError(RuntimeError):
    """One agent's updates were skipped ``algorithm.max_consecutive_skips`` times in a row (non-finite loss or
    gradient, or KL to the reference past ``algorithm.max_kl``)."""


class AgentUpdate:
    """log-probs -> advantages -> learner update for one agent's samples, with the skip accounting of the run."""

    def __init__(self, config: WaltzConfig, counters: dict[str, int] | None = None) -> None:
        counters = counters or {}
        self.config = config
        self.spec = estimator_spec(config.algorithm.advantage_estimator)
        self.kl_estimator = kl_settings(config.algorithm)[1]
        self.group_size = config.algorithm.samples_per_prompt
        self.skipped_updates = {a: counters.get(f"skipped_updates_{a}", 0) for a in AGENTS}
        self.consecutive_skips = {a: counters.get(f"consecutive_skips_{a}", 0) for a in AGENTS}

    def counters(self) -> dict[str, int]:
        return {
            **{f"skipped_updates_{a}": n for a, n in self.skipped_updates.items()},
            **{f"consecutive_skips_{a}": n for a, n in self.consecutive_skips.items()},
        }

    def __call__(self, agent: Agent, samples: list[Sample], timer: StageTimer) -> dict[str, float]:
        if not samples:
            return {f"{agent.name}/skipped_empty": 1.0}
        cfg = self.config.algorithm
        completions = [s.completion for s in samples]
        batch = make_batch(completions, agent.tokenizer.pad_token_id)
        width = batch.input_ids.shape[1]
        scored = rollout_reference_logprobs(completions, width)  # the rollout's reference scores, if it has them
        on_policy = self.on_policy(agent, samples)
        old_logp, ref_logp = None, scored
        if not (on_policy and scored is not None):  # on-policy: the update scores the policy itself
            with timer(f"{agent.name}_logprobs"):
                old_logp, learner_ref = agent.learner.logprobs(
                    batch, with_reference=scored is None, with_policy=not on_policy
                )
            ref_logp = learner_ref if scored is None else scored
        with timer("advantage"):
            rewards = torch.tensor([s.reward for s in samples], dtype=torch.float32)
            kl = None if old_logp is None else kl_estimate(old_logp, ref_logp, self.kl_estimator) * batch.action_mask
            groups = prompt_groups([s.episode_id for s in samples], self.group_size) if self.group_size > 1 else None
            advantages = self.spec.fn(
                rewards, batch.action_mask, kl=kl, kl_coef=cfg.kl_coef, group_ids=groups, gamma=cfg.discount
            )
            off_policy = None if old_logp is None else self.off_policy_weights(agent, samples, old_logp, width)
            if off_policy is not None:
                weights, stale = off_policy
                advantages = advantages * weights
        tokens = batch.num_tokens
        batch_kl = float("nan") if kl is None else float(kl.sum() / max(tokens, 1.0))
        if cfg.max_kl is not None and not batch_kl <= cfg.max_kl:  # (a NaN KL is past any bound)
            stats = self.skip(agent.name, f"KL to the reference {batch_kl:.4g} > algorithm.max_kl {cfg.max_kl:g}")
        else:
            with timer(f"{agent.name}_update"):
                stats = agent.learner.update(batch, old_logp, ref_logp, advantages)
            if stats.skipped:
                self.skip(agent.name, f"non-finite loss {stats.loss} or gradient norm {stats.grad_norm}")
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

    def on_policy(self, agent: Agent, samples: list[Sample]) -> bool:
        """Whether the update can take its old log-probs from its own forward pass instead of a separate scoring
        pass (TRL's GRPO and OpenRLHF do the same): one epoch, an estimator whose KL goes into the loss (not into the
        advantages), no KL bound to check before the update, and no sample older than the learner."""
        cfg = self.config.algorithm
        current = agent.learner.policy_version
        return (
            cfg.ppo_epochs == 1
            and self.spec.kl_in_loss
            and cfg.max_kl is None
            and all(s.policy_version >= current for s in samples)
        )

    def skip(self, agent: AgentName, why: str) -> UpdateStats:
        """Count a skipped update (the KL bound, or the learner's own non-finite check) and stop the run after
        ``algorithm.max_consecutive_skips`` in a row."""
        self.skipped_updates[agent] += 1
        self.consecutive_skips[agent] += 1
        limit = self.config.algorithm.max_consecutive_skips
        log.warning("%s update skipped (%d in a row): %s", agent, self.consecutive_skips[agent], why)
        if self.consecutive_skips[agent] >= limit:
            raise TrainingDivergedError(
                f"{agent}: {limit} updates in a row skipped (algorithm.max_consecutive_skips); last: {why}"
            )
        nan = float("nan")
        return UpdateStats(nan, nan, nan, nan, nan, nan, skipped=True)

    def off_policy_weights(
        self, agent: Agent, samples: list[Sample], learner_logp: torch.Tensor, width: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Truncated importance weights for the tokens of samples older than the learner (None: nothing to correct).

        Synchronous runs never get here with stale samples, so ``max_staleness: 0`` stays exactly on-policy."""
        cfg = self.config.algorithm
        if cfg.off_policy_correction == "none":
            return None
        completions = [s.completion for s in samples]
        behaviour, stale = behaviour_logprobs(completions, width, stale_below=agent.learner.policy_version)
        if not stale.any():
            return None
        return truncated_is_weights(learner_logp, behaviour, stale, cfg.off_policy_is_cap), stale


class SequentialUpdater:
    """Each trained agent in turn (in-process both agents share the same cores)."""

    def __init__(self, update: AgentUpdate) -> None:
        self.agent_update = update

    def update(self, trained: Sequence[tuple[Agent, list[Sample]]], timer: StageTimer) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for agent, samples in trained:
            metrics.update(self.agent_update(agent, samples, timer))
        return metrics

    def counters(self) -> dict[str, int]:
        return self.agent_update.counters()


class ConcurrentUpdater:
    """Every trained agent's update in a driver thread of its own, so separate learner groups (Ray actors) work at
    the same time instead of one waiting for the other; the metrics in the order of ``trained``."""

    def __init__(self, update: AgentUpdate) -> None:
        self.agent_update = update

    def update(self, trained: Sequence[tuple[Agent, list[Sample]]], timer: StageTimer) -> dict[str, float]:
        calls = [partial(self.agent_update, agent, samples, timer) for agent, samples in trained]
        return {k: v for part in concurrently(calls, "learner-update") for k, v in part.items()}

    def counters(self) -> dict[str, int]:
        return self.agent_update.counters()


def concurrently(calls: Sequence[Callable[[], T]], name: str = "concurrently") -> list[T]:
    """Run every call in a thread of its own and wait for all of them; their results, in order. When calls raise,
    the first failure in the order of ``calls`` is raised once every call has finished (none is left running).
    For calls that spend their time waiting on remote actors (the GIL is free meanwhile)."""
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix=name) as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]
