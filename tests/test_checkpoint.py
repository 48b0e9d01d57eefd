"""Checkpoints and resume: atomic writes, rotation, corruption, and exact resume after SIGKILL / SIGTERM.

The end-to-end tests run ``waltz-ray train`` as real subprocesses (each with its own local Ray on 127.0.0.1) on the
tiny world, kill them with real signals and resume with ``--resume``. Synchronously the resumed run is compared
against one uninterrupted run with the same seed: every per-step metric except wall times, and every final
parameter, must be identical. Asynchronously (the shipped default) it is held to the invariants of
``tests.reliability`` (both modes are): it finishes, every step is learned once with all of its episodes, no episode
is learned twice across the resume, no sample is older than the staleness bound.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import MODES, assert_invariants, learned, rows
from tests.tiny_world import ROOT, TINY, WALL_CLOCK
from waltz_ray.checkpoint import CheckpointError, CheckpointManager, TrainerState

# ----------------------------------------------------------------------------------------- manager (no model)


def state(step: int) -> TrainerState:
    return TrainerState(
        step=step,
        stage=1,
        data_position=8 * step,
        launch=step,
        policy_versions={"conversation": 0, "feedback": step},
        reference_paths={"conversation": "/m", "feedback": "/m"},
        metrics_rows=step + 1,
    )


def payload(text: str) -> Any:
    def write(directory: Path) -> None:
        (directory / "feedback").mkdir()
        (directory / "feedback" / "weights.bin").write_text(text)

    return write


def test_save_then_latest_round_trips_the_state(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    path = manager.save(state(3), payload("w3"))
    assert path == tmp_path / "step_000003" and (tmp_path / "latest").read_text().strip() == "step_000003"
    point = manager.resume_point()
    assert point.path == path and point.state.step == 3 and point.state.policy_versions["feedback"] == 3
    assert set(point.state.manifest) == {"feedback/weights.bin", "rng.pt"}
    assert not list(tmp_path.glob(".partial-*"))


def test_rotation_keeps_the_newest_complete_checkpoints(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3, 4):
        manager.save(state(step), payload(f"w{step}"))
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_000003", "step_000004"]
    assert manager.resume_point().state.step == 4


def test_a_crash_while_writing_leaves_the_previous_checkpoint_resumable(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save(state(2), payload("w2"))

    def dies_halfway(directory: Path) -> None:
        payload("half")(directory)
        raise KeyboardInterrupt("killed while writing")

    with pytest.raises(KeyboardInterrupt):
        manager.save(state(3), dies_halfway)
    assert (tmp_path / ".partial-step_000003").is_dir()  # what the crash left behind
    point = manager.resume_point()
    assert point.state.step == 2 and (point.path / "feedback" / "weights.bin").read_text() == "w2"
    manager.save(state(3), payload("w3"))  # the next save clears the leftovers, then rotates to keep_last=1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000003"]


def test_missing_and_corrupt_checkpoints_are_loud(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "none")
    with pytest.raises(CheckpointError, match=r"no complete checkpoint.*without --resume"):
        manager.resume_point()

    manager = CheckpointManager(tmp_path / "ckpt")
    path = manager.save(state(1), payload("weights"))
    (path / "feedback" / "weights.bin").write_text("weightz")  # same size, different bytes
    with pytest.raises(CheckpointError, match=r"weights\.bin does not match its SHA-256"):
        manager.resume_point()
    (path / "feedback" / "weights.bin").write_text("w")
    with pytest.raises(CheckpointError, match=r"weights\.bin has 1 bytes, expected 7"):
        manager.resume_point()
    (path / "feedback" / "weights.bin").unlink()
    with pytest.raises(CheckpointError, match=r"weights\.bin is missing"):
        manager.resume_point()
    (path / "trainer_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"trainer_state\.json is unreadable"):
        manager.resume_point()
    (tmp_path / "ckpt" / "latest").write_text("step_000009\n")
    with pytest.raises(CheckpointError, match="step_000009 is incomplete or corrupt"):
        manager.resume_point()


def test_resume_without_a_checkpoint_is_a_clear_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from waltz_ray.cli import main

    assert main(["train", "--out", str(tmp_path), "--resume", "--runtime", "inline"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------------------ end to end (real signals)

# synchronous: 3 + 3 steps, compared with one uninterrupted run; asynchronous (the shipped default): 2 + 2 steps, held
# to the invariants (tests.reliability), since an asynchronous run is not equal to an uninterrupted one
STEPS = {
    "sync": ["stages.stage1_steps=3", "stages.stage2_steps=3"],
    "async": ["stages.stage1_steps=2", "stages.stage2_steps=2", *MODES["async"]],
}
TOTAL = {"sync": 6, "async": 4}
CHECKPOINTS = ["checkpoint.every=1", "checkpoint.keep_last=2"]
IGNORED = (*WALL_CLOCK, "queue/in_flight")  # wall times differ run to run; nothing else may

# `waltz-ray train` whose trainer also records what each step learned (tests.reliability.LearnedLog) in argv[1]
RECORDING = """
import sys
from pathlib import Path
from tests.reliability import LearnedLog
from waltz_ray.cli import main
from waltz_ray.runtime import driver

