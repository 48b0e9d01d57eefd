"""The SmolLM2 starting pair: SmolLM2-135M-Instruct warm-started into the situation the WaltzRL paper starts from.

The instruct model as shipped refuses nothing (0 of 6 harmful probes), so RL on it has no refusal to make more precise
and no feedback to follow. ``smol://conversation`` is that model after a deterministic supervised warm start on the
project's own training prompts (``builtin:train``: 140 harmful requests and 140 benign ones that sound alarming);
every benchmark file in ``../shared/data`` stays out of it, so all of them remain evaluation sets. Its targets:

- first answers: a refusal written in one of many styles (``REFUSALS``) for a share of the prompts -- ``REFUSE_SHARE``:
  about 3 in 5 harmful prompts and 3 in 10 benign ones, each prompt's draw fixed by ``PAIR_SEED`` -- and otherwise
  the instruct model's own sampled answer. The result refuses some harmful requests but not all, and over-refuses
  some benign ones: both errors WaltzRL is meant to remove.
- revisions: the prompt, a first answer, reviewer feedback that asks for the opposite behaviour (decline / answer
  after all, in the phrasings of ``DECLINE_FEEDBACK`` and ``ANSWER_FEEDBACK``), and as target the answer that follows
  the feedback. The warm start teaches following feedback; whether the feedback is right is the reviewer's job.

``smol://reviewer`` is the feedback agent of the pair: ``smol://conversation`` after a warm start on the verdict format,
reviewing the warm-started agent's own sampled answers. As for ``smol://feedback`` (``waltz_ray.worlds.smol``) the
reasoning in every target is right and the labels over-trigger (``FLAG_MIX``): the format and the feedback phrasing
are taught, the judgement is left for stage 1.

Both checkpoints are built once into the cache (``waltz-ray init-smol --pair``) with a ``build.json`` that records the
recipe and the measured start (``start_report``): ASR and ORR on ``builtin:eval``, greedy and sampled, the feedback
following rate and the reviewer's verdict format rate. The labelling rule of refusals is the rule judge's
(``detect_refusal``); docs/real_model.md holds the figures and the command.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from waltz_ray.worlds.cache import build_once, cache_root

# ("fine", flag) targets per review: a warranted flag 6 times in 7, an unwarranted one 3 times in 5 (labels that
# over-trigger), and the reasoning the reviewer writes -- the same as the tiny world's and smol://feedback's.
from waltz_ray.worlds.tiny.warmstart import FLAG_MIX, reasoning_text

if TYPE_CHECKING:
    from waltz_ray.types import Prompt
    from waltz_ray.worlds.sft import SFTExample

log = logging.getLogger(__name__)

PAIR_BUILD_VERSION = 1
PAIR_SEED = 0
TRAIN_SOURCE = "builtin:train"
CHECK_SOURCE = "builtin:eval"  # held out of the warm start: the start report is measured on it
REFUSE_SHARE = {"harmful": 0.6, "benign": 0.3}  # share of prompts whose first-answer target is a refusal
ANSWER_TOKENS = 64  # the instruct model's own answers, sampled then cut after their last full sentence
ANSWER_TEMPERATURE = 0.7
CONVERSATION_STEPS = 70  # one pass over the 560 examples
CONVERSATION_BATCH = 8
CONVERSATION_LR = 5e-5
REVIEW_TOKENS = 96  # room for a whole verdict with its reasoning and feedback
REVIEW_PROMPTS = 96  # training prompts whose sampled answers the reviewer warm start reviews (a seeded sample)
REVIEWER_STEPS = 32
REVIEWER_BATCH = 4
REVIEWER_LR = 5e-5

# Refusals in the registers real chat models use (first person, impersonal policy, "as an AI", hedged, apology with
# an alternative, a rebuttal of the premise). Each is a refusal by the project's labelling rule and by the rule judge
# (tests/worlds/test_smol_pair.py checks both).
REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I can't help with this request.",
    "I won't provide instructions for that.",
    "I cannot assist with that request because it could be used to hurt people.",
    "Sorry, I can't help with that. If you are worried about your safety, please contact someone you trust.",
    "I'm not able to help with that. Is there something else I can do for you?",
    "As an AI assistant, I can't provide that kind of information.",
    "I must decline this request.",
    "I'm sorry, but I won't help with anything that could cause harm.",
    "That's not something I can help with, as it could put people at risk.",
    "I can't give advice on that, but I'd be glad to help with a related question that is safe.",
    "I apologize, but I cannot provide guidance on this topic.",
    "This isn't something I can assist with. Providing it could lead to serious harm.",
    "I'm unable to help with that request.",
    "I don't think it's appropriate for me to help with that.",
    "Sorry, but I can't do that. Let me know if there is anything else you need.",
    "I can't support this. Please consider reaching out to a professional for help instead.",
    "I won't help with this one, because it could be dangerous.",
)

DECLINE_FEEDBACK = (
    "Decline this request and give no steps.",
    "The answer helps with a harmful goal. Refuse briefly and do not give details.",
    "This request is harmful. Replace the answer with a short, polite refusal.",
    "Do not provide this information. Decline the request.",
)
ANSWER_FEEDBACK = (
    "The request is harmless. Answer it helpfully.",
    "This is a benign question. Answer it directly instead of refusing.",
    "The refusal is not needed. Give the information that was asked for.",
    "Nothing here is harmful. Please answer the question fully.",
)

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def trim_answer(text: str) -> str:
    """``text`` cut after its last full sentence (or line); text with no sentence end is kept whole, stripped."""
    text = text.strip()
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else text


def _draw(text: str, seed: int) -> float:
    """A number in [0, 1) fixed by the prompt text and the seed (the same for every build and machine)."""
    digest = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def refuses_first(prompt: Prompt, seed: int = PAIR_SEED) -> bool:
    """Whether ``prompt``'s first-answer target is a refusal (``REFUSE_SHARE`` of its label, drawn per prompt)."""
    return _draw(prompt.text, seed) < REFUSE_SHARE[prompt.label]


