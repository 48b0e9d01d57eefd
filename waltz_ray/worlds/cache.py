"""The user cache that built checkpoints (the tiny world, the SmolLM2 preset) live in, and the build-once rule."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "build.json"


def cache_root() -> Path:
    """``$WALTZ_RAY_CACHE``, else ``$XDG_CACHE_HOME/waltz-ray``, else ``~/.cache/waltz-ray``."""
    if os.environ.get("WALTZ_RAY_CACHE"):
        return Path(os.environ["WALTZ_RAY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "waltz-ray"


def build_once(target: Path, build: Callable[[Path], dict[str, Any]], force: bool = False) -> tuple[Path, bool]:
    """Return ``target``, building it first unless a complete build is there (its ``build.json`` marks it).

    ``build(staging)`` writes the checkpoint into a staging folder beside ``target`` and returns a report, which is
    saved as ``build.json``; the folder is then renamed into place, so a crash mid-build leaves no half checkpoint
    that looks complete. When another process finishes the same build first, its result is kept. The second value
    says whether this call built it.
    """
    if (target / MARKER).is_file() and not force:
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        report = build(staging)
        (staging / MARKER).write_text(json.dumps(report, indent=2))
        if target.exists():
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            if not (target / MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, True
