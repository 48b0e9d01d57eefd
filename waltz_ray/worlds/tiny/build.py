"""Build (or reuse) the cached tiny instruct checkpoint: tokenizer, Llama model, supervised warm start.

Deterministic from the seed; cached under the user cache directory keyed by everything that shapes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from waltz_ray.config import WaltzConfig
from waltz_ray.core import protocol
from waltz_ray.worlds.cache import build_once, cache_root
from waltz_ray.worlds.sft import supervised_finetune
from waltz_ray.worlds.tiny.model import build_tiny_model, save_model, tiny_llama_config
from waltz_ray.worlds.tiny.tokenizer import train_tokenizer
from waltz_ray.worlds.tiny.warmstart import build_sft_examples, tokenizer_corpus

log = logging.getLogger(__name__)

BUILD_VERSION = 9  # bump when the recipe changes so stale caches are not reused
VOCAB_SIZE = 2048


def _system_prompts(config: WaltzConfig) -> tuple[str, str]:
    conv = config.agents.conversation.system_prompt
    fb = config.agents.feedback.system_prompt
    return (
        protocol.CONVERSATION_SYSTEM_PROMPT if conv is None else conv,
        protocol.FEEDBACK_SYSTEM_PROMPT if fb is None else fb,
    )


def tiny_key(config: WaltzConfig) -> str:
    """Hash of everything that shapes the tiny checkpoint (recipe version, sizes, seed, prompts, data)."""
    from waltz_ray.data.loaders import load_prompts

    train = load_prompts(config.data.train)
    parts = {
        "version": BUILD_VERSION,
        "tiny": config.tiny.model_dump(),
        "system": _system_prompts(config),
        "revision": config.rollout.revision_template,
        "train": [(p.text, p.label, p.category) for p in train],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def init_tiny(config: WaltzConfig, force: bool = False) -> Path:
    """Return the tiny instruct checkpoint for this config, building it once (atomically) if it is not cached."""
    target, built = build_once(cache_root() / "tiny" / tiny_key(config), lambda out: _build(config, out), force)
    if built:
        log.info("tiny checkpoint built at %s", target)
    return target


def _build(config: WaltzConfig, out: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from waltz_ray.data.loaders import load_prompts

    start = time.perf_counter()
    conv_system, fb_system = _system_prompts(config)
    train = load_prompts(config.data.train)
    everything = load_prompts("builtin")
    train_tokenizer(tokenizer_corpus(everything, conv_system, fb_system), VOCAB_SIZE, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
    model_config = tiny_llama_config(len(tokenizer), config.tiny.hidden_size, config.tiny.num_layers, ids)
    model = build_tiny_model(model_config, config.tiny.seed)
    revision = config.rollout.revision_template or protocol.DEFAULT_REVISION_TEMPLATE
    examples = build_sft_examples(train, conv_system, fb_system, config.tiny.seed, revision)
    torch.manual_seed(config.tiny.seed)
    losses = supervised_finetune(model, tokenizer, examples, config.tiny.sft_steps, config.tiny.seed)
    save_model(model, tokenizer, out)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "sft_examples": len(examples),
        "sft_steps": config.tiny.sft_steps,
        "sft_loss_first": losses[0] if losses else None,
        "sft_loss_last": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "seconds": round(time.perf_counter() - start, 1),
    }