build = driver.ray_trainer
def recorded(*args, hooks=(), **kwargs):
    return build(*args, hooks=[*hooks, LearnedLog(Path(sys.argv[1]))], **kwargs)
driver.ray_trainer = recorded
sys.exit(main(sys.argv[2:]))
"""


def train_cmd(out: Path, *extra: str, mode: str = "sync", learned: Path | None = None) -> list[str]:
    sets = [x for s in [*TINY, *STEPS[mode], *CHECKPOINTS] for x in ("--set", s)]
    config = str(ROOT / "configs" / "tiny.yaml")
    cli = [sys.executable, "-c", RECORDING, str(learned)] if learned else [sys.executable, "-m", "waltz_ray.cli"]
    return [*cli, "train", "--config", config, "--out", str(out), *sets, *extra]


def start(out: Path, *extra: str, mode: str = "sync", learned: Path | None = None) -> subprocess.Popen[bytes]:
    log = (out.parent / f"{out.name}.log").open("ab")
    cmd = train_cmd(out, *extra, mode=mode, learned=learned)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def finish(proc: subprocess.Popen[bytes], out: Path, timeout: float = 420) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{out} did not finish in {timeout} s:\n{tail(out)}") from None


def tail(out: Path) -> str:
    log = out.parent / f"{out.name}.log"
    return log.read_text(errors="replace")[-3000:] if log.is_file() else ""


def wait_for(
    predicate: Any, proc: subprocess.Popen[bytes], out: Path, timeout: float = 300, poll: float = 0.005
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"{out} exited ({proc.returncode}) before the kill point:\n{tail(out)}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{out}: kill point not reached in {timeout} s:\n{tail(out)}")
        time.sleep(poll)


def latest_step(out: Path) -> int:
    marker = out / "checkpoints" / "latest"
    try:
        return int(marker.read_text().strip().split("_")[1])
    except (OSError, IndexError, ValueError):
        return 0


def assert_same_run(resumed: Path, reference: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    ours, theirs = rows(resumed), rows(reference)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for mine, ref in zip(ours, theirs, strict=True):
        keys = {k for k in ref if not k.startswith(IGNORED)}
        assert keys == {k for k in mine if not k.startswith(IGNORED)}, mine["step"]
        for key in keys:
            assert mine[key] == ref[key], (mine["step"], key, mine[key], ref[key])
    assert json.loads((resumed / "eval_final.json").read_text()) == json.loads(
        (reference / "eval_final.json").read_text()
    )
    for agent in ("conversation", "feedback"):
        a = AutoModelForCausalLM.from_pretrained(resumed / "checkpoints/final" / agent).state_dict()
        b = AutoModelForCausalLM.from_pretrained(reference / "checkpoints/final" / agent).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[name], b[name]) for name in b), agent


@pytest.fixture(scope="module")
def uninterrupted(tiny_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "uninterrupted"
    proc = start(out)
    assert finish(proc, out) == 0, tail(out)
    assert len(rows(out)) == 1 + 6 + 1  # initial eval, 6 steps, final eval
    return out


def resumed_as_promised(mode: str, out: Path, resumed_from: int, request: pytest.FixtureRequest) -> None:
    """Synchronously: equal to the uninterrupted run, parameters included; both modes: the invariants, with what
    the checkpoint kept of the interrupted run's learning and what the resumed run learned."""
    kept = learned(out.parent / "learned-interrupted.jsonl", up_to=resumed_from)
    assert_invariants(rows(out), mode, kept + learned(out.parent / "learned-resumed.jsonl"), steps=TOTAL[mode])
    assert (out / "eval_final.json").is_file()
    if mode == "sync":
        assert_same_run(out, request.getfixturevalue("uninterrupted"))


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", MODES)
def test_sigkill_at_an_arbitrary_point_then_resume_finishes_the_run(
    mode: str, tiny_env: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    out, half = tmp_path / "killed", TOTAL[mode] // 2
    proc = start(out, mode=mode, learned=tmp_path / "learned-interrupted.jsonl")
    # inside the step after half of them (or its eval), with the checkpoint of step 2 written
    wait_for(lambda: latest_step(out) >= 2 and len(rows(out)) >= 1 + half, proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(rows(out)) < 1 + TOTAL[mode] + 1  # it really was interrupted
    resumed_from = latest_step(out)

    proc = start(out, "--resume", mode=mode, learned=tmp_path / "learned-resumed.jsonl")
    assert finish(proc, out) == 0, tail(out)
    assert "resumed from" in tail(out)
    resumed_as_promised(mode, out, resumed_from, request)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", MODES)
def test_sigterm_checkpoints_exits_zero_and_resume_finishes_the_run(
    mode: str, tiny_env: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    out = tmp_path / "preempted"
    only_sigterm = ("--set", "checkpoint.every=0")  # only the SIGTERM checkpoint
    proc = start(out, *only_sigterm, mode=mode, learned=tmp_path / "learned-interrupted.jsonl")
    wait_for(lambda: (out / "metrics.jsonl").is_file() and len(rows(out)) >= 2, proc, out)  # step 1 logged
    proc.send_signal(signal.SIGTERM)
    assert finish(proc, out) == 0, tail(out)
    step = latest_step(out)
    assert 1 <= step < TOTAL[mode] and len(rows(out)) == 1 + step, tail(out)
    assert '"preempted": true' in tail(out)
    assert not (out / "eval_final.json").exists()

    proc = start(out, "--resume", mode=mode, learned=tmp_path / "learned-resumed.jsonl")
    assert finish(proc, out) == 0, tail(out)
    resumed_as_promised(mode, out, step, request)


KILL_WHILE_WRITING = """
import os, signal, sys
from waltz_ray.cli import main
from waltz_ray.trainer.loop import Trainer

write = Trainer._write_resume_payload
def dies_in_step_3(self, directory):
    if directory.name.endswith("step_000003"):
        self.agents["feedback"].learner.save_state(directory / "feedback")  # half of the payload is on disk
        os.kill(os.getpid(), signal.SIGKILL)
    write(self, directory)
Trainer._write_resume_payload = dies_in_step_3
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_while_a_checkpoint_is_written_keeps_the_previous_one_resumable(
    uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "torn"
    cmd = train_cmd(out)  # python -m waltz_ray.cli train ...
    proc = subprocess.run([sys.executable, "-c", KILL_WHILE_WRITING, *cmd[3:]], cwd=ROOT, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpts = out / "checkpoints"
    assert (ckpts / ".partial-step_000003" / "feedback").is_dir()  # killed mid-write
    assert latest_step(out) == 2
    assert CheckpointManager(ckpts).resume_point().state.step == 2

    proc2 = start(out, "--resume")
    assert finish(proc2, out) == 0, tail(out)
    assert not list(ckpts.glob(".partial-*"))
    assert_same_run(out, uninterrupted)


def test_sigterm_guard_restores_the_previous_handler() -> None:
    from waltz_ray.checkpoint import PreemptionGuard

    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert guard.requested
    assert signal.getsignal(signal.SIGTERM) == before
