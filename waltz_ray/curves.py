"""Training curves of a finished (or running) run: ``waltz-ray curves RUN_DIR`` writes ``RUN_DIR/curves.png``.

It reads only ``metrics.jsonl`` (one row per step, plus evaluation rows), so it works the same for the tiny world,
the SmolLM2 preset and a cluster run whose output folder was copied home.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (panel title, [(metric key, legend label)]) -- rates as fractions, plotted in percent.
PANELS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "feedback agent (sampled rollouts)",
        (
            ("rollout/feedback_format_rate", "format rate"),
            ("rollout/label_accuracy", "label accuracy"),
            ("rollout/ftr", "feedback trigger rate"),
        ),
    ),
    (
        "pair (sampled rollouts)",
        (
            ("rollout/asr", "ASR"),
            ("rollout/orr", "ORR"),
            ("rollout/conversation_asr", "first-answer ASR"),
            ("rollout/conversation_orr", "first-answer ORR"),
        ),
    ),
    (
        "evaluation (greedy, eval split)",
        (
            ("eval/asr", "ASR"),
            ("eval/orr", "ORR"),
            ("eval/ftr", "FTR"),
            ("eval/feedback_format_rate", "format rate"),
            ("eval/label_accuracy", "label accuracy"),
        ),
    ),
)
REWARDS = (("conversation/reward_mean", "conversation reward"), ("feedback/reward_mean", "feedback reward"))


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a waltz-ray train output folder?")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from exc
    return rows


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key``, skipping rows without it or with a non-finite value."""
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and value == value and "step" in row:
            steps.append(float(row["step"]))
            values.append(float(value))
    return steps, values


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Plot the run's per-step metrics (four panels, stage boundary marked) into ``out`` (default curves.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    rows = read_rows(run)
    target = Path(out) if out is not None else run / "curves.png"
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    stage2 = [row["step"] for row in rows if row.get("stage") == 2]
    for ax, (title, keys) in zip(axes.flat, (*PANELS, ("rewards", REWARDS)), strict=True):
        scale = 1.0 if title == "rewards" else 100.0
        for key, label in keys:
            steps, values = series(rows, key)
            if steps:
                ax.plot(steps, [scale * v for v in values], marker="o", markersize=3, label=label)
        if stage2:
            ax.axvline(min(stage2) - 0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step (dashed: stage 2 starts)")
        ax.set_ylabel("mean reward" if scale == 1.0 else "%")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(f"{run.name}: per-step metrics from metrics.jsonl", fontsize=11)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
