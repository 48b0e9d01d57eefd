"""Resumable checkpoints: written whole or not at all, found again by a marker written last.

Layout under ``<out>/checkpoints/``::

    step_000010/                 one complete checkpoint (after training step 10)
        conversation/, feedback/ each agent's policy in Hugging Face format, plus its learner state (optimizer
                                 and policy version: ``learner.pt``, or a DeepSpeed checkpoint under ``deepspeed/``)
        rng.pt                   python, numpy and torch RNG states of the driver
        config.yaml              the resolved config of the run
        trainer_state.json       step, stage, data position, policy versions, reference model paths, metrics rows,
                                 W&B run id, and a manifest (size of every file, SHA-256 of the small ones)
    latest                       the name of the newest complete checkpoint (replaced atomically, written last)
    .partial-step_000020/        a checkpoint being written (left behind by a crash; ignored and removed)

A checkpoint is written into ``.partial-<name>``, renamed into place, then ``latest`` is replaced; only after that
are checkpoints beyond ``keep_last`` removed, so the last complete checkpoint is never deleted before the new one
is complete. Loading checks the manifest: a missing, truncated or edited file is a ``CheckpointError``, never a
silent restart from step 0. No ray here: the runtimes decide who writes the agent folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LATEST = "latest"
STATE = "trainer_state.json"
PARTIAL = ".partial-"
_HASH_LIMIT = 16 * 1024 * 1024  # files up to this size are hashed; larger ones (model shards) are size-checked


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was asked for; the message says which file and why."""


@dataclass
class TrainerState:
    """Everything besides the weights a resume needs; ``step`` is the number of training steps completed."""

    step: int
    stage: int
    data_position: int
    launch: int
    policy_versions: dict[str, int]
    reference_paths: dict[str, str]
    metrics_rows: int
    wandb_run_id: str | None = None
    counters: dict[str, int] = field(default_factory=dict)  # runtime counters that metrics report cumulatively
    manifest: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ResumePoint:
    """A verified complete checkpoint and its trainer state."""

    path: Path
    state: TrainerState

    def agent_path(self, agent: str) -> str:
        return str(self.path / agent)


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(root: Path) -> dict[str, dict[str, Any]]:
    """Size of every file under ``root`` (relative paths), and the SHA-256 of files up to 16 MiB."""
    manifest: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != STATE):
        entry: dict[str, Any] = {"size": path.stat().st_size}
        if entry["size"] <= _HASH_LIMIT:
            entry["sha256"] = _sha256(path)
        manifest[path.relative_to(root).as_posix()] = entry
    return manifest


def verify_manifest(root: Path, manifest: dict[str, dict[str, Any]]) -> None:
    for rel, entry in manifest.items():
        path = root / rel
        if not path.is_file():
            raise CheckpointError(f"checkpoint {root} is corrupt: {rel} is missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise CheckpointError(f"checkpoint {root} is corrupt: {rel} has {size} bytes, expected {entry['size']}")
        if "sha256" in entry and _sha256(path) != entry["sha256"]:
            raise CheckpointError(f"checkpoint {root} is corrupt: {rel} does not match its SHA-256")


def capture_rng() -> dict[str, Any]:
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng(states: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


class PreemptionGuard:
    """While active, SIGTERM (a spot node reclaimed, ``ray job stop``, a pod deleted) only sets ``requested``: the
    training loop finishes its step, writes a checkpoint and returns, and the command exits 0. Installed only in
    the main thread (signal handlers cannot be set elsewhere); the previous handler is restored on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        import logging

        self.requested = True
        logging.getLogger(__name__).warning("SIGTERM received: finishing this step, then checkpoint and exit")

    def __enter__(self) -> PreemptionGuard:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


class CheckpointManager:
    """Writes, finds and rotates the resumable checkpoints of one run directory."""

    def __init__(self, root: str | Path, keep_last: int = 2) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 (the newest complete checkpoint is always kept), got {keep_last}")
        self.root = Path(root)
        self.keep_last = keep_last

    def save(self, state: TrainerState, write_payload: Callable[[Path], None]) -> Path:
        """Write one checkpoint: ``write_payload(dir)`` writes the agents' folders and the config into the partial
        directory, then the RNG states and the trainer state; rename; replace ``latest``; rotate. Returns the
        complete directory."""
        import torch

        self.root.mkdir(parents=True, exist_ok=True)
        name = step_name(state.step)
        partial = self.root / f"{PARTIAL}{name}"
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
        write_payload(partial)
        torch.save(capture_rng(), partial / "rng.pt")
        state.manifest = build_manifest(partial)
        _write_atomic(partial / STATE, json.dumps(asdict(state), indent=2, sort_keys=True))
        final = self.root / name
        if final.exists():  # the same step written again (e.g. preemption right after a periodic checkpoint)
            if self._latest_name() == name:
                shutil.rmtree(partial)
                return final
            shutil.rmtree(final)
        os.replace(partial, final)
        _fsync_dir(self.root)
        _write_atomic(self.root / LATEST, name + "\n")
        self._rotate(keep=name)
        return final

    def _latest_name(self) -> str | None:
        marker = self.root / LATEST
        if not marker.is_file():
            return None
        return marker.read_text(encoding="utf-8").strip() or None

    def latest(self) -> Path:
        """The newest complete checkpoint, verified; ``CheckpointError`` when there is none or it is corrupt."""
        name = self._latest_name()
        if name is None:
            found = sorted(p.name for p in self.root.glob("step_*")) if self.root.is_dir() else []
            hint = f" (folders present: {', '.join(found)}, but no complete one was marked)" if found else ""
            raise CheckpointError(
                f"--resume: no complete checkpoint under {self.root}: {self.root / LATEST} is missing{hint}. "
                "Run without --resume to start from step 0."
            )
        path = self.root / name
        self.load_state(path)  # verifies
        return path

    def load_state(self, path: Path) -> TrainerState:
        state_file = path / STATE
        if not state_file.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete or corrupt: {STATE} is missing")
        try:
            raw = json.loads(state_file.read_text(encoding="utf-8"))
            state = TrainerState(**raw)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {path}: {STATE} is unreadable: {exc}") from exc
        verify_manifest(path, state.manifest)
        return state

    def resume_point(self) -> ResumePoint:
        path = self.latest()
        return ResumePoint(path, self.load_state(path))

    def load_rng(self, path: Path) -> dict[str, Any]:
        import torch

        # our own file, written by ``save`` (python and numpy RNG states are tuples: not a weights-only payload)
        return torch.load(path / "rng.pt", weights_only=False)  # type: ignore[no-any-return]

    def _rotate(self, keep: str) -> None:
        for stale in self.root.glob(f"{PARTIAL}*"):
            shutil.rmtree(stale, ignore_errors=True)
        complete = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in complete[: max(0, len(complete) - self.keep_last)]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)
