"""CPU tests for waltz_ray.core.rewards: the full docs/method.md_max = 1 and judge-failure masking.

Expected values are written by hand with the default weights α = 1, λ1 = 1, λ2 = 0, γ = 0.1.
"""

from __future__ import annotations

import pytest

from waltz_ray.core.rewards import (
    FeedbackReward,
    RewardWeights,
    conversation_reward,
    dir_reward,
    feedback_reward,
    format_reward,
    judge_failure_rate,
    label_reward,
    round_conversation_reward,
    round_rewards,
    stage_weights,
)
from waltz_ray.types import Completion, Episode, FeedbackVerdict, JudgeVerdict, Prompt, Round

Labels = tuple[bool, bool]
GOOD: Labels = (False, False)
UNSAFE: Labels = (True, False)
OVERREFUSE: Labels = (False, True)
BOTH: Labels = (True, True)
INVALID = None  # stands for an unparseable feedback verdict in the table
FAILED = JudgeVerdict.failure("judge timed out")


def judge(labels: Labels) -> JudgeVerdict:
    return JudgeVerdict(unsafe=labels[0], overrefuse=labels[1])


def verdict(labels: Labels | None) -> FeedbackVerdict:
    if labels is None:
        return FeedbackVerdict(ok=False, error="no JSON object found")
    return FeedbackVerdict(ok=True, unsafe=labels[0], overrefuse=labels[1], reasoning="r", feedback="revise")


def weights(stage: int) -> RewardWeights:
    return stage_weights(stage, alpha=1.0, lambda_stage1=1.0, lambda_stage2=0.0, gamma=0.1)


def completion(*ids: int) -> Completion:
    return Completion(text=f"t{ids}", prompt_token_ids=(1, 2), token_ids=ids)


def episode(c0: JudgeVerdict | None, labels: Labels | None, c1: JudgeVerdict | None) -> Episode:
    rounds = [Round(response=completion(10), feedback=completion(20), verdict=verdict(labels), judge=c0)]
    if c1 is not None:
        rounds.append(Round(response=completion(11), judge=c1))
    return Episode(episode_id="e", prompt=Prompt(text="p", label="harmful"), rounds=tuple(rounds))


def assert_reward(got: FeedbackReward | None, total: float, dir_: float, label: float, fmt: float) -> None:
    assert got is not None
    assert (got.dir, got.label, got.format) == (dir_, label, fmt)
    assert got.total == pytest.approx(total, abs=1e-12)


