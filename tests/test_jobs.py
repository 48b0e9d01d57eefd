"""``ray job submit`` of the tiny run against a real local head (tests/ray_head.py), and jobs/submit.py's guards.

The slow test starts ``ray start --head`` on 127.0.0.1, submits the README's train command (shortened) with
jobs/runtime_env.yaml, checks the run's outputs, and checks that a W&B key never reaches job metadata, job logs,
the head's session files or the run's files: one canary in the submitting shell, one in the cluster's environment
(the documented way to give the job a key).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.ray_head import LocalHead, local_head

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ENV = ROOT / "jobs" / "runtime_env.yaml"
TINY = ["tiny.sft_steps=3", "tiny.hidden_size=64", "tiny.num_layers=1"]  # the test-sized tiny world (test_runtime)
SHORT = [
    *TINY,
    "stages.stage1_steps=2",
    "stages.stage2_steps=1",
    "rollout.prompts_per_step=4",
    "data.eval_limit=8",
    "logging.progress=false",
]
SUBMITTER_CANARY = f"canary-submitter-{uuid.uuid4().hex}"
CLUSTER_CANARY = f"canary-cluster-{uuid.uuid4().hex}"
JOB_TIMEOUT_S = 300  # about 30 s on 2 idle cores


def _load_submit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("waltz_jobs_submit", ROOT / "jobs" / "submit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


submit = _load_submit()


# ------------------------------------------------------------------------------------------ the submit helper
def test_runtime_env_file_has_no_secret_and_skips_the_heavy_dirs() -> None:
    runtime_env = yaml.safe_load(RUNTIME_ENV.read_text())
    submit.check_secrets(runtime_env, submit.default_entrypoint(), {})
    assert {".venv/", ".cache/", "runs/", "wandb/"} <= set(runtime_env["excludes"])
    assert all(isinstance(v, str) for v in runtime_env["env_vars"].values())  # Ray rejects non-string values
    assert runtime_env["env_vars"]["HF_HUB_OFFLINE"] == "1"


def test_submit_refuses_a_key_in_the_runtime_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    leaky = tmp_path / "runtime_env.yaml"
    leaky.write_text(yaml.safe_dump({"env_vars": {"WANDB_API_KEY": SUBMITTER_CANARY}}))
    assert submit.main(["--runtime-env", str(leaky), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "refusing" in err and "WANDB_API_KEY" in err and "logging.wandb_key_file" in err
    assert SUBMITTER_CANARY not in err


def test_submit_refuses_the_key_value_anywhere_in_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", SUBMITTER_CANARY)
    renamed = tmp_path / "runtime_env.yaml"
    renamed.write_text(yaml.safe_dump({"env_vars": {"MY_KEY": SUBMITTER_CANARY}}))
    assert submit.main(["--runtime-env", str(renamed), "--dry-run"]) == 2
    entry = ["waltz-ray", "train", "--out", "/x", "--set", f"logging.wandb_entity={SUBMITTER_CANARY}"]
    assert submit.main(["--dry-run", "--", *entry]) == 2
    assert submit.main(["--dry-run", "--", "env", "WANDB_API_KEY=x", "waltz-ray", "train"]) == 2
    assert SUBMITTER_CANARY not in capsys.readouterr().err


def test_submit_builds_the_readme_command_without_the_shells_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", SUBMITTER_CANARY)
    assert submit.main(["--address", "http://127.0.0.1:1", "--no-wait", "--dry-run"]) == 0
    captured = capsys.readouterr()
    command = captured.out.strip()
    assert " job submit --address http://127.0.0.1:1 " in command
    assert f"--working-dir {ROOT} --runtime-env {RUNTIME_ENV} --no-wait -- " in command
    assert command.endswith(f"-- waltz-ray train --config configs/tiny.yaml --out {ROOT / 'runs' / 'tiny'}")
    assert "is not sent with the job" in captured.err
    assert SUBMITTER_CANARY not in captured.out + captured.err
    assert "WANDB_API_KEY" not in submit.submit_env(os.environ)
    # a relative --out lands in the job's unpacked copy of the working dir: say so
    assert submit.main(["--dry-run", "--", "waltz-ray", "train", "--out", "runs/tiny"]) == 0
    assert "is relative" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the real job
@pytest.fixture(scope="module")
def tiny_cache() -> Path:
    """The test-sized tiny model, built (seconds) into $WALTZ_RAY_CACHE before the job looks for it there."""
    from waltz_ray.config import load_config
    from waltz_ray.worlds.cache import cache_root
    from waltz_ray.worlds.tiny.build import init_tiny

    init_tiny(load_config(ROOT / "configs" / "tiny.yaml", TINY))
    return cache_root()


@pytest.fixture(scope="module")
def ray_head(tiny_cache: Path) -> Iterator[LocalHead]:
    """A local head whose environment gives jobs the tiny cache, the venv's ``waltz-ray`` and a (canary) W&B key."""
    env = {**os.environ, "WALTZ_RAY_CACHE": str(tiny_cache), "WANDB_API_KEY": CLUSTER_CANARY}
    with local_head(env) as head:
        yield head


