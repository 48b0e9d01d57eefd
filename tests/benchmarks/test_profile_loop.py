"""benchmarks/profile_loop.py runs end to end in its reduced (seconds-scale) form."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_profile_loop_runs_reduced(tmp_path: Path) -> None:
    """The inline profile (per-stage table, cProfile entries, a stats file) and the Ray A/B of the learner-group
    scheduling in one invocation; the last stdout line is the median of the per-round sequential / concurrent
    loop-wall ratios."""
    out = tmp_path / "profile"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "profile_loop.py"),
            "--reduced",
            "--ab",
            "--top",
            "5",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    last = re.fullmatch(r"speedup=([0-9.]+)", lines[-1])
    assert last is not None, lines[-5:]
    assert (
        "cProfile, by cumulative time (top 5):" in proc.stdout and "cProfile, by internal time (top 5):" in proc.stdout
    )
    summary = json.loads((out / "profile.json").read_text())
    profile = summary["profile"]
    assert profile["runtime"] == "inline" and profile["steps"] == 2 and profile["profiled_s"] > 0
    assert {"feedback_generation", "feedback_update", "conversation_update", "step_wall"} <= set(
        profile["stage_means_s"]
    )
    assert (out / "profile_inline" / "train.prof").stat().st_size > 0
    ab = summary["ab"]
    assert ab["steps"] == 2 and ab["rounds"] == 1
    for name in ("sequential", "concurrent"):
        (run,) = ab["runs"][name]
        assert run["steps"] == 2 and run["wall_s"] > 0
        assert {"conversation_update", "feedback_update"} <= set(run["stage_means_s"])
    walls = ab["walls_s"]
    assert ab["speedup_totals"] == pytest.approx(walls["sequential"] / walls["concurrent"])
    assert float(last.group(1)) == pytest.approx(ab["speedup"], abs=1e-3)
    assert ab["speedup"] == pytest.approx(ab["paired_ratios"][0])  # one round: the median is its ratio
