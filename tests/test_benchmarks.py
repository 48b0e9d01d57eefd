"""The benchmark scripts under benchmarks/ run end to end in their reduced (seconds-scale) form."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(360)
def test_overlap_benchmark_runs_reduced(tmp_path: Path) -> None:
    """Sync and async Ray runs in one invocation on a tiny model built on the fly; the last stdout line is the
    ratio of their wall times and the theoretical limit is printed before it."""
    out = tmp_path / "overlap"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "overlap.py"), "--reduced", "--out", str(out)],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    last = re.fullmatch(r"overlap_ratio=([0-9.]+(?:[eE][+-]?\d+)?)", lines[-1])
    assert last is not None, lines[-5:]
    assert float(last.group(1)) > 0
    limits = [m for m in (re.fullmatch(r"theoretical_limit=([0-9.]+)", line) for line in lines[:-1]) if m]
    assert len(limits) == 1, lines[-5:]
    assert float(limits[0].group(1)) >= 1.0
    summary = json.loads((out / "overlap.json").read_text())
    assert summary["steps"] == 2 and summary["prompts_per_step"] == 4
    assert summary["runs"]["sync"]["steps"] == summary["runs"]["async"]["steps"] == 2
    assert summary["runs"]["sync"]["max_staleness_seen"] == 0.0
    assert summary["overlap_ratio"] == pytest.approx(float(last.group(1)), abs=1e-3)
