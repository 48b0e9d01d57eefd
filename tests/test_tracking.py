"""W&B tracking: failures never stop training, an unreachable W&B falls back to offline, and the API key (a canary
value, from the environment or from a key file) is written nowhere: not in logs, configs, metrics, checkpoints or
the W&B run folder."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_world import tiny_config
from waltz_ray.config import LoggingConfig
from waltz_ray.tracking import Tracker

CANARY = "canary" + "7" * 40  # W&B checks the length (40+) before it tries the network


def test_a_failing_wandb_never_stops_the_metrics(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tracker = Tracker(tmp_path, LoggingConfig(wandb_mode="offline"), {"seed": 0}, name="t")
    assert tracker._wandb is not None and tracker.run_id

    class Broken:
        id = "broken"

        def log(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("W&B went away")

    real, tracker._wandb = tracker._wandb, Broken()
    tracker.log({"loss": 1.0}, step=1)
    tracker.log({"loss": float("nan")}, step=2)
    tracker.log_histograms({"feedback/dir": [0.1, -0.2]}, step=2)
    tracker.close()
    real.finish()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": None}] and tracker.rows == 2
    assert "continuing without W&B: W&B went away" in caplog.text


def files_holding(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("source", ["environment", "key_file"])
def test_the_wandb_key_is_written_nowhere(
    source: str,
    tiny_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A real (shortened) training run, online W&B pointed at a refused port: it falls back to offline logging, the
    run completes with checkpoints, and the canary key is in no file, log line or output."""
    from waltz_ray.trainer.inline import train

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # wandb.login would write ~/.netrc: it must not be called
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    extra = ["logging.wandb_mode=online", "logging.wandb_init_timeout_s=3", "checkpoint.every=1"]
    if source == "environment":
        monkeypatch.setenv("WANDB_API_KEY", CANARY)
    else:
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        key_file = tmp_path / "wandb_key"
        key_file.write_text(CANARY + "\n")
        extra.append(f"logging.wandb_key_file={key_file}")
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "run"
    config = tiny_config("runtime.mode=inline", "stages.stage1_steps=1", "stages.stage2_steps=1", *extra)
    result = train(config, out)

    assert result["final"] is not None and (out / "checkpoints" / "step_000001" / "trainer_state.json").is_file()
    assert "logging offline to" in caplog.text  # the unreachable W&B did not stop training
    assert list((out / "wandb").glob("offline-run-*")), "the offline fallback run is missing"
    if source == "key_file":
        assert "WANDB_API_KEY" not in os.environ  # handed to W&B in memory, not through the environment
    captured = capfd.readouterr()
    assert CANARY not in caplog.text and CANARY not in captured.out and CANARY not in captured.err
    assert files_holding(out, CANARY) == []
    assert not (tmp_path / "home" / ".netrc").exists()


@pytest.mark.parametrize(
    ("env_mode", "key", "key_file", "expected"),
    [
        (None, None, False, "offline"),  # no key: offline by default
        (None, CANARY, False, "online"),  # a key in the environment: online
        (None, None, True, "online"),  # a key file: online
        ("offline", CANARY, False, "offline"),  # $WANDB_MODE wins (scripts/env.sh sets offline)
        ("disabled", None, False, None),
    ],
)
def test_auto_mode_goes_online_exactly_when_a_key_is_given(
    env_mode: str | None,
    key: str | None,
    key_file: bool,
    expected: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import wandb

    seen: list[str] = []

    def fake_init(mode: str, **kwargs: Any) -> Any:
        seen.append(mode)
        return type("Run", (), {"id": "r", "finish": lambda self: None})()

    monkeypatch.setattr(wandb, "init", fake_init)
    for name, value in (("WANDB_MODE", env_mode), ("WANDB_API_KEY", key)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    path = tmp_path / "key"
    path.write_text(CANARY)
    config = LoggingConfig(wandb_mode="auto", wandb_key_file=str(path) if key_file else None)
    Tracker(tmp_path, config, {}, name="t").close()
    assert seen == ([expected] if expected else [])
