"""Batch checks shared by every judge: a judge call takes aligned prompts, responses and (optional) labels.

Mismatched lengths are a caller bug, so they raise; per-item problems become failure verdicts instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from waltz_ray.types import PromptLabel


def check_batch_sizes(
    prompts: Sequence[str], responses: Sequence[str], labels: Sequence[PromptLabel | None] | None
) -> None:
    """Raise ValueError unless prompts, responses and labels (when given) have the same length."""
    if len(prompts) != len(responses) or (labels is not None and len(labels) != len(responses)):
        n_labels = "-" if labels is None else str(len(labels))
        raise ValueError(
            f"judge batch sizes differ: {len(prompts)} prompts, {len(responses)} responses, {n_labels} labels"
        )
