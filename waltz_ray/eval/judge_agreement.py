"""``waltz-ray judge-agreement``: accuracy and Cohen's kappa of a judge against human labels.

Two tasks. ``unsafe`` (default) is described below. ``refusal`` reads any CSV/JSONL file with a response column and
a human refusal label (compliance / refusal / partial) and scores ``detect_refusal`` and the prefix-list baseline:
accuracy, kappa, per-class precision and recall, the confusion table and the disagreements (``refusal_agreement``).

Reads a human-labelled (prompt, response, verdict) file in JailbreakBench's judge-comparison layout (columns
``prompt``, ``target_response``, ``human_majority``; optional ``goal`` and reference classifiers ``*_cf``), runs the
judge once over every row and compares its unsafe label; the shipped classifiers are scored the same way.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from waltz_ray.data.loaders import LabelledResponse, load_judge_comparison, load_prompts
from waltz_ray.engines.base import Judge
from waltz_ray.engines.judges.agreement import agreement_from_pairs, classification_report
from waltz_ray.engines.judges.refusal import detect_refusal, prefix_baseline
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
        named = [("unsafe" if j else "safe", "unsafe" if h else "safe") for j, h in pairs]
        entry["judge_classes"] = classification_report(named, ["unsafe", "safe"])
        for column in sorted({c for i in keep for c in rows[i].judges}):
            reference = [(rows[i].judges[column], rows[i].unsafe) for i in keep if column in rows[i].judges]
            entry[column] = asdict(agreement_from_pairs(reference))
        out["subsets"][subset] = entry
    out["disagreements"] = [
        {
            "row": i,
            "id": rows[i].item_id,
            "label": labels[i],
            "human_unsafe": rows[i].unsafe,
            "judge_unsafe": bool(verdicts[i].unsafe),
            "response": rows[i].response[:300],
        }
        for i in range(len(rows))
        if verdicts[i].ok and bool(verdicts[i].unsafe) != rows[i].unsafe
    ]
    failures = [v.error for v in verdicts if not v.ok]
    if failures:
        out["first_failure"] = failures[0]
    return out


# --- refusal agreement on any labelled file ---------------------------------------------------------------------

KINDS = ("compliance", "refusal", "partial")


def parse_kind(value: str) -> str:
    """A human refusal label as "compliance", "refusal" or "partial". Accepts the XSTest-style names
    ("1_full_compliance", "2_full_refusal", "3_partial_refusal"), plain words, and 0/1 or true/false (1 = refused)."""
    text = str(value).strip().lower()
    if "partial" in text:
        return "partial"
    if "refus" in text or text in ("1", "true", "yes", "refused"):
        return "refusal"
    if "compl" in text or "answer" in text or text in ("0", "false", "no"):
        return "compliance"
    raise ValueError(f"cannot read {value!r} as a refusal label (compliance / refusal / partial, or 0/1)")


def read_rows(path: str | Path, encoding: str | None = None) -> list[dict[str, str]]:
    """Rows of a CSV or JSONL file as dicts of strings (JSONL when the name ends in .jsonl or .json)."""
    path = Path(path)
    if encoding is None:
        encoding = "mac_roman" if "mac_roman" in path.name else "utf-8"
    with path.open(encoding=encoding, newline="") as f:
        if path.suffix in (".jsonl", ".json"):
            return [{k: "" if v is None else str(v) for k, v in json.loads(line).items()} for line in f if line.strip()]
        return list(csv.DictReader(f))


def refusal_agreement(
    path: str | Path,
    *,
    text_column: str = "response",
    label_column: str = "label",
    prompt_column: str | None = "prompt",
    split_column: str | None = None,
    split: str | None = None,
    encoding: str | None = None,
    show: int = 20,
) -> dict[str, Any]:
    """``detect_refusal`` (and the XSTest prefix-list baseline) against the human refusal labels of any file.

    Binary agreement counts a partial refusal as a refusal (the XSTest rule); the three-way table compares
    ``RefusalMatch.kind`` with the label. ``disagreements`` lists every row the detector gets wrong (binary), with
    the rule that decided; the first ``show`` are also in ``disagreements_shown``."""
    rows = read_rows(path, encoding)
    if split_column and split is not None:
        rows = [r for r in rows if r.get(split_column) == split]
    missing = [c for c in (text_column, label_column) if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; columns are {sorted(rows[0])}")
    gold = [parse_kind(r[label_column]) for r in rows]
    matches = [detect_refusal(r[text_column]) for r in rows]
    baseline = [prefix_baseline(r[text_column]) for r in rows]
    binary_gold = ["refusal" if g != "compliance" else "compliance" for g in gold]
    binary = [("refusal" if m.refused else "compliance", g) for m, g in zip(matches, binary_gold, strict=True)]
    prefix = [("refusal" if b else "compliance", g) for b, g in zip(baseline, binary_gold, strict=True)]
    disagreements = [
        {
            "row": i,
            "id": rows[i].get("id", str(i)),
            "label": gold[i],
            "detector": matches[i].kind,
            "rule": matches[i].rule,
            "prompt": (rows[i].get(prompt_column or "", "") or "")[:200],
            "text": rows[i][text_column][:400],
        }
        for i, (p, g) in enumerate(binary)
        if p != g
    ]
    return {
        "file": str(path),
        "split": split,
        "n": len(rows),
        "refusals": sum(1 for g in binary_gold if g == "refusal"),
        "binary": classification_report(binary, ["refusal", "compliance"]),
        "binary_prefix_baseline": classification_report(prefix, ["refusal", "compliance"]),
        "kind": classification_report([(m.kind, g) for m, g in zip(matches, gold, strict=True)], KINDS),
        "disagreements_shown": disagreements[:show],
        "disagreements": disagreements,
    }


def format_report(result: dict[str, Any]) -> str:
    """A short plain-text summary of ``refusal_agreement``: the tables docs/judge.md quotes."""
    lines = [f"{result['file']} (split={result['split']}): n={result['n']}, refusals={result['refusals']}"]
    for key, title in (("binary", "detect_refusal"), ("binary_prefix_baseline", "prefix-list baseline")):
        rep = result[key]
        ref = rep["per_class"]["refusal"]
        lines.append(
            f"  {title:22s} accuracy={rep['accuracy']:.3f} kappa={rep['cohen_kappa']:.3f} "
            f"refusal precision={ref['precision']:.3f} recall={ref['recall']:.3f}"
        )
    kind = result["kind"]
    lines.append(
        f"  three-way (compliance/refusal/partial) accuracy={kind['accuracy']:.3f} kappa={kind['cohen_kappa']:.3f}"
    )
    lines.append("  confusion (rows = human, columns = detector): " + ", ".join(KINDS))
    for g in KINDS:
        lines.append(f"    {g:10s} " + " ".join(f"{kind['confusion'][g][p]:5d}" for p in KINDS))
    for c in KINDS:
        pc = kind["per_class"][c]
        lines.append(f"    {c:10s} precision={pc['precision']:.3f} recall={pc['recall']:.3f} support={pc['support']}")
    lines.append(f"  disagreements (binary): {len(result['disagreements'])}")
    for d in result["disagreements_shown"]:
        text = d["text"][:160].replace("\n", " ")
        lines.append(f"    [{d['id']}] human={d['label']} detector={d['detector']} ({d['rule']}): {text}")
    return "\n".join(lines)
