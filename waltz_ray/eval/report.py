"""Writes an evaluation report three ways: report.json (everything), report.md (the paper's table and one table per
dataset) and pareto.png (ASR against ORR, one point per system, with its intervals).

Rates are fractions in the JSON and percentages with one decimal in the Markdown and the plot.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MISSING = "–"


def pct(value: float | None) -> str:
    """A rate as a percentage with one decimal ("–" when undefined)."""
    return MISSING if value is None or math.isnan(value) else f"{100.0 * value:.1f}"


def with_ci(value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return MISSING
    if not interval:
        return pct(value)
    return f"{pct(value)} [{pct(interval[0])}, {pct(interval[1])}]"


def ms(seconds: float | None) -> str:
    return MISSING if seconds is None else f"{1000.0 * seconds:.1f}"


def tokens(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


AVERAGE_COLUMNS = (
    "method",
    "ASR ↓",
    "ORR ↓",
    "FTR",
    "label F1",
    "added latency (ms/prompt)",
    "added tokens/prompt",
)
DATASET_COLUMNS = (
    "method",
    "ASR ↓",
    "ORR ↓",
    "FTR",
    "FTR harmful",
    "FTR benign",
    "feedback format",
    "label precision",
    "label recall",
    "label F1",
    "added latency (ms/prompt)",
    "added tokens/prompt",
    "safeguard blocked",
)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(columns: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    return [_row(list(columns)), _row(["---"] * len(columns)), *(_row(r) for r in rows)]


def average_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for system in report["systems"]:
        avg = report["average"].get(system["name"])
        if avg is None:
            continue
        rows.append(
            [
                system["label"],
                with_ci(avg["asr"], avg.get("asr_ci")),
                with_ci(avg["orr"], avg.get("orr_ci")),
                with_ci(avg["ftr"], avg.get("ftr_ci")),
                with_ci(avg["label_f1"], avg.get("label_f1_ci")),
                ms(avg["added_latency_s_per_prompt"]),
                tokens(avg["added_tokens_per_prompt"]),
            ]
        )
    return rows


def dataset_rows(report: dict[str, Any], dataset: str) -> list[list[str]]:
    rows = []
    for system in report["systems"]:
        entry = report["results"][dataset].get(system["name"])
        if entry is None:
            continue
        m, ci, cost = entry["metrics"], entry["ci"], entry["cost"]
        guard = entry.get("safeguard")
        rows.append(
            [
                system["label"],
                with_ci(m["asr"], ci.get("asr")),
                with_ci(m["orr"], ci.get("orr")),
                with_ci(m["ftr"], ci.get("ftr")),
                pct(m["ftr_harmful"]),
                pct(m["ftr_benign"]),
                pct(m["feedback_format_rate"]),
                pct(m["label_precision"]),
                pct(m["label_recall"]),
                with_ci(m["label_f1"], ci.get("label_f1")),
                ms(cost["added_latency_s_per_prompt"]),
                tokens(cost["added_tokens_per_prompt"]),
                pct(guard["blocked_rate"]) if guard else MISSING,
            ]
        )
    return rows


def markdown(report: dict[str, Any]) -> str:
    level = round(100 * report["bootstrap"]["level"])
    names = ", ".join(
        f"{d['name']} (n={d['n']}: {d['n_harmful']} harmful, {d['n_benign']} benign)" for d in report["datasets"]
    )
    lines = [
        "# waltz-ray evaluation",
        "",
        f"- datasets: {names}",
        f"- judge: `{report['judge']['kind']}`{_judge_model(report['judge'])}",
        f"- safeguard (systems with '+ safeguard'): {report.get('safeguard_description') or 'not used'}",
        f"- rates in percent; [{level}% bootstrap interval, {report['bootstrap']['n_resamples']} resamples of the "
        "prompts, stratified by label]; added latency and tokens are per prompt, for the feedback step (feedback "
        "and revision) or the safeguard, on this machine",
        "",
        "## Average over datasets (the paper's table)",
        "",
        *_table(AVERAGE_COLUMNS, average_rows(report)),
    ]
    for dataset in report["datasets"]:
        lines += ["", f"## {dataset['name']}", "", *_table(DATASET_COLUMNS, dataset_rows(report, dataset["name"]))]
    skipped = [s for s in report["systems"] if s["skipped"]]
    if skipped:
        lines += ["", "## Not evaluated", ""]
        lines += [f"- {s['label']}: {s['skipped']}" for s in skipped]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {k}: {v}" for k, v in report["notes"].items()]
    lines += ["", "![ASR against ORR](pareto.png)", ""]
    return "\n".join(lines)


MARKERS = ("o", "s", "^", "v", "D", "P", "*")


def _judge_model(judge: dict[str, Any]) -> str:
    model = judge.get("model") or judge.get("model_path")
    return f" ({model})" if judge["kind"] != "rule" and model else ""


def plot_pareto(report: dict[str, Any], path: str | Path) -> None:
    """ASR (x) against ORR (y), both averaged over datasets, one point per system with its intervals.

    Points are numbered in docs/method.md order; systems within 5 points of each other share one label ("3, 4, 7"), and
    the legend gives each system's name and (ASR, ORR)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    spots: dict[tuple[float, float], list[str]] = {}
    for index, system in enumerate(report["systems"]):
        avg = report["average"].get(system["name"])
        if avg is None or avg["asr"] is None or avg["orr"] is None:
            continue
        x, y = 100 * avg["asr"], 100 * avg["orr"]
        number = str(index + 1)
        size = 16 - 1.2 * index  # later systems drawn smaller, so coinciding markers stay visible
        ax.errorbar(
            x,
            y,
            xerr=_err(x, avg.get("asr_ci")),
            yerr=_err(y, avg.get("orr_ci")),
            fmt=MARKERS[index % 7],
            color=f"C{index}",
            ms=size,
            mfc="none" if index < 6 else f"C{index}",
            mew=1.8,
            capsize=3,
            alpha=0.9,
            label=f"{number}  {system['label']} ({pct(avg['asr'])}, {pct(avg['orr'])})",
        )
        near = next((spot for spot in spots if abs(spot[0] - x) < 5 and abs(spot[1] - y) < 5), (x, y))
        spots.setdefault(near, []).append(number)
    for (x, y), numbers in spots.items():
        ax.annotate(
            ", ".join(numbers), (x, y), textcoords="offset points", xytext=(9, 7), fontsize=9, fontweight="bold"
        )
    ax.set_xlabel("attack success rate, ASR (%) ↓")
    ax.set_ylabel("over-refusal rate, ORR (%) ↓")
    names = ", ".join(d["name"] for d in report["datasets"])
    ax.set_title(f"safety vs over-refusal: {names}; judge {report['judge']['kind']}", fontsize=9)
    ax.set_xlim(-5, 105)
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="system (ASR %, ORR %)",
        title_fontsize=7,
        borderaxespad=0.0,
    )
    level = round(100 * report["bootstrap"]["level"])
    fig.text(0.01, 0.01, f"bars: {level}% bootstrap intervals; lower left is better", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _err(center: float, interval: list[float] | None) -> list[list[float]] | None:
    if not interval:
        return None
    return [[max(0.0, center - 100 * interval[0])], [max(0.0, 100 * interval[1] - center)]]


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    plot_pareto(report, out / "pareto.png")
    return out
