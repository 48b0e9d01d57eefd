"""The benchmark scripts under benchmarks/ run end to end in their reduced (seconds-scale) form."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_reduced(script: str, out: Path, timeout_s: float = 300, **env: str) -> list[str]:
    """Run ``benchmarks/<script> --reduced --out <out>`` (extra environment variables from ``env``); its non-empty
    stdout lines, after checking that it exited 0."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--reduced", "--out", str(out)],
        cwd=ROOT,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_overlap_benchmark_runs_reduced(tmp_path: Path) -> None:
    """Two rounds of sync and async Ray runs (order alternating) in one invocation on a tiny model built on the
    fly, every turn forced to full length: both modes generate the same tokens, the load is recorded, the last
    stdout line is the median of the rounds' wall-time ratios and the theoretical limit is printed before it."""
    out = tmp_path / "overlap"
    lines = run_reduced("overlap.py", out, timeout_s=840)  # four Ray runs, each starting its pools
    last = re.fullmatch(r"overlap_ratio=([0-9.]+(?:[eE][+-]?\d+)?)", lines[-1])
    assert last is not None, lines[-5:]
    assert float(last.group(1)) > 0
    limits = [m for m in (re.fullmatch(r"theoretical_limit=([0-9.]+)", line) for line in lines[:-1]) if m]
    assert len(limits) == 1, lines[-5:]
    assert float(limits[0].group(1)) >= 1.0
    assert sum(line.startswith("round_ratio=") for line in lines) == 2
    assert any(re.fullmatch(r"load_average=[0-9.]+\.\.[0-9.]+ .* cpus=\d+", line) for line in lines), lines[-8:]
    summary = json.loads((out / "overlap.json").read_text())
    assert summary["steps"] == 2 and summary["prompts_per_step"] == 4 and summary["rounds"] == 2
    assert summary["forced_lengths"] and summary["min_new_tokens"] == summary["max_new_tokens"]
    rounds = summary["per_round"]
    assert [r["order"] for r in rounds] == [["sync", "async"], ["async", "sync"]]
    # forced lengths: every c0 and feedback turn is full length (a revision, if the feedback asks for one, adds a
    # full-length turn too), and the synchronous runs, same seed and weights, generated the same tokens
    floor = 2 * 4 * sum(summary["max_new_tokens"].values())
    assert all(r["runs"][mode]["total_tokens"] >= floor for r in rounds for mode in ("sync", "async")), rounds
    assert len({r["runs"]["sync"]["total_tokens"] for r in rounds}) == 1, rounds
    for r in rounds:
        sync = r["runs"]["sync"]
        assert sync["steps"] == r["runs"]["async"]["steps"] == 2
        assert sync["max_staleness_seen"] == 0.0
        assert r["ratio"] == pytest.approx(sync["wall_s"] / r["runs"]["async"]["wall_s"])
        assert all(len(r["runs"][m]["load_before"]) == 3 for m in ("sync", "async"))
        # the two sides are disjoint parts of the synchronous loop: together they cannot exceed its wall time
        assert 0 < r["generation_side_s"] + r["learner_side_s"] <= sync["wall_s"] * 1.001, r
    assert summary["overlap_ratio"] == pytest.approx(float(last.group(1)), abs=1e-3)
    assert summary["overlap_ratio"] == pytest.approx(
        sorted(summary["round_ratios"])[0] / 2 + sorted(summary["round_ratios"])[1] / 2
    )


