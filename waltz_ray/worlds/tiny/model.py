"""Tiny Llama-architecture models (about 1-10M parameters) saved with ``save_pretrained``.

Everything downstream loads them by path, exactly as it would load Llama-3.1-8B-Instruct.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_llama_config(vocab_size: int, hidden_size: int, num_layers: int, token_ids: dict[str, int]) -> Any:
    """A LlamaConfig with head_dim 64 (a size vLLM's CPU kernels support) and tied embeddings."""
    from transformers import LlamaConfig

    heads = max(1, hidden_size // 64)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=int(hidden_size * 8 / 3) // 16 * 16,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=64,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=token_ids["bos"],
        eos_token_id=token_ids["eos"],
        pad_token_id=token_ids["pad"],
    )


def build_tiny_model(config: Any, seed: int) -> Any:
    """Randomly initialise a LlamaForCausalLM from ``config`` with a fixed seed (bit-identical across runs)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    return model


def save_model(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save weights, config and tokenizer together so the directory is a complete checkpoint."""
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
