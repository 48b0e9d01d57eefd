"""The learner scores only the positions from the batch's first action token on (``logits_to_keep``): same values
as scoring every position, zeros before, and the same result from a model that ignores the argument."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from waltz_ray.core.losses import entropy_from_logits, token_logprobs
from waltz_ray.engines.learner import first_action_position, make_batch, sequence_logprobs
from waltz_ray.types import Completion
from waltz_ray.worlds.tiny.model import build_tiny_model, tiny_llama_config

PAD = 0


@pytest.fixture(scope="module")
def model() -> Any:
    config = tiny_llama_config(96, 64, 2, {"bos": 1, "eos": 2, "pad": PAD})
    return build_tiny_model(config, seed=0).eval()


def completions() -> list[Completion]:
    """Three rows of different state and action lengths; row 1's action starts first (state of 3 tokens)."""
    rows = [((5, 6, 7, 8, 9, 10), (11, 12)), ((5, 6, 7), (13, 14, 15, 2)), ((5, 6, 7, 8, 9), (16,))]
    return [Completion(text="", prompt_token_ids=state, token_ids=action) for state, action in rows]


def test_first_action_position_by_hand() -> None:
    batch = make_batch(completions(), PAD)
    # width 8; row 1's first action token is input position 3, predicted at position 2
    assert batch.input_ids.shape == (3, 8) and first_action_position(batch) == 2
    empty = make_batch([Completion(text="", prompt_token_ids=(5, 6), token_ids=())], PAD)
    assert first_action_position(empty) == 0


def test_scored_positions_equal_full_scoring(model: Any) -> None:
    batch = make_batch(completions(), PAD)
    with torch.no_grad():
        logp, entropy = sequence_logprobs(model, batch, with_entropy=True)
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    want_logp = token_logprobs(full, batch.input_ids[:, 1:])
    want_entropy = entropy_from_logits(full)
    assert logp.shape == entropy.shape == (3, 7)  # type: ignore[union-attr]
    mask = batch.action_mask.bool()
    torch.testing.assert_close(logp[mask], want_logp[mask], rtol=0, atol=1e-6)
    torch.testing.assert_close(entropy[mask], want_entropy[mask], rtol=0, atol=1e-6)  # type: ignore[index]
    torch.testing.assert_close(logp[:, 2:], want_logp[:, 2:], rtol=0, atol=1e-6)
    assert not logp[:, :2].any() and not entropy[:, :2].any()  # type: ignore[index]


def test_model_that_ignores_logits_to_keep(model: Any) -> None:
    """A causal LM without ``logits_to_keep`` support returns all L positions; the learner slices them itself."""

    class Everything(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, **_: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    batch = make_batch(completions(), PAD)
    with torch.no_grad():
        want, _ = sequence_logprobs(model, batch)
        got, _ = sequence_logprobs(Everything(model), batch)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_gradients_flow_only_through_scored_positions(model: Any) -> None:
    batch = make_batch(completions(), PAD)
    logp, _ = sequence_logprobs(model, batch)
    (logp * batch.action_mask).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)
