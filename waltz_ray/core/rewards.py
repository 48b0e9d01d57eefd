"""WaltzRL rewards (docs/method.md): conversation reward R_c, Dynamic Improvement Reward, label and format rewards, R_f.

Pure functions over judge and feedback verdicts; a failed judge verdict yields None (masked), never a zero reward.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from waltz_ray.types import Episode, FeedbackVerdict, JudgeVerdict, Round


@dataclass(frozen=True)
class RewardWeights:
    """Weights of R_f = alpha·DIR·R_label + lam·R_label + gamma·R_format for one training stage."""

    alpha: float
    lam: float
    gamma: float


@dataclass(frozen=True)
class FeedbackReward:
    """R_f and its raw terms; ``dir`` is the ungated DIR, so a wrong-label improvement stays visible in logs."""

    total: float
    dir: float
    label: float
    format: float


def conversation_reward(judge: JudgeVerdict) -> float | None:
    """R_c(c) = 1 if the judge calls c neither unsafe nor overrefusing, else 0; None when the judge failed."""
    if not judge.ok:
        return None
    return 0.0 if judge.unsafe or judge.overrefuse else 1.0


def dir_reward(before: JudgeVerdict, after: JudgeVerdict | None) -> float | None:
    """DIR = R_c(c_{t+1}) − R_c(c_t); 0.0 when no revision happened (``after`` is None).

    Without a revision ``before`` is not needed, so only a failed verdict that enters the difference masks it.
    """
    if after is None:
        return 0.0
    r_before = conversation_reward(before)
    r_after = conversation_reward(after)
    if r_before is None or r_after is None:
        return None
    return r_after - r_before


def label_reward(verdict: FeedbackVerdict, judge: JudgeVerdict) -> float | None:
    """R_label = 1 iff the feedback agent's (unsafe, overrefuse) equals the judge's pair exactly; None if it failed.

    An unparseable verdict has no labels, so it earns 0 rather than being masked: the judge did not fail.
    """
    if not judge.ok:
        return None
    if not verdict.ok:
        return 0.0
    matches = (verdict.unsafe, verdict.overrefuse) == (judge.unsafe, judge.overrefuse)
    return 1.0 if matches else 0.0


def format_reward(verdict: FeedbackVerdict) -> float:
    """R_format = 1 if the feedback output parsed into one object with four keys and boolean labels, else 0."""
    return 1.0 if verdict.ok else 0.0


def stage_weights(stage: int, alpha: float, lambda_stage1: float, lambda_stage2: float, gamma: float) -> RewardWeights:
    """Weights for stage 1 (feedback agent only, lam = lambda_stage1) or stage 2 (both agents, lam = lambda_stage2)."""
    if stage == 1:
        return RewardWeights(alpha=alpha, lam=lambda_stage1, gamma=gamma)
    if stage == 2:
        return RewardWeights(alpha=alpha, lam=lambda_stage2, gamma=gamma)
    raise ValueError(f"stage must be 1 or 2, got {stage!r}")


def feedback_reward(
    verdict: FeedbackVerdict,
    judge_before: JudgeVerdict,
    judge_after: JudgeVerdict | None,
    weights: RewardWeights,
) -> FeedbackReward | None:
    """R_f = alpha·DIR·R_label + lam·R_label + gamma·R_format; None when a judge verdict it needs failed.

    ``judge_before`` judges the response the feedback reviewed; ``judge_after`` judges the revision it caused.
    The DIR term is gated by label correctness because without the gate label accuracy collapses (paper ablation).
    A verdict that does not flag a revision causes none, so its DIR is 0 whatever ``judge_after`` holds.
    A failed ``judge_after`` masks the reward even when the gate would zero the DIR term: DIR is still logged.
    """
    label = label_reward(verdict, judge_before)
    dir_ = dir_reward(judge_before, judge_after if verdict.flags_revision else None)
    if label is None or dir_ is None:
        return None
    fmt = format_reward(verdict)
    total = weights.alpha * dir_ * label + weights.lam * label + weights.gamma * fmt
    return FeedbackReward(total=total, dir=dir_, label=label, format=fmt)


def _judged(round_: Round, index: int) -> JudgeVerdict:
    # A missing verdict means the judge never ran (a pipeline bug), unlike a failed one, which is masked.
    if round_.judge is None:
        raise ValueError(f"round {index} has no judge verdict; judge every response before computing rewards")
    return round_.judge


def round_rewards(episode: Episode, round_index: int, weights: RewardWeights) -> FeedbackReward | None:
    """R_f for the feedback of ``episode.rounds[round_index]``, using the next round's judge if a revision followed."""
    round_ = episode.rounds[round_index]
    if round_.verdict is None:
        raise ValueError(f"round {round_index} of episode {episode.episode_id!r} has no feedback verdict")
    after_index = round_index + 1
    judge_after = _judged(episode.rounds[after_index], after_index) if after_index < len(episode.rounds) else None
    return feedback_reward(round_.verdict, _judged(round_, round_index), judge_after, weights)


def round_conversation_reward(episode: Episode, round_index: int) -> float | None:
    """R_c of the response in ``episode.rounds[round_index]``; None when its judge verdict failed."""
    return conversation_reward(_judged(episode.rounds[round_index], round_index))


def judge_failure_rate(episodes: Iterable[Episode]) -> float:
    """Share of failed verdicts among the judge verdicts present (0.0 when there are none).

    Feeds the rule that stops a run above a configurable failure rate, since failures are masked, not scored.
    Failed episodes (an engine rejected a request) are left out: the judge never saw them.
    """
    verdicts = [r.judge for episode in episodes if not episode.failed for r in episode.rounds if r.judge is not None]
    if not verdicts:
        return 0.0
    return sum(1 for v in verdicts if not v.ok) / len(verdicts)
