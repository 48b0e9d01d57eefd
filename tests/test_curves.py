"""``waltz-ray curves RUN_DIR``: a PNG of a run's per-step metrics; clear errors for a missing or broken file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from waltz_ray.cli import main
from waltz_ray.curves import plot_curves, read_rows, series


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 0, "eval/asr": 0.5, "eval/orr": 0.25}]
    rows += [{"step": s, "stage": 1, "rollout/label_accuracy": s / 10, "feedback/reward_mean": s / 5} for s in (1, 2)]
    rows += [{"step": 3, "stage": 2, "rollout/asr": 0.125, "conversation/reward_mean": 0.5, "rollout/orr": None}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    return run


def test_series_skips_missing_and_null_values(tmp_path: Path) -> None:
    rows = read_rows(_run(tmp_path))
    assert series(rows, "rollout/label_accuracy") == ([1.0, 2.0], [0.1, 0.2])
    assert series(rows, "rollout/orr") == ([], [])
    assert series(rows, "eval/asr") == ([0.0], [0.5])


def test_cli_writes_a_png(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert main(["curves", str(run)]) == 0
    png = run / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    other = tmp_path / "elsewhere.png"
    assert plot_curves(run, other) == other and other.is_file()


def test_missing_and_broken_metrics_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["curves", str(tmp_path / "nothing")]) == 2
    assert "metrics.jsonl not found" in capsys.readouterr().err
    run = _run(tmp_path)
    with (run / "metrics.jsonl").open("a") as f:
        f.write("{not json\n")
    assert main(["curves", str(run)]) == 2
    assert "metrics.jsonl:6: not a JSON line" in capsys.readouterr().err
