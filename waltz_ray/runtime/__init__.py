"""The Ray runtime: placement groups, actor pools, weight sync, the episode queue and the driver loop.

The only package that imports ray. Names are loaded on first use, so ``import waltz_ray.runtime`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ray_trainer": "driver",
    "ray_session": "driver",
    "train_ray": "driver",
    "EpisodeQueue": "queue",
    "EpisodeRecord": "queue",
    "RolloutProducer": "producer",
    "RemoteGenerator": "proxies",
    "RemoteJudge": "proxies",
    "RemoteLearnerGroup": "proxies",
    "RemoteCallError": "proxies",
    "RemoteTimeoutError": "proxies",
    "Topology": "topology",
    "build_topology": "topology",
    "ResourceBudgetError": "topology",
    "PlacementTimeoutError": "topology",
    "WeightSync": "weight_sync",
    "ObjectStoreWeightSync": "weight_sync",
    "NCCLWeightSync": "weight_sync",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'waltz_ray.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f"waltz_ray.runtime.{_EXPORTS[name]}"), name)