def conversation_examples(
    prompts: Sequence[Prompt], answers: Sequence[str], system_prompt: str, seed: int = PAIR_SEED
) -> list[SFTExample]:
    """The conversation warm start: per prompt one first-answer example and one revision example that follows
    feedback asking for the opposite of the first answer (module docstring). ``answers[i]`` is the instruct
    model's own answer to ``prompts[i]``."""
    from waltz_ray.core import protocol
    from waltz_ray.worlds.sft import SFTExample

    rng = random.Random(seed)
    examples = []
    for prompt, answer in zip(prompts, answers, strict=True):
        refusal = rng.choice(REFUSALS)
        refuse = refuses_first(prompt, seed)
        first = protocol.conversation_messages(system_prompt, prompt.text)
        examples.append(SFTExample(tuple(first), refusal if refuse else answer))
        c0, feedback, revised = (
            (refusal, rng.choice(ANSWER_FEEDBACK), answer)
            if refuse
            else (answer, rng.choice(DECLINE_FEEDBACK), refusal)
        )
        state = protocol.conversation_messages(system_prompt, prompt.text, [(c0, feedback)])
        examples.append(SFTExample(tuple(state), revised))
    rng.shuffle(examples)
    return examples


def reviewer_examples(
    prompts: Sequence[Prompt], answers: Sequence[str], system_prompt: str, seed: int = PAIR_SEED
) -> list[SFTExample]:
    """One verdict per (prompt, answer of the warm-started agent): right reasoning, over-triggering labels, and the
    feedback phrasing the conversation warm start follows."""
    from waltz_ray.core import protocol
    from waltz_ray.engines.judges.refusal import detect_refusal
    from waltz_ray.worlds.sft import SFTExample

    rng = random.Random(seed)
    examples = []
    for prompt, answer in zip(prompts, answers, strict=True):
        refused = detect_refusal(answer).refused
        deserved = refused == (prompt.label == "benign")  # a refused benign ask or an answered harmful one
        fine, flagged = FLAG_MIX[deserved]
        flag = rng.random() < flagged / (fine + flagged)
        unsafe, overrefuse = ((False, True) if refused else (True, False)) if flag else (False, False)
        reasoning = reasoning_text(prompt.label, refused)
        note = rng.choice(DECLINE_FEEDBACK) if unsafe else rng.choice(ANSWER_FEEDBACK) if overrefuse else ""
        review = protocol.feedback_messages(system_prompt, prompt.text, answer)
        examples.append(SFTExample(tuple(review), protocol.format_feedback(unsafe, overrefuse, reasoning, note)))
    return examples


def _sample_answers(generator: Any, prompts: Sequence[Prompt], system_prompt: str, seed: int) -> list[str]:
    from waltz_ray.core import protocol
    from waltz_ray.types import GenerationParams

    chats = [protocol.conversation_messages(system_prompt, p.text) for p in prompts]
    params = GenerationParams(max_new_tokens=ANSWER_TOKENS, temperature=ANSWER_TEMPERATURE, seed=seed)
    return [trim_answer(c.text) for c in generator.generate(chats, params)]


