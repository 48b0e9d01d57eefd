"""Supervised fine-tuning shared by the embedded worlds' warm starts (tiny and SmolLM2): next-token cross-entropy on
the assistant target of each example."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from waltz_ray.core import protocol

SFT_BATCH = 32
SFT_LR = 1e-3


@dataclass(frozen=True)
class SFTExample:
    """One supervised example: a chat state and the assistant text to learn after it."""

    messages: tuple[dict[str, str], ...]
    target: str


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
