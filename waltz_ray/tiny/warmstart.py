"""Supervised warm start of the tiny instruct model that both agents start from (they differ by system prompt).

It gives the model knowledge but a deliberately naive policy, so RL has something real to fix -- the situation of a
real instruct model that knows what is harmful yet over-refuses some look-alikes and complies with some harmful asks:
- knowledge: a separate classification task (its own system prompt) labels each training request harmful or benign,
  standing in for what pre-training teaches a real model; neither agent's behaviour uses it yet;
- the conversation agent answers or refuses by *topic* (half the categories look "dangerous" to it), not by intent,
  so it over-refuses benign look-alikes in some topics and helps with harmful requests in others; it samples the
  other behaviour 20% of the time, which gives RL room to explore;
- after feedback it follows the feedback (decline after an "unsafe" note, answer after an "overrefuse" note);
- the feedback agent learns the SPEC JSON format and what a refusal looks like, but not which requests are harmful:
  after a refusal it says "fine" or "over-refusal" half the time each, after an answer "fine" or "unsafe" half the
  time each, whatever the prompt. Telling harmful from benign is what stage 1 has to teach it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from waltz_ray.core import protocol
from waltz_ray.types import Prompt

# The tiny conversation agent's repertoire. Refusals must be recognised by the rule judge and answers must not:
# tests/test_tiny.py checks both against waltz_ray.engines.judges.
REFUSALS = (
    "I can't help with that.",
    "Sorry, but I won't help with that request.",
    "I cannot assist with that.",
)
ANSWERS = (
    "Sure, here is a clear answer with the steps you need.",
    "Of course. Here is how it works, step by step.",
    "Happy to help: here are the main points and what to do.",
)

# (unsafe, overrefuse) -> (reasoning, feedback) written by the tiny feedback agent.
FEEDBACK_TEXT: dict[tuple[bool, bool], tuple[str, str]] = {
    (False, False): ("The answer fits the request.", "No change needed."),
    (True, False): ("The request is harmful and the answer helps with it.", "Decline this request and give no steps."),
    (False, True): (
        "The request is harmless but the answer refuses it.",
        "The request is harmless. Answer it helpfully.",
    ),
}
# Every state gets each of its target variants in these exact proportions, so the warm start learns the intended
# probabilities instead of memorising one random draw per prompt (which leaves RL nothing to explore).
FIRST_ANSWER_NAIVE, FIRST_ANSWER_OTHER = 4, 1  # the naive topic rule 80% of the time, the other behaviour 20%
KNOWLEDGE_SYSTEM = "Classify the request as harmful or benign."
KNOWLEDGE_REPEATS = 2


@dataclass(frozen=True)
class SFTExample:
    """One supervised example: a chat state and the assistant text to learn after it."""

    messages: tuple[dict[str, str], ...]
    target: str


def naive_refusal_topics(categories: Sequence[str], seed: int) -> frozenset[str]:
    """Half of the categories (a seeded hash, stable across Python runs) look 'dangerous' to the warm start."""
    ranked = sorted(set(categories), key=lambda c: hashlib.sha256(f"{seed}:{c}".encode()).hexdigest())
    return frozenset(ranked[: len(ranked) // 2])


def feedback_json(unsafe: bool, overrefuse: bool) -> str:
    reasoning, feedback = FEEDBACK_TEXT[(unsafe, overrefuse)]
    return protocol.format_feedback(unsafe, overrefuse, reasoning, feedback)


def build_sft_examples(
    prompts: Sequence[Prompt],
    conversation_system: str,
    feedback_system: str,
    seed: int,
    revision_template: str = protocol.DEFAULT_REVISION_TEMPLATE,
) -> list[SFTExample]:
    """All warm-start examples for the shared tiny model, from the *training* prompts only."""
    rng = random.Random(seed)
    refuse_topics = naive_refusal_topics([p.category for p in prompts], seed)
    examples: list[SFTExample] = []
    for prompt in prompts:
        knowledge = protocol.conversation_messages(KNOWLEDGE_SYSTEM, prompt.text)
        examples += [SFTExample(tuple(knowledge), prompt.label)] * KNOWLEDGE_REPEATS
        first = protocol.conversation_messages(conversation_system, prompt.text)
        naive_refuses = prompt.category in refuse_topics
        for refuse in [naive_refuses] * FIRST_ANSWER_NAIVE + [not naive_refuses] * FIRST_ANSWER_OTHER:
            examples.append(SFTExample(tuple(first), rng.choice(REFUSALS if refuse else ANSWERS)))
        for c0 in (rng.choice(REFUSALS), rng.choice(ANSWERS)):
            for labels in ((True, False), (False, True)):
                note = FEEDBACK_TEXT[labels][1]
                state = protocol.conversation_messages(
                    conversation_system, prompt.text, [(c0, note)], revision_template=revision_template
                )
                examples.append(SFTExample(tuple(state), rng.choice(REFUSALS if labels[0] else ANSWERS)))
            review = protocol.feedback_messages(feedback_system, prompt.text, c0)
            flagged = (False, True) if c0 in REFUSALS else (True, False)
            for labels in ((False, False), flagged):
                examples.append(SFTExample(tuple(review), feedback_json(*labels)))
    rng.shuffle(examples)
    return examples


def tokenizer_corpus(prompts: Sequence[Prompt], conversation_system: str, feedback_system: str) -> list[str]:
    """Text the tiny tokenizer is trained on: every prompt text (no labels), the system prompts, templates and
    the agents' repertoire (a stand-in for the broad corpus a real tokenizer sees)."""
    fixed = [
        conversation_system,
        feedback_system,
        protocol.DEFAULT_REVISION_TEMPLATE,
        protocol.DEFAULT_FEEDBACK_TEMPLATE,
    ]
    fixed += [KNOWLEDGE_SYSTEM, *REFUSALS, *ANSWERS]
    fixed += [feedback_json(*labels) for labels in FEEDBACK_TEXT]
    return fixed * 20 + [p.text for p in prompts]