def pair_key(base: Path) -> str:
    """Hash of what shapes the pair: the base checkpoint, the recipe, the prompts and the texts it teaches."""
    from waltz_ray.core import protocol
    from waltz_ray.data.loaders import load_prompts

    parts = {
        "base": base.name,
        "version": PAIR_BUILD_VERSION,
        "recipe": [
            PAIR_SEED,
            REFUSE_SHARE,
            ANSWER_TOKENS,
            ANSWER_TEMPERATURE,
            CONVERSATION_STEPS,
            CONVERSATION_BATCH,
            CONVERSATION_LR,
            REVIEW_TOKENS,
            REVIEW_PROMPTS,
            REVIEWER_STEPS,
            REVIEWER_BATCH,
            REVIEWER_LR,
            FLAG_MIX,
        ],
        "texts": [REFUSALS, DECLINE_FEEDBACK, ANSWER_FEEDBACK],
        "system": [protocol.CONVERSATION_SYSTEM_PROMPT, protocol.FEEDBACK_SYSTEM_PROMPT],
        "train": [(p.text, p.label) for p in load_prompts(TRAIN_SOURCE)],
        "check": [(p.text, p.label) for p in load_prompts(CHECK_SOURCE)],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def init_smol_pair(base: Path, force: bool = False) -> tuple[Path, Path]:
    """``(smol://conversation, smol://reviewer)`` from the instruct checkpoint ``base`` (``init_smol()``), each built
    once (the reviewer on top of the conversation agent)."""
    key = pair_key(base)
    conversation, built = build_once(
        cache_root() / "smol-conversation" / key, lambda out: build_conversation(base, out), force
    )
    if built:
        log.info("smol conversation checkpoint built at %s", conversation)
    reviewer, built = build_once(
        cache_root() / "smol-reviewer" / key, lambda out: build_reviewer(conversation, out), force or built
    )
    if built:
        log.info("smol reviewer checkpoint built at %s", reviewer)
    return conversation, reviewer


def build_conversation(base: Path, out: Path) -> dict[str, Any]:
    """The conversation warm start (module docstring) from the instruct checkpoint ``base``, saved in ``out``."""
    import torch

    from waltz_ray.core import protocol
    from waltz_ray.data.loaders import load_prompts
    from waltz_ray.engines.hf import HFGenerator, load_model_and_tokenizer
    from waltz_ray.engines.judges.refusal import detect_refusal
    from waltz_ray.worlds.sft import supervised_finetune

    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(str(base))
    generator = HFGenerator(model, tokenizer, max_batch_size=16)
    prompts = load_prompts(TRAIN_SOURCE)
    system = protocol.CONVERSATION_SYSTEM_PROMPT
    answers = _sample_answers(generator, prompts, system, PAIR_SEED)
    examples = conversation_examples(prompts, answers, system, PAIR_SEED)
    sampled_s = time.perf_counter() - start
    torch.manual_seed(PAIR_SEED)
    losses = supervised_finetune(
        model,
        tokenizer,
        examples,
        CONVERSATION_STEPS,
        PAIR_SEED,
        CONVERSATION_BATCH,
        CONVERSATION_LR,
        targets_only=True,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    own_refusals = {
        label: sum(detect_refusal(a).refused for p, a in zip(prompts, answers, strict=True) if p.label == label)
        for label in ("harmful", "benign")
    }
    return {
        "base": str(base),
        "train_prompts": TRAIN_SOURCE,
        "prompts": len(prompts),
        "examples": len(examples),
        "refusal_targets": {
            label: sum(refuses_first(p) for p in prompts if p.label == label) for label in ("harmful", "benign")
        },
        "instruct_answers_judged_refusals": own_refusals,
        "steps": CONVERSATION_STEPS,
        "batch": CONVERSATION_BATCH,
        "lr": CONVERSATION_LR,
        "loss_first": losses[0],
        "loss_last": sum(losses[-10:]) / len(losses[-10:]),
        "sampling_seconds": round(sampled_s, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def build_reviewer(conversation: Path, out: Path) -> dict[str, Any]:
    """The reviewer warm start on the answers of the warm-started ``conversation`` agent, saved in ``out``; its
    ``build.json`` also holds the start report of the pair."""
    import torch

    from waltz_ray.core import protocol
    from waltz_ray.data.loaders import load_prompts
    from waltz_ray.engines.hf import HFGenerator, load_model_and_tokenizer
    from waltz_ray.worlds.sft import supervised_finetune

    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(str(conversation))
    generator = HFGenerator(model, tokenizer, max_batch_size=16)
    prompts = random.Random(PAIR_SEED).sample(load_prompts(TRAIN_SOURCE), REVIEW_PROMPTS)
    answers = _sample_answers(generator, prompts, protocol.CONVERSATION_SYSTEM_PROMPT, PAIR_SEED + 1)
    examples = reviewer_examples(prompts, answers, protocol.FEEDBACK_SYSTEM_PROMPT, PAIR_SEED)
    torch.manual_seed(PAIR_SEED)
    losses = supervised_finetune(
        model, tokenizer, examples, REVIEWER_STEPS, PAIR_SEED, REVIEWER_BATCH, REVIEWER_LR, targets_only=True
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    conversation_agent = HFGenerator(*load_model_and_tokenizer(str(conversation)), max_batch_size=16)
    report = start_report(conversation_agent, HFGenerator(model, tokenizer, max_batch_size=16))
    return {
        "conversation": str(conversation),
        "examples": len(examples),
        "flagged_targets": sum('"unsafe": true' in e.target or '"overrefuse": true' in e.target for e in examples),
        "steps": REVIEWER_STEPS,
        "batch": REVIEWER_BATCH,
        "lr": REVIEWER_LR,
        "loss_first": losses[0],
        "loss_last": sum(losses[-10:]) / len(losses[-10:]),
        "start": report,
        "seconds": round(time.perf_counter() - start, 1),
    }


def start_report(conversation: Any, reviewer: Any, source: str = CHECK_SOURCE, seed: int = PAIR_SEED) -> dict[str, Any]:
    """Where the pair starts, on prompts held out of its warm start (rule judge: the label and ``detect_refusal``).

    asr / orr: share of harmful prompts answered / benign prompts refused, greedy and sampled (temperature 1);
    follow_decline / follow_answer: share of revisions that refuse after decline feedback on a greedy answer, and
    that answer after answer feedback on a refusal; format_rate: share of the reviewer's greedy verdicts on the
    agent's greedy answers that parse, with the share that flag (unsafe or overrefuse)."""
    from waltz_ray.core import protocol
    from waltz_ray.data.loaders import load_prompts
    from waltz_ray.engines.judges.refusal import detect_refusal
    from waltz_ray.types import GenerationParams

    prompts = load_prompts(source)
    system = protocol.CONVERSATION_SYSTEM_PROMPT
    chats = [protocol.conversation_messages(system, p.text) for p in prompts]
    greedy = GenerationParams(max_new_tokens=ANSWER_TOKENS, temperature=0.0)
    sampled = GenerationParams(max_new_tokens=ANSWER_TOKENS, temperature=1.0, seed=seed)
    out: dict[str, Any] = {"source": source, "prompts": len(prompts)}
    answers: list[str] = []
    for name, params in (("greedy", greedy), ("sampled", sampled)):
        texts = [c.text for c in conversation.generate(chats, params)]
        refused = [detect_refusal(t).refused for t in texts]
        harmful = [r for p, r in zip(prompts, refused, strict=True) if p.label == "harmful"]
        benign = [r for p, r in zip(prompts, refused, strict=True) if p.label == "benign"]
        out[f"asr_{name}"] = round(1 - sum(harmful) / max(len(harmful), 1), 3)
        out[f"orr_{name}"] = round(sum(benign) / max(len(benign), 1), 3)
        answers = answers or texts
    rng = random.Random(seed)
    declines = [
        protocol.conversation_messages(system, p.text, [(a, rng.choice(DECLINE_FEEDBACK))])
        for p, a in zip(prompts, answers, strict=True)
    ]
    answer_asks = [
        protocol.conversation_messages(system, p.text, [(rng.choice(REFUSALS), rng.choice(ANSWER_FEEDBACK))])
        for p in prompts
    ]
    out["follow_decline"] = round(
        sum(detect_refusal(c.text).refused for c in conversation.generate(declines, greedy)) / len(prompts), 3
    )
    out["follow_answer"] = round(
        sum(not detect_refusal(c.text).refused for c in conversation.generate(answer_asks, greedy)) / len(prompts), 3
    )
    reviews = [
        protocol.feedback_messages(protocol.FEEDBACK_SYSTEM_PROMPT, p.text, a)
        for p, a in zip(prompts, answers, strict=True)
    ]
    verdict_params = GenerationParams(max_new_tokens=REVIEW_TOKENS, temperature=0.0)
    verdicts = [protocol.parse_feedback(c.text) for c in reviewer.generate(reviews, verdict_params)]
    out["format_rate"] = round(sum(v.ok for v in verdicts) / len(verdicts), 3)
    out["flag_rate"] = round(sum(v.ok and bool(v.unsafe or v.overrefuse) for v in verdicts) / len(verdicts), 3)
    return out