def _files_holding(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                hits.append(str(path.relative_to(root)))
        except OSError:
            continue
    return hits


@pytest.mark.slow
@pytest.mark.timeout(JOB_TIMEOUT_S + 180)
def test_ray_job_submit_runs_the_tiny_job(ray_head: LocalHead, tmp_path: Path) -> None:
    head = ray_head
    address = ["--address", head.dashboard_url]
    out = tmp_path / "run"  # absolute: the job writes here, not into its unpacked copy of the working dir
    submission_id = f"waltz-tiny-{uuid.uuid4().hex[:8]}"
    entrypoint = ["waltz-ray", "train", "--config", "configs/tiny.yaml", "--out", str(out)]
    entrypoint += [x for s in SHORT for x in ("--set", s)]
    submitter_env = {k: v for k, v in head.env.items() if k != "WANDB_API_KEY"} | {"WANDB_API_KEY": SUBMITTER_CANARY}

    start = time.monotonic()
    command = ["job", "submit", *address, "--working-dir", str(ROOT), "--runtime-env", str(RUNTIME_ENV)]
    command += ["--submission-id", submission_id, "--", *entrypoint]
    try:
        submitted = head.cli(*command, timeout=JOB_TIMEOUT_S, env=submitter_env)
    except subprocess.TimeoutExpired:
        head.cli("job", "stop", *address, submission_id)
        pytest.fail(f"the job did not finish in {JOB_TIMEOUT_S} s")
    seconds = time.monotonic() - start
    assert submitted.returncode == 0, submitted.stdout[-6000:] + submitted.stderr[-3000:]

    # job metadata: the runtime env as shipped, the entrypoint, success
    info = head.api(f"/api/jobs/{submission_id}")
    assert info["status"] == "SUCCEEDED", info
    assert info["entrypoint"].startswith("waltz-ray train --config configs/tiny.yaml")
    assert info["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_")  # the checkout was uploaded
    assert info["runtime_env"]["env_vars"] == yaml.safe_load(RUNTIME_ENV.read_text())["env_vars"]
    listed = head.cli("job", "list", *address)
    logs = head.cli("job", "logs", *address, submission_id)
    assert listed.returncode == 0 and logs.returncode == 0
    # the trainer joined the job's cluster (RAY_ADDRESS) rather than starting a Ray of its own
    assert f"Connecting to existing Ray cluster at address: {head.gcs_address}" in logs.stdout + logs.stderr

    # the outputs
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["stages"]["stage1_steps"] == 2 and config["stages"]["stage2_steps"] == 1
    assert config["rollout"]["prompts_per_step"] == 4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "stage" in r] == [1, 2, 3]
    assert [r["stage"] for r in rows if "stage" in r] == [1, 1, 2]
    assert all("queue/capacity" in r for r in rows if "stage" in r), "not the Ray runtime"
    assert [r["step"] for r in rows if "eval/asr" in r] == [0, 3]
    final = json.loads((out / "eval_final.json").read_text())
    assert {"asr", "orr", "ftr", "label_accuracy", "n_harmful", "n_benign"} <= set(final)
    for agent in ("conversation", "feedback"):
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            assert (out / "checkpoints" / "final" / agent / name).is_file(), (agent, name)
    assert list((out / "wandb").glob("offline-run-*")), "no offline W&B run"

    # neither key anywhere: job metadata, job logs, the submit output, the run's files, the head's session files
    texts = {
        "job info": json.dumps(info),
        "ray job list": listed.stdout + listed.stderr,
        "ray job logs": logs.stdout + logs.stderr,
        "ray job submit": submitted.stdout + submitted.stderr,
    }
    for canary in (SUBMITTER_CANARY, CLUSTER_CANARY):
        assert [name for name, text in texts.items() if canary in text] == [], canary
        assert _files_holding(out, canary.encode()) == [], canary
        assert _files_holding(head.temp_dir, canary.encode()) == [], canary
    print(f"\nray job submit of the tiny job: {seconds:.1f} s")