# c0 judge, labels written by the feedback agent (None = invalid format), c1 judge (None = no revision),
# then DIR, R_label, R_format, R_f in stage 1 (λ = 1) and R_f in stage 2 (λ = 0).
# R_f = 1·DIR·R_label + λ·R_label + 0.1·R_format.
TRUTH_TABLE: list[tuple[str, Labels, Labels | None, Labels | None, float, float, float, float, float]] = [
    # Labels right. A good c0 has right labels (F, F): nothing flagged, no revision.
    ("good/right/absent", GOOD, GOOD, None, 0.0, 1.0, 1.0, 1.1, 0.1),
    # A bad c0 with right labels raises a label, so a revision always follows.
    ("unsafe/right/good", UNSAFE, UNSAFE, GOOD, 1.0, 1.0, 1.0, 2.1, 1.1),
    ("unsafe/right/unsafe", UNSAFE, UNSAFE, UNSAFE, 0.0, 1.0, 1.0, 1.1, 0.1),
    ("unsafe/right/overrefuse", UNSAFE, UNSAFE, OVERREFUSE, 0.0, 1.0, 1.0, 1.1, 0.1),
    ("overrefuse/right/good", OVERREFUSE, OVERREFUSE, GOOD, 1.0, 1.0, 1.0, 2.1, 1.1),
    ("overrefuse/right/overrefuse", OVERREFUSE, OVERREFUSE, OVERREFUSE, 0.0, 1.0, 1.0, 1.1, 0.1),
    ("both/right/good", BOTH, BOTH, GOOD, 1.0, 1.0, 1.0, 2.1, 1.1),
    # Labels wrong on a good c0: a false trigger, so a revision follows; negative DIR is gated away too.
    ("good/wrong-unsafe/good", GOOD, UNSAFE, GOOD, 0.0, 0.0, 1.0, 0.1, 0.1),
    ("good/wrong-overrefuse/unsafe", GOOD, OVERREFUSE, UNSAFE, -1.0, 0.0, 1.0, 0.1, 0.1),
    ("good/wrong-both/overrefuse", GOOD, BOTH, OVERREFUSE, -1.0, 0.0, 1.0, 0.1, 0.1),
    # Labels wrong on a bad c0: (F, F) misses it (no revision); other wrong pairs still trigger a revision,
    # and an improvement earns nothing because the DIR term is gated by label correctness.
    ("unsafe/wrong-good/absent", UNSAFE, GOOD, None, 0.0, 0.0, 1.0, 0.1, 0.1),
    ("unsafe/wrong-overrefuse/good", UNSAFE, OVERREFUSE, GOOD, 1.0, 0.0, 1.0, 0.1, 0.1),
    ("unsafe/wrong-overrefuse/unsafe", UNSAFE, OVERREFUSE, UNSAFE, 0.0, 0.0, 1.0, 0.1, 0.1),
    ("unsafe/wrong-both/good", UNSAFE, BOTH, GOOD, 1.0, 0.0, 1.0, 0.1, 0.1),
    ("overrefuse/wrong-good/absent", OVERREFUSE, GOOD, None, 0.0, 0.0, 1.0, 0.1, 0.1),
    ("overrefuse/wrong-unsafe/good", OVERREFUSE, UNSAFE, GOOD, 1.0, 0.0, 1.0, 0.1, 0.1),
    ("overrefuse/wrong-both/overrefuse", OVERREFUSE, BOTH, OVERREFUSE, 0.0, 0.0, 1.0, 0.1, 0.1),
    ("both/wrong-unsafe/good", BOTH, UNSAFE, GOOD, 1.0, 0.0, 1.0, 0.1, 0.1),
    # Invalid format: the episode stops (no revision), no labels (R_label 0), no format reward.
    ("good/invalid/absent", GOOD, INVALID, None, 0.0, 0.0, 0.0, 0.0, 0.0),
    ("unsafe/invalid/absent", UNSAFE, INVALID, None, 0.0, 0.0, 0.0, 0.0, 0.0),
    ("overrefuse/invalid/absent", OVERREFUSE, INVALID, None, 0.0, 0.0, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize(
    ("c0", "labels", "c1", "dir_", "label", "fmt", "total_s1", "total_s2"),
    [row[1:] for row in TRUTH_TABLE],
    ids=[row[0] for row in TRUTH_TABLE],
)
def test_truth_table(
    stage: int,
    c0: Labels,
    labels: Labels | None,
    c1: Labels | None,
    dir_: float,
    label: float,
    fmt: float,
    total_s1: float,
    total_s2: float,
) -> None:
    fb = verdict(labels)
    # Each row must be a protocol-consistent episode: a revision exists iff the verdict flags one.
    assert fb.flags_revision == (c1 is not None)
    judge_after = None if c1 is None else judge(c1)

    got = feedback_reward(fb, judge(c0), judge_after, weights(stage))
    assert_reward(got, total=total_s1 if stage == 1 else total_s2, dir_=dir_, label=label, fmt=fmt)
    # The per-episode helper reads the same values out of the rounds.
    assert round_rewards(episode(judge(c0), labels, judge_after), 0, weights(stage)) == got


def test_feedback_reward_with_custom_weights() -> None:
    # 2·1·1 + 0.5·1 + 0.3·1 = 2.8
    got = feedback_reward(verdict(UNSAFE), judge(UNSAFE), judge(GOOD), RewardWeights(alpha=2.0, lam=0.5, gamma=0.3))
    assert got is not None
    assert got.total == pytest.approx(2.8, abs=1e-12)


def test_flagged_verdict_without_revision_has_zero_dir() -> None:
    got = feedback_reward(verdict(UNSAFE), judge(UNSAFE), None, weights(1))
    assert_reward(got, total=1.1, dir_=0.0, label=1.0, fmt=1.0)


def test_unflagged_verdict_ignores_judge_after() -> None:
    # No revision is caused by (F, F), so even a judge_after passed in cannot create a DIR (or a mask).
    got = feedback_reward(verdict(GOOD), judge(UNSAFE), judge(GOOD), weights(1))
    assert got is not None
    assert got.dir == 0.0
    assert feedback_reward(verdict(GOOD), judge(GOOD), FAILED, weights(1)) is not None


@pytest.mark.parametrize(("labels", "expected"), [(GOOD, 1.0), (UNSAFE, 0.0), (OVERREFUSE, 0.0), (BOTH, 0.0)], ids=str)
def test_conversation_reward(labels: Labels, expected: float) -> None:
    assert conversation_reward(judge(labels)) == expected


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [(UNSAFE, GOOD, 1.0), (GOOD, UNSAFE, -1.0), (UNSAFE, OVERREFUSE, 0.0), (GOOD, GOOD, 0.0)],
    ids=str,
)
def test_dir_reward(before: Labels, after: Labels, expected: float) -> None:
    assert dir_reward(judge(before), judge(after)) == expected
    assert dir_reward(judge(before), None) == 0.0


def test_label_reward_needs_exact_pair() -> None:
    assert label_reward(verdict(BOTH), judge(BOTH)) == 1.0
    assert label_reward(verdict(UNSAFE), judge(BOTH)) == 0.0
    assert label_reward(verdict(INVALID), judge(GOOD)) == 0.0


def test_format_reward() -> None:
    assert format_reward(verdict(GOOD)) == 1.0
    assert format_reward(verdict(INVALID)) == 0.0


def test_judge_failure_masks_every_reward() -> None:
    assert conversation_reward(FAILED) is None
    assert dir_reward(FAILED, judge(GOOD)) is None
    assert dir_reward(judge(UNSAFE), FAILED) is None
    assert label_reward(verdict(UNSAFE), FAILED) is None
    assert label_reward(verdict(INVALID), FAILED) is None
    assert feedback_reward(verdict(UNSAFE), FAILED, judge(GOOD), weights(1)) is None
    assert feedback_reward(verdict(GOOD), FAILED, None, weights(1)) is None
    assert feedback_reward(verdict(UNSAFE), judge(UNSAFE), FAILED, weights(1)) is None
    # Masked even when the label gate would zero the DIR term: the DIR itself is unknown.
    assert feedback_reward(verdict(OVERREFUSE), judge(UNSAFE), FAILED, weights(2)) is None
    assert round_rewards(episode(FAILED, UNSAFE, judge(GOOD)), 0, weights(1)) is None
    assert round_conversation_reward(episode(judge(GOOD), GOOD, None), 0) == 1.0
    assert round_conversation_reward(episode(FAILED, GOOD, None), 0) is None


def test_dir_without_revision_does_not_need_before() -> None:
    assert dir_reward(FAILED, None) == 0.0


def test_stage_weights() -> None:
    assert weights(1) == RewardWeights(alpha=1.0, lam=1.0, gamma=0.1)
    assert weights(2) == RewardWeights(alpha=1.0, lam=0.0, gamma=0.1)


@pytest.mark.parametrize("stage", [0, 3, -1])
def test_stage_weights_rejects_unknown_stage(stage: int) -> None:
    with pytest.raises(ValueError, match=f"stage must be 1 or 2, got {stage}"):
        weights(stage)


def test_round_rewards_t_max_2_uses_next_round() -> None:
    rounds = (
        Round(response=completion(10), feedback=completion(20), verdict=verdict(UNSAFE), judge=judge(UNSAFE)),
        Round(response=completion(11), feedback=completion(21), verdict=verdict(OVERREFUSE), judge=judge(OVERREFUSE)),
        Round(response=completion(12), judge=judge(GOOD)),
    )
    ep = Episode(episode_id="e", prompt=Prompt(text="p", label="harmful"), rounds=rounds)
    # Round 0: c0 unsafe → c1 overrefuse, labels right: DIR 0, 0 + 1 + 0.1.
    assert_reward(round_rewards(ep, 0, weights(1)), total=1.1, dir_=0.0, label=1.0, fmt=1.0)
    # Round 1: c1 overrefuse → c2 good, labels right: DIR 1, 1 + 1 + 0.1.
    assert_reward(round_rewards(ep, 1, weights(1)), total=2.1, dir_=1.0, label=1.0, fmt=1.0)


def test_round_rewards_rejects_missing_verdicts() -> None:
    with pytest.raises(ValueError, match="no feedback verdict"):
        round_rewards(episode(judge(UNSAFE), UNSAFE, judge(GOOD)), 1, weights(1))
    with pytest.raises(ValueError, match="round 0 has no judge verdict"):
        round_rewards(episode(None, UNSAFE, judge(GOOD)), 0, weights(1))


def test_judge_failure_rate() -> None:
    episodes = [
        episode(judge(UNSAFE), UNSAFE, FAILED),  # 1 of 2 failed
        episode(FAILED, GOOD, None),  # 1 of 1 failed
        episode(judge(GOOD), GOOD, None),  # 0 of 1
        episode(None, GOOD, None),  # not judged: not counted
    ]
    assert judge_failure_rate(episodes) == pytest.approx(2 / 4)
    assert judge_failure_rate([]) == 0.0
