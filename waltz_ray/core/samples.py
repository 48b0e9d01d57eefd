"""Turn judged episodes into training samples (docs/method.md): one feedback sample and one conversation sample each.

The conversation sample is type A (p → c0) or type B (p, c0, feedback → revision), mixed with a configurable coin.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from waltz_ray.core.rewards import RewardWeights, round_conversation_reward, round_rewards
from waltz_ray.types import Episode, Sample, SampleKind


@dataclass(frozen=True)
class SampleStats:
    """Counts for one batch; masked samples (failed judge) are dropped from the batch but counted here.

    ``n_feedback`` and ``n_conversation`` count kept samples; ``n_type_a + n_type_b == n_conversation``.
    """

    n_episodes: int
    n_feedback: int
    n_conversation: int
    n_masked_feedback: int
    n_masked_conversation: int
    n_type_a: int
    n_type_b: int


def _check_mix_prob_b(mix_prob_b: float) -> None:
    if not 0.0 <= mix_prob_b <= 1.0:
        raise ValueError(f"mix_prob_b is the probability of a type-B sample and must be in [0, 1], got {mix_prob_b}")


def _pick(u: float, n: int) -> int:
    """Index in range(n) from a uniform draw u in [0, 1); min() guards against float rounding up to n."""
    return min(int(u * n), n - 1)


def _feedback_sample(episode: Episode, u: float, weights: RewardWeights) -> Sample | None:
    feedback_rounds = [(t, r.feedback) for t, r in enumerate(episode.rounds) if r.feedback is not None]
    if not feedback_rounds:
        return None
    t, feedback = feedback_rounds[_pick(u, len(feedback_rounds))]
    reward = round_rewards(episode, t, weights)
    terms = {} if reward is None else {"dir": reward.dir, "label": reward.label, "format": reward.format}
    return Sample(
        agent="feedback",
        kind="feedback",
        episode_id=episode.episode_id,
        completion=feedback,
        reward=None if reward is None else reward.total,
        reward_terms=terms,
    )


def _conversation_sample(episode: Episode, is_b: bool, u: float) -> Sample:
    # Type B needs a revision; without one it falls back to A so every episode still yields a conversation sample.
    kind: SampleKind
    if is_b and episode.revised:
        t = 1 + _pick(u, len(episode.rounds) - 1)
        kind = "B"
    else:
        t = 0
        kind = "A"
    return Sample(
        agent="conversation",
        kind=kind,
        episode_id=episode.episode_id,
        completion=episode.rounds[t].response,
        reward=round_conversation_reward(episode, t),
    )


def episode_samples(
    episode: Episode, rng: random.Random, weights: RewardWeights, mix_prob_b: float = 0.5
) -> tuple[Sample | None, Sample]:
    """(feedback sample, conversation sample) for one episode.

    The feedback sample is for one feedback round drawn uniformly (None if the episode has no feedback); the
    conversation sample is type B (a revision drawn uniformly from rounds[1:]) with probability ``mix_prob_b``,
    else type A (c0). A masked sample has reward None.
    """
    _check_mix_prob_b(mix_prob_b)
    # Exactly three draws per episode, all made whether or not they are used, so the random stream does not
    # depend on outcomes: two runs whose episodes differ only in later outcomes still make the same choices.
    u_feedback, u_coin, u_revision = rng.random(), rng.random(), rng.random()
    feedback = _feedback_sample(episode, u_feedback, weights)
    conversation = _conversation_sample(episode, u_coin < mix_prob_b, u_revision)
    return feedback, conversation


def batch_samples(
    episodes: Sequence[Episode], seed: int, step: int, weights: RewardWeights, mix_prob_b: float
) -> tuple[list[Sample], list[Sample], SampleStats]:
    """Feedback samples, conversation samples (masked ones dropped) and counts for one step.

    Seeded by (seed, step): the same episodes give the same samples on every run and every machine.
    """
    _check_mix_prob_b(mix_prob_b)
    # A string seed is hashed with SHA-512 by random.Random, independent of PYTHONHASHSEED.
    rng = random.Random(f"waltz-samples:{seed}:{step}")
    feedback_samples: list[Sample] = []
    conversation_samples: list[Sample] = []
    n_masked_feedback = n_masked_conversation = 0
    for episode in episodes:
        feedback, conversation = episode_samples(episode, rng, weights, mix_prob_b)
        if feedback is not None and feedback.masked:
            n_masked_feedback += 1
        elif feedback is not None:
            feedback_samples.append(feedback)
        if conversation.masked:
            n_masked_conversation += 1
        else:
            conversation_samples.append(conversation)
    stats = SampleStats(
        n_episodes=len(episodes),
        n_feedback=len(feedback_samples),
        n_conversation=len(conversation_samples),
        n_masked_feedback=n_masked_feedback,
        n_masked_conversation=n_masked_conversation,
        n_type_a=sum(1 for s in conversation_samples if s.kind == "A"),
        n_type_b=sum(1 for s in conversation_samples if s.kind == "B"),
    )
    return feedback_samples, conversation_samples, stats
