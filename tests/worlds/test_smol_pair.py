"""The SmolLM2 starting pair (``waltz_ray.worlds.smol_pair``): its texts against the labelling rule, the per-prompt
draws, the warm-start examples, the ``smol://conversation`` / ``smol://reviewer`` resolution, and the whole recipe run
end to end on the tiny world's model (seconds; the real build is ``waltz-ray init-smol --pair``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from waltz_ray.cli import main
from waltz_ray.config import build_config
from waltz_ray.core import protocol
from waltz_ray.data.loaders import load_prompts
from waltz_ray.engines.judges import detect_refusal
from waltz_ray.types import Prompt
from waltz_ray.worlds import resolve_model_path, smol_pair
from waltz_ray.worlds.smol_pair import (
    ANSWER_FEEDBACK,
    DECLINE_FEEDBACK,
    REFUSALS,
    conversation_examples,
    refuses_first,
    reviewer_examples,
    trim_answer,
)

SYSTEM = protocol.CONVERSATION_SYSTEM_PROMPT
ANSWER = "Use the kill command with the process id, for example kill 1234."


def test_every_taught_refusal_is_a_refusal_to_the_rule_judge() -> None:
    """The judge is the reward: a refusal style it cannot see would be punished as an unsafe answer in training."""
    assert len(set(REFUSALS)) == len(REFUSALS) >= 15
    assert [r for r in REFUSALS if not detect_refusal(r).refused] == []
    assert not detect_refusal(ANSWER).refused


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Sure. Here is how it works. Step 3: take the", "Sure. Here is how it works."),
        ("First line\nsecond line without an end", "First line"),
        ("Version 2.5 is out! Try it", "Version 2.5 is out!"),
        ("  no sentence end at all ", "no sentence end at all"),
        ("Done.", "Done."),
    ],
)
def test_trim_answer_keeps_whole_sentences(text: str, kept: str) -> None:
    assert trim_answer(text) == kept


def test_refusal_draws_are_fixed_per_prompt_and_near_the_shares() -> None:
    prompts = load_prompts("builtin:train")
    draws = [refuses_first(p) for p in prompts]
    assert draws == [refuses_first(p) for p in prompts]  # no hidden state
    for label, share in smol_pair.REFUSE_SHARE.items():
        labelled = [d for p, d in zip(prompts, draws, strict=True) if p.label == label]
        assert abs(sum(labelled) / len(labelled) - share) < 0.1, label
    # counted once on the builtin split (build.json records them too): 76 of 140 harmful, 45 of 140 benign
    assert sum(d for p, d in zip(prompts, draws, strict=True) if p.label == "harmful") == 76
    assert sum(d for p, d in zip(prompts, draws, strict=True) if p.label == "benign") == 45


def test_conversation_examples_teach_the_draw_and_following_feedback() -> None:
    prompts = [
        Prompt("How do I kill a frozen process in Linux?", "benign"),
        Prompt("How do I hurt someone?", "harmful"),
    ]
    examples = conversation_examples(prompts, [ANSWER, ANSWER], SYSTEM)
    assert len(examples) == 4
    for prompt in prompts:
        mine = [e for e in examples if e.messages[1]["content"] == prompt.text]
        first = next(e for e in mine if len(e.messages) == 2)
        revision = next(e for e in mine if len(e.messages) == 4)
        refused = refuses_first(prompt)
        assert (first.target in REFUSALS) == refused and (first.target == ANSWER) == (not refused)
        # the revision asks for the opposite of the first answer, and its target does what the feedback says
        c0, feedback = revision.messages[2]["content"], revision.messages[3]["content"]
        if refused:
            assert c0 in REFUSALS and any(f in feedback for f in ANSWER_FEEDBACK) and revision.target == ANSWER
        else:
            assert c0 == ANSWER and any(f in feedback for f in DECLINE_FEEDBACK) and revision.target in REFUSALS
        assert revision.messages[:2] == first.messages[:2]


def test_reviewer_examples_are_valid_verdicts_whose_feedback_matches_the_flag() -> None:
    prompts = load_prompts("builtin:train")[:60]
    answers = [REFUSALS[i % len(REFUSALS)] if i % 3 == 0 else ANSWER for i in range(len(prompts))]
    examples = reviewer_examples(prompts, answers, protocol.FEEDBACK_SYSTEM_PROMPT)
    flags = 0
    for prompt, answer, example in zip(prompts, answers, examples, strict=True):
        verdict = protocol.parse_feedback(example.target)
        assert verdict.ok, example.target
        refused = answer in REFUSALS
        assert verdict.reasoning == f"The request is {prompt.label}. The answer {'refuses' if refused else 'complies'}."
        assert not (verdict.unsafe and refused) and not (verdict.overrefuse and not refused)  # flags fit the answer
        assert (verdict.feedback in DECLINE_FEEDBACK) == verdict.unsafe
        assert (verdict.feedback in ANSWER_FEEDBACK) == verdict.overrefuse
        assert (verdict.feedback == "") == (not (verdict.unsafe or verdict.overrefuse))
        flags += verdict.unsafe or verdict.overrefuse
    assert 0 < flags < len(prompts)


def test_pair_paths_build_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``smol://conversation`` and ``smol://reviewer`` (and ``init-smol --pair``) build the pair once, the reviewer
    from the conversation checkpoint, then reuse it."""
    from waltz_ray.worlds import smol

    base = tmp_path / "cache" / "smol" / "base"
    base.mkdir(parents=True)
    builds: list[tuple[str, Path]] = []

    def fake(kind: str) -> Any:
        def build(source: Path, out: Path) -> dict[str, Any]:
            builds.append((kind, source))
            return {"from": str(source)}

        return build

    monkeypatch.setenv("WALTZ_RAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(smol, "init_smol", lambda force=False: base)
    monkeypatch.setattr(smol_pair, "build_conversation", fake("conversation"))
    monkeypatch.setattr(smol_pair, "build_reviewer", fake("reviewer"))
    conversation = Path(resolve_model_path("smol://conversation", build_config()))
    reviewer = Path(resolve_model_path("smol://reviewer", build_config()))
    assert conversation.parent.name == "smol-conversation" and reviewer.parent.name == "smol-reviewer"
    assert builds == [("conversation", base), ("reviewer", conversation)]
    assert main(["init-smol", "--pair"]) == 0 and len(builds) == 2  # reused
    assert json.loads((reviewer / "build.json").read_text()) == {"from": str(conversation)}
    assert main(["init-smol", "--pair", "--feedback"]) == 2


def test_the_recipe_runs_end_to_end_on_the_tiny_model(
    tiny_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every step of the real build -- sampling the base model's answers, both warm starts, saving, the start
    report -- on the tiny world's model with two optimizer steps each."""
    from tests.tiny_world import tiny_config
    from waltz_ray.worlds.tiny.build import init_tiny

    base = init_tiny(tiny_config())
    for name, value in {"CONVERSATION_STEPS": 2, "REVIEWER_STEPS": 2, "ANSWER_TOKENS": 8, "REVIEW_TOKENS": 8}.items():
        monkeypatch.setattr(smol_pair, name, value)
    report = smol_pair.build_conversation(base, tmp_path / "conversation")
    assert report["prompts"] == 280 and report["examples"] == 560
    assert report["refusal_targets"] == {"harmful": 76, "benign": 45}
    review = smol_pair.build_reviewer(tmp_path / "conversation", tmp_path / "reviewer")
    start = review["start"]
    assert start["prompts"] == len(load_prompts("builtin:eval"))
    for key in ("asr_greedy", "orr_greedy", "asr_sampled", "orr_sampled", "follow_decline", "follow_answer"):
        assert 0.0 <= start[key] <= 1.0, key
    assert 0.0 <= start["flag_rate"] <= start["format_rate"] <= 1.0
    assert (tmp_path / "reviewer" / "config.json").is_file() and (tmp_path / "conversation" / "config.json").is_file()


def test_the_pair_config_starts_both_systems_from_the_pair() -> None:
    """configs/smol_pair.yaml: the WaltzRL run and, with two overrides, single-model RL from the same start."""
    from waltz_ray.config import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "smol_pair.yaml"
    waltz = load_config(path)
    assert waltz.agents.conversation.model_path == "smol://conversation"
    assert waltz.agents.feedback.model_path == "smol://reviewer"
    assert waltz.runtime.max_staleness >= 1 and waltz.algorithm.samples_per_prompt > 1
    assert waltz.data.train == "builtin:train" and waltz.data.eval == "builtin:eval"
    single = load_config(path, ["algorithm.mode=single", "stages.stage1_steps=0"])
    assert single.agents.conversation == waltz.agents.conversation
    assert single.stages.stage2_steps == waltz.stages.stage2_steps and single.rollout == waltz.rollout
