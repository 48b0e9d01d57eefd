"""Judge-versus-human agreement on the unsafe label: accuracy, Cohen's kappa and the confusion counts.

The judge is the single source of truth, so measure it against human labels before trusting a metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from waltz_ray.engines.base import Judge
from waltz_ray.types import PromptLabel


@dataclass(frozen=True)
class AgreementReport:
    """Agreement on ``unsafe`` over the ``n`` items the judge scored; ``n_failed`` failed verdicts are excluded.

    Positive = unsafe. ``accuracy`` and ``cohen_kappa`` are NaN when undefined (no scored items, or both raters
    constant so that chance agreement is 1).
    """

    n: int
    n_failed: int
    accuracy: float
    cohen_kappa: float
    tp: int
    fp: int
    tn: int
    fn: int


def judge_agreement(
    judge: Judge,
    items: Sequence[tuple[str, str, bool]],
    labels: Sequence[PromptLabel | None] | None = None,
) -> AgreementReport:
    """Run ``judge`` once over (prompt, response, human_unsafe) items and compare its unsafe label to the human one."""
    verdicts = judge.judge([p for p, _, _ in items], [r for _, r, _ in items], labels)
    pairs = [(bool(v.unsafe), human) for v, (_, _, human) in zip(verdicts, items, strict=True) if v.ok]
    return agreement_from_pairs(pairs, n_failed=len(items) - len(pairs))


def agreement_from_pairs(pairs: Sequence[tuple[bool, bool]], n_failed: int = 0) -> AgreementReport:
    """The report for (judge_unsafe, human_unsafe) pairs."""
    tp = sum(1 for j, h in pairs if j and h)
    fp = sum(1 for j, h in pairs if j and not h)
    tn = sum(1 for j, h in pairs if not j and not h)
    fn = sum(1 for j, h in pairs if not j and h)
    return AgreementReport(
        n=len(pairs),
        n_failed=n_failed,
        accuracy=(tp + tn) / len(pairs) if pairs else math.nan,
        cohen_kappa=cohen_kappa(tp, fp, tn, fn),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )


def cohen_kappa(tp: int, fp: int, tn: int, fn: int) -> float:
    """kappa = (p_o - p_e) / (1 - p_e) for a 2x2 table; p_e from each rater's marginal positive rate."""
    n = tp + fp + tn + fn
    if n == 0:
        return math.nan
    observed = (tp + tn) / n
    chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / (n * n)
    if chance == 1.0:
        return math.nan
    return (observed - chance) / (1.0 - chance)


def classification_report(pairs: Sequence[tuple[str, str]], classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Agreement of (predicted, gold) class pairs: accuracy, Cohen's kappa (multi-class), per-class precision,
    recall and support, and the confusion table ``confusion[gold][predicted]``. NaN where undefined."""
    names = list(classes) if classes is not None else sorted({c for pair in pairs for c in pair})
    confusion = {g: {p: 0 for p in names} for g in names}
    for predicted, gold in pairs:
        confusion.setdefault(gold, {p: 0 for p in names}).setdefault(predicted, 0)
        confusion[gold][predicted] += 1
    n = len(pairs)
    observed = sum(1 for p, g in pairs if p == g) / n if n else math.nan
    pred_totals = {c: sum(1 for p, _ in pairs if p == c) for c in names}
    gold_totals = {c: sum(1 for _, g in pairs if g == c) for c in names}
    chance = sum(pred_totals[c] * gold_totals[c] for c in names) / (n * n) if n else math.nan
    kappa = math.nan if not n or chance == 1.0 else (observed - chance) / (1.0 - chance)
    per_class = {}
    for c in names:
        hit = confusion.get(c, {}).get(c, 0)
        per_class[c] = {
            "precision": hit / pred_totals[c] if pred_totals[c] else math.nan,
            "recall": hit / gold_totals[c] if gold_totals[c] else math.nan,
            "support": gold_totals[c],
            "predicted": pred_totals[c],
        }
    return {"n": n, "accuracy": observed, "cohen_kappa": kappa, "per_class": per_class, "confusion": confusion}
