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


def _redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced (an error message must never carry the key)."""
    return text.replace(secret, "<redacted>") if secret else text


def _clean(value: Any) -> Any:
    """JSON-safe scalars: NaN/inf become None so metrics.jsonl stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Tracker:
    """Writes one JSON object per step to ``metrics.jsonl`` and mirrors it to W&B when W&B is usable.

    ``resume_rows``: continue a resumed run: keep the first ``resume_rows`` rows of ``metrics.jsonl`` (those the
    checkpoint covers; later ones are recomputed) and append; ``run_id`` resumes the same W&B run."""

    def __init__(
        self,
        out_dir: Path,
        config: LoggingConfig,
        run_config: dict[str, Any],
        name: str,
        *,
        resume_rows: int | None = None,
        run_id: str | None = None,
    ) -> None:
        self.path = out_dir / "metrics.jsonl"
        self.rows = 0
        if resume_rows is None:
            self._file = self.path.open("w", encoding="utf-8")
        else:
            self._file = self._truncated(resume_rows)
        self._wandb: Any = None
        if config.wandb_mode != "disabled":
            self._wandb = self._start_wandb(out_dir, config, run_config, name, run_id)

    def _truncated(self, keep: int) -> Any:
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True) if self.path.is_file() else []
        if len(lines) < keep:
            raise RuntimeError(
                f"{self.path} has {len(lines)} rows but the checkpoint covers {keep}: the metrics of this run are "
                "incomplete (was the run directory changed?)"
            )
        tmp = self.path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(lines[:keep]), encoding="utf-8")
        os.replace(tmp, self.path)
        self.rows = keep
        return self.path.open("a", encoding="utf-8")

    @property
    def run_id(self) -> str | None:
        """The W&B run id (stored in checkpoints, so a resumed run continues the same W&B run)."""
        return getattr(self._wandb, "id", None) if self._wandb is not None else None

    def _start_wandb(
        self, out_dir: Path, config: LoggingConfig, run_config: dict[str, Any], name: str, run_id: str | None
    ) -> Any:
        """``wandb.init`` in the configured mode. The key comes from ``WANDB_API_KEY`` or ``wandb_key_file`` and is
        handed to W&B in memory only (no ``wandb.login``, which writes ``~/.netrc``). Online but unreachable: the
        run logs offline instead (``wandb sync`` uploads it later); any other failure: no W&B, training goes on."""
        mode = config.wandb_mode
        if mode == "auto":  # $WANDB_MODE when set (scripts/env.sh: offline), else online exactly when a key is given
            env_mode = os.environ.get("WANDB_MODE", "")
            has_key = bool(os.environ.get("WANDB_API_KEY") or config.wandb_key_file)
            mode = env_mode if env_mode in ("offline", "online", "disabled") else ("online" if has_key else "offline")
            if mode == "disabled":
                return None
        key = os.environ.get("WANDB_API_KEY")
        if mode == "online" and not key and config.wandb_key_file:
            try:
                key = Path(config.wandb_key_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                log.warning("logging.wandb_key_file %s is unreadable (%s); logging offline", config.wandb_key_file, exc)
        if mode == "online" and not key:
            log.warning("logging.wandb_mode is online but no WANDB_API_KEY or key file is set; logging offline")
            mode = "offline"
        try:
            import wandb
        except Exception as exc:
            log.warning("W&B disabled for this run: %s", type(exc).__name__)
            return None
        kwargs: dict[str, Any] = {
            "project": config.wandb_project,
            "entity": config.wandb_entity,
            "name": name,
            "dir": str(out_dir),
            "config": run_config,
            "reinit": "finish_previous",
        }
        if run_id:  # continue the run a checkpoint names (no resume argument at all for a new run)
            kwargs.update(id=run_id, resume="allow")
        settings: dict[str, Any] = {"init_timeout": config.wandb_init_timeout_s}
        if mode == "online":
            try:
                return wandb.init(mode="online", settings=wandb.Settings(api_key=key, **settings), **kwargs)
            except Exception as exc:
                log.warning(
                    "W&B online start failed (%s: %s); logging offline to %s instead (wandb sync uploads it later)",
                    type(exc).__name__,
                    _redact(str(exc), key),
                    out_dir / "wandb",
                )
                mode = "offline"
        try:
            return wandb.init(mode=mode, settings=wandb.Settings(**settings), **kwargs)
        except Exception as exc:
            log.warning("W&B disabled for this run: %s: %s", type(exc).__name__, _redact(str(exc), key))
            return None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()
        self.rows += 1
        if self._wandb is not None:
            self._call("log", metrics, step=step)

    def log_histograms(self, values: dict[str, list[float]], step: int) -> None:
        """Distributions (DIR per sample, staleness per sample) as W&B histograms; metrics.jsonl keeps summaries."""
        if self._wandb is None:
            return
        try:
            import wandb

            self._call("log", {k: wandb.Histogram(v) for k, v in values.items() if v}, step=step)
        except Exception as exc:
            log.warning("W&B histograms dropped: %s", exc)

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
