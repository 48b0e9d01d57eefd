"""``waltz-ray judge-agreement``: accuracy and Cohen's kappa of a judge against human labels (SPEC §7).

Reads a human-labelled (prompt, response, verdict) file in JailbreakBench's judge-comparison layout (columns
``prompt``, ``target_response``, ``human_majority``; optional ``goal`` and reference classifiers ``*_cf``), runs the
judge once over every row and compares its unsafe label; the shipped classifiers are scored the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from waltz_ray.data.loaders import LabelledResponse, load_judge_comparison, load_prompts
from waltz_ray.engines.base import Judge
from waltz_ray.engines.judges.agreement import agreement_from_pairs
from waltz_ray.types import PromptLabel


def row_labels(
    rows: Sequence[LabelledResponse], label: PromptLabel | None, label_from: str | Path | None
) -> list[PromptLabel | None]:
    """Each row's prompt label for judges that need one (the rule judge): the label of the prompt in ``label_from``
    whose text equals the row's goal (else its prompt), otherwise ``label``."""
    known: dict[str, PromptLabel] = {}
    if label_from is not None:
        known = {p.text.strip(): p.label for p in load_prompts(label_from)}
    return [known.get((row.goal or row.prompt).strip(), label) if known else label for row in rows]


def agreement(
    judge: Judge,
    path: str | Path,
    *,
    encoding: str | None = None,
    label: PromptLabel | None = None,
    label_from: str | Path | None = None,
) -> dict[str, Any]:
    """The judge's agreement with the human majority over all rows and over the rows of each prompt label, each
    beside the shipped reference classifiers' agreement on the same rows."""
    rows = load_judge_comparison(path, encoding=encoding)
    labels = row_labels(rows, label, label_from)
    verdicts = judge.judge([r.prompt for r in rows], [r.response for r in rows], labels)
    subsets = {"all": list(range(len(rows)))}
    for name in sorted({lb for lb in labels if lb is not None}):
        subsets[f"label={name}"] = [i for i, lb in enumerate(labels) if lb == name]
    out: dict[str, Any] = {"file": str(path), "n_rows": len(rows), "subsets": {}}
    for subset, keep in subsets.items():
        pairs = [(bool(verdicts[i].unsafe), rows[i].unsafe) for i in keep if verdicts[i].ok]
        entry = {"judge": asdict(agreement_from_pairs(pairs, n_failed=len(keep) - len(pairs)))}
        for column in sorted({c for i in keep for c in rows[i].judges}):
            reference = [(rows[i].judges[column], rows[i].unsafe) for i in keep if column in rows[i].judges]
            entry[column] = asdict(agreement_from_pairs(reference))
        out["subsets"][subset] = entry
    failures = [v.error for v in verdicts if not v.ok]
    if failures:
        out["first_failure"] = failures[0]
    return out
