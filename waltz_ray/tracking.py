"""Run tracking: ``metrics.jsonl`` (the output contract) plus W&B, offline unless a key is configured.

A W&B failure is logged once and never stops training; the API key is never written anywhere by this module.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from waltz_ray.config import LoggingConfig

log = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    """JSON-safe scalars: NaN/inf become None so metrics.jsonl stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Tracker:
    """Writes one JSON object per step to ``metrics.jsonl`` and mirrors it to W&B when W&B is usable."""

    def __init__(self, out_dir: Path, config: LoggingConfig, run_config: dict[str, Any], name: str) -> None:
        self.path = out_dir / "metrics.jsonl"
        self._file = self.path.open("w", encoding="utf-8")  # a new run starts a new file (no resume yet)
        self._wandb: Any = None
        if config.wandb_mode != "disabled":
            self._wandb = self._start_wandb(out_dir, config, run_config, name)

    def _start_wandb(self, out_dir: Path, config: LoggingConfig, run_config: dict[str, Any], name: str) -> Any:
        mode = config.wandb_mode
        if mode == "online" and not (os.environ.get("WANDB_API_KEY") or config.wandb_key_file):
            log.warning("logging.wandb_mode is online but no WANDB_API_KEY or key file is set; logging offline")
            mode = "offline"
        try:
            import wandb

            if mode == "online" and config.wandb_key_file and not os.environ.get("WANDB_API_KEY"):
                wandb.login(key=Path(config.wandb_key_file).read_text().strip(), verify=False)
            return wandb.init(
                project=config.wandb_project,
                entity=config.wandb_entity,
                name=name,
                mode=mode,
                dir=str(out_dir),
                config=run_config,
                reinit="finish_previous",
            )
        except Exception as exc:
            log.warning("W&B disabled for this run: %s: %s", type(exc).__name__, exc)
            return None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._call("log", metrics, step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        if self._wandb is None:
            return
        try:
            import wandb

            self._call("log", {key: wandb.Table(columns=columns, data=rows)}, step=step)
        except Exception as exc:
            log.warning("W&B table dropped: %s", exc)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        try:
            getattr(self._wandb, method)(*args, **kwargs)
        except Exception as exc:
            log.warning("W&B %s failed, continuing without W&B: %s", method, exc)
            self._wandb = None

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._call("finish")
            self._wandb = None
