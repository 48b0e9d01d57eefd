"""Hugging Face ``generate`` behind the Generator interface: batched, left-padded, returning token logprobs.

The CPU-friendly engine; in the inline runtime it shares its model object with the learner, so no weight copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from waltz_ray.core.protocol import render_chat
from waltz_ray.types import Completion, GenerationParams, Message, context_overflow


def load_tokenizer(path: str) -> Any:
    """The tokenizer by path or hub id, left-padded for batched generation, with a pad token (EOS if it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(path: str, dtype: str = "float32") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer by path or hub id (the same call for a tiny agent and an 8B model)."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    model.eval()
    return model, tokenizer


@dataclass(frozen=True)
class WeightKeys:
    """The keys a weight sync must bring for a model: its ``state_dict()`` keys, each with its shape, where a key
    tied to another (one tensor under several names, as a tied ``lm_head.weight`` is the embedding matrix) may be
    left out when another name of the same tensor is there. Built from the model itself or from a meta-device copy
    (``from_config``), whose keys and shapes are the same."""

    shapes: dict[str, tuple[int, ...]]
    tied: tuple[frozenset[str], ...]  # groups of keys naming one tensor

    @property
    def expected(self) -> frozenset[str]:
        return frozenset(self.shapes)

    @classmethod
    def of(cls, model: Any) -> WeightKeys:
        names: dict[int, set[str]] = {}
        for name, tensor in [
            *model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False),
        ]:
            names.setdefault(id(tensor), set()).add(name)
        shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
        tied = tuple(frozenset(group & shapes.keys()) for group in names.values() if len(group & shapes.keys()) > 1)
        return cls(shapes, tied)

    def mismatch(self, state: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
        """(missing, unexpected, wrong-shape) keys of ``state`` (name to tensor; a value without ``shape`` is not
        checked for it)."""
        given = set(state)
        covered = set(given)
        for group in self.tied:
            if group & given:
                covered |= group
        expected = self.expected
        shaped = [
            f"{name} {tuple(state[name].shape)} != {self.shapes[name]}"
            for name in sorted(given & expected)
            if hasattr(state[name], "shape") and tuple(state[name].shape) != self.shapes[name]
        ]
        return sorted(expected - covered), sorted(given - expected), shaped

    def check(self, state: Mapping[str, Any], what: str) -> None:
        """ValueError naming the missing, unexpected and wrong-shape keys, if any (call it before loading
        anything)."""
        missing, unexpected, shaped = self.mismatch(state)
        if missing or unexpected or shaped:
            raise ValueError(
                f"{what}: the state dict does not match the model's weights (missing {len(missing)}: "
                f"{_some(missing)}; unexpected {len(unexpected)}: {_some(unexpected)}; wrong shape {len(shaped)}: "
                f"{_some(shaped)}); nothing was loaded"
            )


def _some(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "") if keys else "none"


class HFGenerator:
    """Generates with a transformers model; ``policy_version`` is stamped on every completion.

    A chat whose rendered prompt does not fit ``max_model_len`` (default: the model's ``max_position_embeddings``;
    None there means no limit) is not generated: its completion comes back rejected (``Completion.error``), as the
    vLLM engine does, and the rest of the batch is generated as usual.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        policy_version: int = 0,
        max_batch_size: int = 64,
        max_model_len: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.policy_version = policy_version
        self.max_batch_size = max_batch_size
        config = getattr(model, "config", None)
        self.max_model_len: int | None = max_model_len or getattr(config, "max_position_embeddings", None)

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "float32", **kwargs: Any) -> HFGenerator:
        model, tokenizer = load_model_and_tokenizer(path, dtype)
        return cls(model, tokenizer, **kwargs)

    def load_state_dict(self, state: dict[str, Any], policy_version: int) -> None:
        """Weight sync entry point: take new weights, then advertise the new version.

        Every weight must arrive with its shape (a tied one under any of its names): a state dict with missing,
        unexpected or wrong-shape keys raises ``ValueError`` naming them before anything is loaded, and the version
        stays."""
        WeightKeys.of(self.model).check(state, f"weight sync to policy version {policy_version}")
        self.model.load_state_dict(state, strict=False)  # not strict only for tied names left out (checked above)
        self.policy_version = policy_version

    def generate(self, chats: Sequence[Sequence[Message]], params: GenerationParams) -> list[Completion]:
        texts = [render_chat(self.tokenizer, chat) for chat in chats]
        out: list[Completion | None] = [None] * len(texts)
        if texts:
            for i, ids in enumerate(self.tokenizer(texts, add_special_tokens=False)["input_ids"]):
                why = context_overflow(len(ids), self.max_model_len)
                if why is not None:
                    out[i] = Completion.rejection(tuple(ids), why, self.policy_version)
        kept = [i for i, c in enumerate(out) if c is None]
        for start in range(0, len(kept), self.max_batch_size):
            part = kept[start : start + self.max_batch_size]
            # a chunk's random stream starts at its first request's place (as vLLM seeds request i with seed + i)
            chunk = self._generate_batch([texts[i] for i in part], params.offset(part[0]))
            for i, completion in zip(part, chunk, strict=True):
                out[i] = completion
        return [c for c in out if c is not None]

    def _generate_batch(self, texts: list[str], params: GenerationParams) -> list[Completion]:
        import torch

        tok = self.tokenizer
        enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        sample = params.temperature > 0
        if params.seed is not None:
            torch.manual_seed(params.seed)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            result = self.model.generate(
                **enc,
                max_new_tokens=params.max_new_tokens,
                min_new_tokens=params.min_new_tokens or None,
                do_sample=sample,
                temperature=params.temperature if sample else None,
                top_p=params.top_p if sample else None,
                top_k=None,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        self.model.train(was_training)
        width = enc["input_ids"].shape[1]
        new_tokens = result.sequences[:, width:]
        logits = torch.stack(result.logits, dim=1).float()
        if sample:
            logits = logits / params.temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        return [
            self._completion(enc["input_ids"][i], enc["attention_mask"][i], new_tokens[i], logprobs[i])
            for i in range(len(texts))
        ]

    def _completion(self, prompt_ids: Any, prompt_mask: Any, tokens: Any, logprobs: Any) -> Completion:
        eos = self.tokenizer.eos_token_id
        ids = tokens.tolist()
        finish = "length"
        if eos in ids:
            ids = ids[: ids.index(eos) + 1]  # the end-of-turn token is part of the action: the policy learns to stop
            finish = "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(
            text=text,
            prompt_token_ids=tuple(prompt_ids[prompt_mask.bool()].tolist()),
            token_ids=tuple(ids),
            logprobs=tuple(logprobs[: len(ids)].tolist()),
            finish_reason=finish,
            policy_version=self.policy_version,
        )