def _fake_run(run: Path, before: float, after: float) -> None:
    """A finished run: 6 stage-1 steps (label accuracy 0.1 .. 0.6, an evaluation at step 6), 1 stage-2 step."""
    run.mkdir(parents=True)
    keys = ("asr", "orr", "ftr", "label_accuracy", "feedback_format_rate")
    (run / "eval_initial.json").write_text(json.dumps({k: before for k in keys}))
    (run / "eval_final.json").write_text(json.dumps({k: after for k in keys}))
    rows: list[dict[str, float]] = [{"step": 0, "eval/feedback_format_rate": 0.5}]
    rows += [{"step": s, "stage": 1, "rollout/label_accuracy": s / 10} for s in range(1, 7)]
    rows[-1]["eval/feedback_format_rate"] = 0.96
    rows.append({"step": 7, "stage": 2, "rollout/label_accuracy": 0.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_seed_table_reads_finished_runs(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import seeds
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    _fake_run(tmp_path / "seed0", 1.0, 0.25)
    _fake_run(tmp_path / "seed1", 0.5, 0.75)
    one = seeds.run_summary(tmp_path / "seed0")
    assert one["stage1_steps"] == 6 and one["format_after_stage1"] == 0.96
    # first five stage-1 steps 0.1..0.5 (mean 0.3), last five 0.2..0.6 (mean 0.4); stage 2 is not counted
    assert one["rollout_label_accuracy_first5"] == pytest.approx(0.3)
    assert one["rollout_label_accuracy_last5"] == pytest.approx(0.4)
    text = seeds.table({"0": one, "1": seeds.run_summary(tmp_path / "seed1")})
    lines = text.splitlines()
    assert lines[2].startswith("| 0 | 1.000 → 0.250 |") and "| 0.960 | 0.300 → 0.400 |" in lines[2]
    assert lines[-1].startswith("| final mean [min, max] | 0.500 [0.250, 0.750] |")
    (tmp_path / "seed1" / "eval_final.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing eval_final\.json"):
        seeds.run_summary(tmp_path / "seed1")


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_generation_benchmark_runs_reduced(tmp_path: Path) -> None:
    """HF and vLLM reload the same weights and generate the same batch at a forced length in one invocation;
    start-up and reload are timed, and the last stdout line is the ratio of their step times (reload + generate)."""
    pytest.importorskip("transformers")
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (pip install 'waltz-ray[cpu]')")
    out = tmp_path / "generation"
    lines = run_reduced("generation.py", out, OMP_NUM_THREADS="2")
    last = re.fullmatch(r"vllm_over_hf=([0-9.]+(?:[eE][+-]?\d+)?)", lines[-1])
    assert last is not None, lines[-5:]
    assert {m.group(1) for m in (re.fullmatch(r"startup_s_(\w+)=[0-9.]+", line) for line in lines) if m} == {
        "hf",
        "vllm",
    }
    summary = json.loads((out / "generation.json").read_text())
    assert (summary["batch"], summary["rounds"], summary["lengths"], summary["threads"]) == (8, 1, [8], [1])
    assert summary["ratio_setting"] == {"threads": 1, "tokens": 8}
    assert all(summary["startup_s"][e] > 0 for e in ("hf", "vllm"))
    for engine in ("hf", "vllm"):
        m = summary["medians"][f"{engine}/threads1/tokens8"]
        assert m["tokens"] == 8 * 8  # forced length: every completion is exactly 8 tokens
        assert m["reload_s"] > 0 and m["generate_s"] > 0
        assert m["step_s"] == pytest.approx(m["reload_s"] + m["generate_s"])
    hf, vllm = summary["medians"]["hf/threads1/tokens8"], summary["medians"]["vllm/threads1/tokens8"]
    assert summary["vllm_over_hf"] == pytest.approx(hf["step_s"] / vllm["step_s"])
    assert float(last.group(1)) == pytest.approx(summary["vllm_over_hf"], abs=1e-3)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(360)
def test_scaling_benchmark_runs_reduced(tmp_path: Path) -> None:
    """The real queue, producer and proxies driven by sleeping actors: staleness stays within max_staleness, no
    batch is dropped, utilisations are fractions, and no run beats the cost model (sleeps are lower bounds)."""
    out = tmp_path / "scaling"
    lines = run_reduced("scaling.py", out)
    last = re.fullmatch(r"max_utilisation=([0-9.]+)", lines[-1])
    assert last is not None, lines[-5:]
    summary = json.loads((out / "scaling.json").read_text())
    rows = summary["rows"]
    assert [(r["gen_per_pool"], r["max_staleness"]) for r in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for row in rows:
        assert row["dropped_stale"] == 0
        assert max(row["max_lag"].values()) <= row["max_staleness"]
        for key in ("gen_utilisation", "learner_utilisation", "learner_side_busy"):
            assert 0 < row[key] <= 1.0 + 1e-6, (key, row)
        gen, learn = row["analytic_gen_side_s"], row["analytic_learner_side_s"]
        floor = gen + learn if row["max_staleness"] == 0 else max(gen, learn)
        assert row["model_s_per_step"] >= 0.98 * floor and row["over_bound"] >= 0.98, row
    assert {max(r["max_lag"].values()) for r in rows if r["max_staleness"] == 0} == {0}
    largest = [r["learner_utilisation"] for r in rows if r["gen_per_pool"] == 2]
    assert float(last.group(1)) == pytest.approx(max(largest), abs=1e-3)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_peer_trl_benchmark_runs_reduced(tmp_path: Path) -> None:
    """This project's shipped (asynchronous Ray) run and TRL's GRPOTrainer train the same tiny agent, each in a
    process of its own while nothing else of the benchmark computes: both made the same optimizer steps on the same
    completions of exactly max_new_tokens tokens, set-up, loop and steady state are timed from the marks, and the
    last two stdout lines are the end-to-end and steady-state ratios (ours / TRL)."""
    pytest.importorskip("trl", reason="TRL is not installed (pip install --no-deps trl==1.16.0: the 'bench' extra)")
    out = tmp_path / "peer_trl"
    lines = run_reduced("peer_trl.py", out, timeout_s=840)  # two processes, one starting Ray and its pools
    last = re.fullmatch(r"ours_over_trl=([0-9.]+(?:[eE][+-]?\d+)?)", lines[-1])
    end_to_end = re.fullmatch(r"ours_over_trl_end_to_end=([0-9.]+(?:[eE][+-]?\d+)?)", lines[-2])
    assert last is not None and end_to_end is not None, lines[-5:]
    assert any(re.fullmatch(r"load_average=[0-9. ]+ cpus=\d+", line) for line in lines), lines[:5]
    assert sum(line.startswith("round 1 (ours_ray trl): ours_over_trl=") for line in lines) == 1, lines
    summary = json.loads((out / "peer_trl.json").read_text())
    w = summary["workload"]
    steps, episodes = w["steps"], w["steps"] * w["prompts_per_step"] * w["num_generations"]
    assert (steps, episodes, w["max_new_tokens"]) == (3, 24, 8)
    assert summary["rows"] == ["ours_ray", "trl"] and len(summary["rounds"]) == 1
    runs = summary["rounds"][0]["runs"]
    assert set(runs) == {"ours_ray", "trl"}
    for name, run in runs.items():
        assert run["optimizer_steps"] == steps and run["steps_logged"] == steps, name
        assert run["episodes"] == episodes and run["tokens"] == episodes * w["max_new_tokens"], name
        assert len(run["step_s"]) == steps and run["loop_s"] == pytest.approx(sum(run["step_s"])), name
        assert run["loop_s"] == pytest.approx(run["first_step_s"] + run["steady_s"]), name
        assert run["setup_s"] == pytest.approx(sum(run["setup_phases_s"].values())), name
        assert run["end_to_end_s"] == pytest.approx(run["setup_s"] + run["loop_s"]), name
        assert 0.0 <= run["reward_first"] <= 1.0 and 0.0 <= run["reward_last"] <= 1.0, name
    assert "ray_init_s" in runs["ours_ray"]["setup_phases_s"]
    # the shipped asynchronous default: learned one version late at most, the rollout overlapping the update
    assert runs["ours_ray"]["stage_totals_s"].get("rollout_overlapped", 0.0) > 0.0
    ours, trl = runs["ours_ray"], runs["trl"]
    assert summary["ours_over_trl"] == pytest.approx(ours["steady_episodes_per_s"] / trl["steady_episodes_per_s"])
    assert summary["ours_over_trl_end_to_end"] == pytest.approx(trl["end_to_end_s"] / ours["end_to_end_s"])
    assert float(last.group(1)) == pytest.approx(summary["ours_over_trl"], abs=1e-3)
    assert float(end_to_end.group(1)) == pytest.approx(summary["ours_over_trl_end_to_end"], abs=1e-3)


def test_group_estimators_group_each_prompts_samples() -> None:
    """The peer benchmark's GRPO is group-relative on both sides: ``step_batch`` repeats each prompt
    samples_per_prompt times in a row, and the trainer groups episode ``<launch>-<i>`` by ``i // group_size``."""
    from waltz_ray.trainer.batches import prompt_groups

    ids = ["7-0", "7-1", "7-2", "7-3", "7-5", "7-4"]  # a masked sample may be missing; order does not matter
    assert prompt_groups(ids, 2) == [0, 0, 1, 1, 2, 2]
    assert prompt_groups(ids, 3) == [0, 0, 0, 1, 1, 1]
    assert prompt_groups(["3-0", "3-1", "4-0", "4-1"], 2) == [0, 0, 1, 1]  # launches never share a group


def test_memory_report_takes_each_actors_largest_peak(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"step": 1, "memory/driver_peak_rss_mb": 500.0, "memory/judge[0]_peak_rss_mb": 300.0, "loss": 1.0},
        {"step": 2, "memory/driver_peak_rss_mb": 650.0},  # the judge's answer did not arrive this step
        {"step": 3, "memory/driver_peak_rss_mb": 640.0, "memory/judge[0]_peak_rss_mb": 310.0},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "memory.py"), str(run), "--json", str(tmp_path / "m.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "m.json").read_text()) == {str(run): {"driver": 650.0, "judge[0]": 310.0}}
    assert "| **sum of peaks** | **960** |" in proc.stdout
    # a directory without metrics is one clear line, not a traceback
    bad = subprocess.run([*cmd[:2], str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "no metrics.jsonl" in bad.stderr
