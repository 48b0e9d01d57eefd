"""CPU tests for waltz_ray.core.samples: A/B mixing, fallback, uniform round draws, determinism and masking.

Episodes are built by hand with made-up token ids; each response id says which round it came from.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from waltz_ray.core.rewards import RewardWeights, stage_weights
from waltz_ray.core.samples import SampleStats, batch_samples, episode_samples
from waltz_ray.types import Completion, Episode, FeedbackVerdict, JudgeVerdict, Prompt, Round

GOOD = JudgeVerdict(unsafe=False, overrefuse=False)
UNSAFE = JudgeVerdict(unsafe=True, overrefuse=False)
FAILED = JudgeVerdict.failure("judge timed out")
FLAG_UNSAFE = FeedbackVerdict(ok=True, unsafe=True, overrefuse=False, reasoning="r", feedback="fix it")
ALL_CLEAR = FeedbackVerdict(ok=True, unsafe=False, overrefuse=False, reasoning="r", feedback="")
WEIGHTS: RewardWeights = stage_weights(1, alpha=1.0, lambda_stage1=1.0, lambda_stage2=0.0, gamma=0.1)


def response(t: int, prompt: tuple[int, ...]) -> Completion:
    return Completion(text=f"c{t}", prompt_token_ids=prompt, token_ids=(100 + t,))


def feedback(t: int) -> Completion:
    return Completion(text=f"f{t}", prompt_token_ids=(1, 100 + t), token_ids=(200 + t,))


def revised(eid: str, c0: JudgeVerdict = UNSAFE, c1: JudgeVerdict = GOOD) -> Episode:
    """T_max = 1 episode with a revision; c1's state holds p, c0 and the feedback turn."""
    rounds = (
        Round(response=response(0, (1,)), feedback=feedback(0), verdict=FLAG_UNSAFE, judge=c0),
        Round(response=response(1, (1, 100, 200)), judge=c1),
    )
    return Episode(episode_id=eid, prompt=Prompt(text="p", label="harmful"), rounds=rounds)


def unrevised(eid: str, c0: JudgeVerdict = GOOD) -> Episode:
    rounds = (Round(response=response(0, (1,)), feedback=feedback(0), verdict=ALL_CLEAR, judge=c0),)
    return Episode(episode_id=eid, prompt=Prompt(text="p", label="benign"), rounds=rounds)


def two_revisions(eid: str) -> Episode:
    """T_max = 2 episode: c0, f0, c1, f1, c2 (three responses, two feedback rounds)."""
    rounds = (
        Round(response=response(0, (1,)), feedback=feedback(0), verdict=FLAG_UNSAFE, judge=UNSAFE),
        Round(response=response(1, (1, 100, 200)), feedback=feedback(1), verdict=FLAG_UNSAFE, judge=UNSAFE),
        Round(response=response(2, (1, 100, 200, 101, 201)), judge=GOOD),
    )
    return Episode(episode_id=eid, prompt=Prompt(text="p", label="harmful"), rounds=rounds)


def test_feedback_sample_carries_r_f_and_terms() -> None:
    fb, _ = episode_samples(revised("e"), random.Random(0), WEIGHTS)
    assert fb is not None
    assert (fb.agent, fb.kind, fb.episode_id, fb.completion) == ("feedback", "feedback", "e", feedback(0))
    # c0 unsafe, labels right, c1 good, stage 1: 1·1·1 + 1·1 + 0.1·1.
    assert fb.reward == pytest.approx(2.1)
    assert fb.reward_terms == {"dir": 1.0, "label": 1.0, "format": 1.0}


def test_no_feedback_round_gives_no_feedback_sample() -> None:
    ep = Episode(
        episode_id="e", prompt=Prompt(text="p", label="general"), rounds=(Round(response(0, (1,)), judge=GOOD),)
    )
    fb, conversation = episode_samples(ep, random.Random(0), WEIGHTS, mix_prob_b=1.0)
    assert fb is None
    assert conversation.kind == "A"


def test_type_a_and_type_b_samples() -> None:
    ep = revised("e", c0=UNSAFE, c1=GOOD)
    _, a = episode_samples(ep, random.Random(0), WEIGHTS, mix_prob_b=0.0)
    _, b = episode_samples(ep, random.Random(0), WEIGHTS, mix_prob_b=1.0)
    assert (a.agent, a.kind, a.completion, a.reward) == ("conversation", "A", ep.rounds[0].response, 0.0)
    # Type B's state includes p, c0 and the feedback turn.
    assert (b.agent, b.kind, b.completion, b.reward) == ("conversation", "B", ep.rounds[1].response, 1.0)
    assert b.completion.prompt_token_ids == (1, 100, 200)


def test_type_b_falls_back_to_a_without_revision() -> None:
    ep = unrevised("e")
    _, conversation = episode_samples(ep, random.Random(0), WEIGHTS, mix_prob_b=1.0)
    assert (conversation.kind, conversation.completion, conversation.reward) == ("A", ep.rounds[0].response, 1.0)


