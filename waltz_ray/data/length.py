"""Prompt length: the most prompt tokens for which every turn of an episode fits its agent's context, and filtering
prompts by it (the pure arithmetic; ``waltz_ray.factory.fit_prompts_to_context`` applies it with a run's tokenizers)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from waltz_ray.types import Prompt

log = logging.getLogger(__name__)

# Tokens allowed per text inserted into a chat state, for tokenization at its edges (the texts are counted alone).
BOUNDARY_SLACK_TOKENS = 2


def conversation_prompt_budget(
    max_model_len: int, overhead_tokens: int, response_tokens: int, feedback_tokens: int, revisions: int
) -> int:
    """Most prompt tokens for which the conversation agent's longest turn fits its context of ``max_model_len``.

    That turn is the last revision c_T (T = ``revisions``; c0 when 0): its state holds the prompt and T rounds of an
    answer (up to ``response_tokens``) and the feedback carried back (at most ``feedback_tokens``, the feedback
    turn's cap), and c_T itself generates up to ``response_tokens``. ``overhead_tokens``: everything else in that
    state (system prompt, chat template, revision template). Llama 3.1 at paper scale: 4096 - overhead - (1 + 1)
    x 1024 (T=1: c0 and f0 in the state) - 1024 (c1) = 1024 - overhead.
    """
    return max_model_len - overhead_tokens - revisions * (response_tokens + feedback_tokens) - response_tokens


def feedback_prompt_budget(
    max_model_len: int, overhead_tokens: int, response_tokens: int, feedback_tokens: int, revisions: int
) -> int | None:
    """Most prompt tokens for which the feedback agent's longest turn fits its context (None: no feedback turn).

    That turn is the review of c_{T-1}: its state holds the prompt, T answers and the T - 1 earlier feedbacks, and
    it generates up to ``feedback_tokens``. ``overhead_tokens``: system prompt, chat and feedback templates.
    """
    if revisions == 0:
        return None
    return max_model_len - overhead_tokens - revisions * (response_tokens + feedback_tokens)


def filter_by_length(
    prompts: Sequence[Prompt], count_tokens: Callable[[str], int], max_prompt_tokens: int, *, what: str = "prompts"
) -> tuple[list[Prompt], int]:
    """The prompts of at most ``max_prompt_tokens`` tokens (``count_tokens``), in order, and how many were dropped
    (logged as a warning when any were)."""
    kept = [p for p in prompts if count_tokens(p.text) <= max_prompt_tokens]
    dropped = len(prompts) - len(kept)
    if dropped:
        log.warning(
            "dropped %d of %d %s longer than %d tokens (they would not fit the context)",
            dropped,
            len(prompts),
            what,
            max_prompt_tokens,
        )
    return kept, dropped
