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

from waltz_ray.cache import build_once, cache_root
from waltz_ray.config import WaltzConfig
from waltz_ray.core import protocol
from waltz_ray.tiny.model import build_tiny_model, save_model, tiny_llama_config
from waltz_ray.tiny.tokenizer import train_tokenizer
from waltz_ray.tiny.warmstart import SFTExample, build_sft_examples, tokenizer_corpus

log = logging.getLogger(__name__)

TINY_SCHEME = "tiny://"
BUILD_VERSION = 9  # bump when the recipe changes so stale caches are not reused
VOCAB_SIZE = 2048
SFT_BATCH = 32
SFT_LR = 1e-3


def _system_prompts(config: WaltzConfig) -> tuple[str, str]:
    conv = config.agents.conversation.system_prompt
    fb = config.agents.feedback.system_prompt
    return (
        protocol.CONVERSATION_SYSTEM_PROMPT if conv is None else conv,
        protocol.FEEDBACK_SYSTEM_PROMPT if fb is None else fb,
    )


def tiny_key(config: WaltzConfig) -> str:
    """Hash of everything that shapes the tiny checkpoint (recipe version, sizes, seed, prompts, data)."""
    from waltz_ray.datasets import load_prompts

    train = load_prompts(config.data.train)
    parts = {
        "version": BUILD_VERSION,
        "tiny": config.tiny.model_dump(),
        "system": _system_prompts(config),
        "revision": config.rollout.revision_template,
        "train": [(p.text, p.label, p.category) for p in train],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def resolve_model_path(path: str, config: WaltzConfig) -> str:
    """Turn ``tiny://<name>`` (the tiny world) or ``smol://instruct`` (SmolLM2, ``waltz_ray.smol``) into the cached
    checkpoint directory, building it on first use; other paths pass through."""
    if path.startswith("smol://"):
        from waltz_ray.smol import resolve_smol_path

        return resolve_smol_path(path)
    if not path.startswith(TINY_SCHEME):
        return path
    return str(init_tiny(config))


def init_tiny(config: WaltzConfig, force: bool = False) -> Path:
    """Return the tiny instruct checkpoint for this config, building it once (atomically) if it is not cached."""
    target, built = build_once(cache_root() / "tiny" / tiny_key(config), lambda out: _build(config, out), force)
    if built:
        log.info("tiny checkpoint built at %s", target)
    return target


def _build(config: WaltzConfig, out: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from waltz_ray.datasets import load_prompts

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


def encode_example(tokenizer: Any, example: SFTExample) -> tuple[list[int], int]:
    """Token ids of state + target + end-of-turn, and the index where the target starts (the loss starts there)."""
    state = protocol.render_chat(tokenizer, list(example.messages))
    state_ids = tokenizer(state, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(example.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return state_ids + target_ids, len(state_ids)


def supervised_finetune(
    model: Any,
    tokenizer: Any,
    examples: list[SFTExample],
    steps: int,
    seed: int,
    batch_size: int = SFT_BATCH,
    lr: float = SFT_LR,
    targets_only: bool = False,
) -> list[float]:
    """Plain next-token cross-entropy on the target tokens, AdamW with warmup and linear decay.

    ``targets_only`` applies the output layer to the target positions alone instead of the whole sequence: the same
    loss up to float rounding, and much cheaper when the vocabulary is large and the chat state long (SmolLM2:
    49,152 tokens, a 300-token review state, a 40-token verdict)."""
    import random

    import torch

    encoded = [encode_example(tokenizer, ex) for ex in examples]
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.05, (steps - s) / max(1, steps - warmup)))
    )
    model.train()
    losses: list[float] = []
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(len(encoded)), len(encoded))
        batch = [encoded[i] for i in order[:batch_size]]
        del order[:batch_size]
        input_ids, labels, attention = _collate(batch, tokenizer.pad_token_id)
        if targets_only:
            loss = _target_loss(model, input_ids, labels, attention)
        else:
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def _target_loss(model: Any, input_ids: Any, labels: Any, attention: Any) -> Any:
    """Mean cross-entropy of the target tokens, with the output layer applied only where a target is predicted."""
    import torch

    hidden = model.base_model(input_ids=input_ids, attention_mask=attention).last_hidden_state
    wanted = labels[:, 1:] != -100  # position t predicts token t + 1
    logits = model.get_output_embeddings()(hidden[:, :-1][wanted])
    return torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][wanted])


def _collate(batch: list[tuple[list[int], int]], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, start) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, start : len(ids)] = torch.tensor(ids[start:])
        attention[row, : len(ids)] = 1
    return input_ids, labels, attention