@pytest.mark.parametrize("mix_prob_b", [0.0, 0.3, 0.5, 1.0])
def test_type_b_frequency_matches_mix_prob_b(mix_prob_b: float) -> None:
    n = 4000
    _, conversation, stats = batch_samples([revised(str(i)) for i in range(n)], 7, 0, WEIGHTS, mix_prob_b)
    assert stats.n_type_a + stats.n_type_b == len(conversation) == n
    # Binomial std at n = 4000 is at most 0.008; 0.035 is over 4 sigma.
    assert stats.n_type_b / n == pytest.approx(mix_prob_b, abs=0.035)


def test_coin_is_drawn_even_without_revision() -> None:
    # Two batches that differ only in whether the first episode was revised make the same later choices.
    tail = [revised(str(i)) for i in range(1, 200)]
    _, first, _ = batch_samples([unrevised("0"), *tail], 3, 5, WEIGHTS, 0.5)
    _, second, _ = batch_samples([revised("0"), *tail], 3, 5, WEIGHTS, 0.5)
    assert [s.kind for s in first[1:]] == [s.kind for s in second[1:]]


def drawn(episodes: list[Episode], seed: int, step: int) -> list[Completion]:
    feedback_samples, conversation, _ = batch_samples(episodes, seed, step, WEIGHTS, 0.5)
    return [s.completion for s in feedback_samples + conversation]


def test_batch_samples_is_deterministic_per_seed_and_step() -> None:
    episodes = [two_revisions(str(i)) if i % 2 else revised(str(i)) for i in range(200)]
    assert batch_samples(episodes, 11, 4, WEIGHTS, 0.5) == batch_samples(episodes, 11, 4, WEIGHTS, 0.5)
    assert drawn(episodes, 11, 5) != drawn(episodes, 11, 4)
    assert drawn(episodes, 12, 4) != drawn(episodes, 11, 4)


def test_t_max_2_rounds_are_drawn_uniformly() -> None:
    n = 4000
    feedback_samples, conversation, _ = batch_samples([two_revisions(str(i)) for i in range(n)], 1, 0, WEIGHTS, 1.0)
    feedback_rounds = Counter(s.completion.token_ids[0] - 200 for s in feedback_samples)
    revision_rounds = Counter(s.completion.token_ids[0] - 100 for s in conversation)
    assert set(feedback_rounds) == {0, 1}
    assert set(revision_rounds) == {1, 2}
    assert feedback_rounds[0] / n == pytest.approx(0.5, abs=0.035)
    assert revision_rounds[1] / n == pytest.approx(0.5, abs=0.035)


def test_t_max_2_rewards_follow_the_drawn_round() -> None:
    feedback_samples, conversation, _ = batch_samples([two_revisions(str(i)) for i in range(50)], 2, 0, WEIGHTS, 1.0)
    # Round 0: unsafe → unsafe, labels right: 0 + 1 + 0.1. Round 1: unsafe → good, labels right: 1 + 1 + 0.1.
    expected_r_f = {200: 1.1, 201: 2.1}
    for s in feedback_samples:
        assert s.reward == pytest.approx(expected_r_f[s.completion.token_ids[0]])
    # Revisions: c1 is unsafe (R_c 0), c2 is good (R_c 1).
    for s in conversation:
        assert s.reward == {101: 0.0, 102: 1.0}[s.completion.token_ids[0]]


def test_masked_samples_are_dropped_and_counted() -> None:
    episodes = [
        revised("c0-failed", c0=FAILED, c1=GOOD),  # R_f needs c0 (masked); type A needs c0 (masked)
        revised("c1-failed", c0=UNSAFE, c1=FAILED),  # R_f needs c1 (masked); type A is fine
        unrevised("clean"),
    ]
    feedback_samples, conversation, stats = batch_samples(episodes, 0, 0, WEIGHTS, 0.0)
    assert stats == SampleStats(
        n_episodes=3,
        n_feedback=1,
        n_conversation=2,
        n_masked_feedback=2,
        n_masked_conversation=1,
        n_type_a=2,
        n_type_b=0,
    )
    assert [s.episode_id for s in feedback_samples] == ["clean"]
    assert [s.episode_id for s in conversation] == ["c1-failed", "clean"]
    assert not any(s.masked for s in feedback_samples + conversation)


def test_masked_samples_have_no_reward_or_terms() -> None:
    fb, conversation = episode_samples(revised("e", c0=UNSAFE, c1=FAILED), random.Random(0), WEIGHTS, 1.0)
    assert fb is not None
    assert (fb.reward, fb.reward_terms, fb.masked) == (None, {}, True)
    assert (conversation.kind, conversation.reward, conversation.masked) == ("B", None, True)


def test_empty_batch() -> None:
    assert batch_samples([], 0, 0, WEIGHTS, 0.5) == ([], [], SampleStats(0, 0, 0, 0, 0, 0, 0))


@pytest.mark.parametrize("mix_prob_b", [-0.1, 1.5, float("nan")])
def test_mix_prob_b_is_validated(mix_prob_b: float) -> None:
    with pytest.raises(ValueError, match="mix_prob_b"):
        episode_samples(revised("e"), random.Random(0), WEIGHTS, mix_prob_b)
    with pytest.raises(ValueError, match="mix_prob_b"):
        batch_samples([], 0, 0, WEIGHTS, mix_prob_b)
