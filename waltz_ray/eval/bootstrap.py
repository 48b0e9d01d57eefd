"""Bootstrap confidence intervals for episode metrics: resample prompts with replacement, recompute, take percentiles.

Stratified by prompt label, so every resample keeps the set's harmful/benign counts (ASR and ORR keep their n).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")

Interval = tuple[float, float]


def bootstrap_distribution(
    items: Sequence[T],
    statistic: Callable[[Sequence[T]], Mapping[str, float | None]],
    n_resamples: int,
    seed: int,
    strata: Callable[[T], str] | None = None,
) -> dict[str, list[float]]:
    """``statistic`` on ``n_resamples`` resamples of ``items`` (drawn with replacement within each stratum).

    Returns, per key the statistic reports, its value on each resample in order (None values are left out); the
    draws depend only on ``seed``, the strata sizes and ``n_resamples``, so two systems evaluated on the same prompts
    get the same resampled prompt sets (paired intervals).
    """
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0 (got {n_resamples})")
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(strata(item) if strata else "", []).append(item)
    rng = random.Random(f"waltz-bootstrap:{seed}")
    out: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        resample = [g[rng.randrange(len(g))] for _, g in sorted(groups.items()) for _ in g]
        for key, value in statistic(resample).items():
            if value is not None:
                out.setdefault(key, []).append(float(value))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def percentile_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """The central ``level`` interval of a bootstrap distribution (percentile method)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1) (got {level})")
    tail = (1.0 - level) / 2.0
    return percentile(values, tail), percentile(values, 1.0 - tail)


def mean_distribution(distributions: Sequence[Sequence[float]]) -> list[float]:
    """Per resample, the mean over several sets' distributions (independent resamples of each set): the bootstrap
    distribution of a metric averaged over datasets. Sets without values are left out."""
    present = [d for d in distributions if d]
    if not present:
        return []
    n = min(len(d) for d in present)
    return [sum(d[i] for d in present) / len(present) for i in range(n)]
