"""Supervised warm start of the tiny instruct model that both agents start from (they differ by system prompt).

It gives the model knowledge but a miscalibrated policy, so RL has something real to fix -- the situation of a real
instruct model that knows what is harmful yet over-refuses some look-alikes and complies with some harmful asks:
- knowledge: a separate classification task (its own system prompt) labels each training request harmful or benign,
  standing in for what pre-training teaches a real model;
- the conversation agent barely acts on it: it refuses 3 harmful requests in 5 and 2 benign ones in 5, so its
  sampled first answers are close to a coin flip that leans the right way (greedy answers follow the lean);
- after feedback it follows the feedback (decline after an "unsafe" note, answer after an "overrefuse" note);
- the feedback agent knows the protocol's JSON verdict format and reasons correctly ("The request is harmful. The answer
  complies."), but over-triggers -- the untrained pair's known failure (the paper: FTR 42.6% on general prompts): it
  raises a warranted flag 6 times in 7 and an unwarranted one 3 times in 5, so greedy decoding flags every answer and
  its revisions turn good first answers into bad final ones. Flagging only what its reasoning supports is what
  stage 1 teaches.

The policies are weakly sensitive to intent rather than blind to it on purpose: RL sharpens a dependency that
exists quickly, while growing one that supervised training deliberately removed takes far longer than a CPU run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from waltz_ray.core import protocol
from waltz_ray.types import Prompt
from waltz_ray.worlds.sft import SFTExample

# The tiny conversation agent's repertoire. Refusals must be recognised by the rule judge and answers must not:
# tests/worlds/test_tiny.py checks both against waltz_ray.engines.judges. Each group shares its first word so that the
# first token carries the whole refuse/answer probability (greedy decoding then follows the policy's majority,
# not whichever group happens to have fewer surface forms).
REFUSALS = (
    "I can't help with that.",
    "I won't help with that request.",
    "I cannot assist with that.",
)
ANSWERS = (
    "Sure, here is a clear answer with the steps you need.",
    "Sure. Here is how it works, step by step.",
    "Sure: here are the main points and what to do.",
)

# (unsafe, overrefuse) -> the feedback sentence the tiny feedback agent writes.
FEEDBACK_TEXT: dict[tuple[bool, bool], str] = {
    (False, False): "No change needed.",
    (True, False): "Decline this request and give no steps.",
    (False, True): "The request is harmless. Answer it helpfully.",
}
# Every state gets each of its target variants in these exact proportions, so the warm start learns the intended
# probabilities instead of memorising one random draw per prompt (which leaves RL nothing to explore).
# (refusals, answers) among the first-answer targets of a harmful and of a benign request.
FIRST_ANSWER_MIX: dict[bool, tuple[int, int]] = {True: (3, 2), False: (2, 3)}
# ("fine", flag) targets per review state: a warranted flag 6 in 7, an unwarranted one 3 in 5.
FLAG_MIX = {True: (1, 6), False: (2, 3)}
KNOWLEDGE_SYSTEM = "Classify the request as harmful or benign."
KNOWLEDGE_REPEATS = 2


def reasoning_text(label: str, refused: bool) -> str:
    """What the warm-started feedback agent knows about a (prompt, answer): correct, and not yet acted upon."""
    return f"The request is {label}. The answer {'refuses' if refused else 'complies'}."


def feedback_json(unsafe: bool, overrefuse: bool, reasoning: str = "") -> str:
    return protocol.format_feedback(unsafe, overrefuse, reasoning, FEEDBACK_TEXT[(unsafe, overrefuse)])


def build_sft_examples(
    prompts: Sequence[Prompt],
    conversation_system: str,
    feedback_system: str,
    seed: int,
    revision_template: str = protocol.DEFAULT_REVISION_TEMPLATE,
) -> list[SFTExample]:
    """All warm-start examples for the shared tiny model, from the *training* prompts only."""
    rng = random.Random(seed)
    examples: list[SFTExample] = []
    for prompt in prompts:
        knowledge = protocol.conversation_messages(KNOWLEDGE_SYSTEM, prompt.text)
        examples += [SFTExample(tuple(knowledge), prompt.label)] * KNOWLEDGE_REPEATS
        first = protocol.conversation_messages(conversation_system, prompt.text)
        refusals, answers = FIRST_ANSWER_MIX[prompt.label == "harmful"]
        for refuse in [True] * refusals + [False] * answers:
            examples.append(SFTExample(tuple(first), rng.choice(REFUSALS if refuse else ANSWERS)))
        for c0 in (rng.choice(REFUSALS), rng.choice(ANSWERS)):
            for labels in ((True, False), (False, True)):
                note = FEEDBACK_TEXT[labels]
                state = protocol.conversation_messages(
                    conversation_system, prompt.text, [(c0, note)], revision_template=revision_template
                )
                examples.append(SFTExample(tuple(state), rng.choice(REFUSALS if labels[0] else ANSWERS)))
            review = protocol.feedback_messages(feedback_system, prompt.text, c0)
            refused = c0 in REFUSALS
            reasoning = reasoning_text(prompt.label, refused)
            flag = (False, True) if refused else (True, False)
            fine, flagged = FLAG_MIX[refused == (prompt.label == "benign")]
            for labels in [(False, False)] * fine + [flag] * flagged:
                examples.append(SFTExample(tuple(review), feedback_json(*labels, reasoning)))
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
    fixed += [
        feedback_json(*labels, reasoning_text(k, r))
        for labels in FEEDBACK_TEXT
        for k in ("harmful", "benign")
        for r in (True, False)
    ]
    return fixed * 20 + [p.text for p in prompts]
