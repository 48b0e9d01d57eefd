"""Test-wide environment: offline, loopback-only, caches under .cache/ (mirrors scripts/env.sh for bare pytest)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
_CACHE = ROOT / ".cache"
_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HOME": str(_CACHE / "hf"),
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DS_ACCELERATOR": "cpu",
    "GLOO_SOCKET_IFNAME": "lo",
    "MASTER_ADDR": "127.0.0.1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_DIR": str(_CACHE / "wandb"),
    "WALTZ_RAY_CACHE": str(_CACHE / "waltz-ray"),
    "TOKENIZERS_PARALLELISM": "false",
}
for _key, _value in _ENV.items():
    os.environ.setdefault(_key, _value)


# fixtures that start Ray (in the test process or in subprocesses) or deploy Ray Serve: a test using one of them,
# directly or through another fixture, gets the marker without having to say so
RAY_FIXTURES = {"ray_session", "ray_head", "clean_run", "uninterrupted", "world", "cluster"}
SERVE_FIXTURES = {"served"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVE_FIXTURES:
            item.add_marker(pytest.mark.serve)
        if fixtures & RAY_FIXTURES or item.get_closest_marker("serve"):
            item.add_marker(pytest.mark.ray)


def pytest_configure(config: pytest.Config) -> None:
    """``WALTZ_FORBID_RAY=1`` (``make fast-test``): starting Ray in this process fails at once, naming the rule,
    and so does ``waltz_ray.runtime.driver.ray_session`` in any subprocess (it reads the same variable)."""
    if os.environ.get("WALTZ_FORBID_RAY") != "1":
        return
    try:
        import ray
    except ImportError:
        return

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this test starts Ray but is not marked `ray` (WALTZ_FORBID_RAY=1: make fast-test)")

    ray.init = forbidden


def shared_data_dir() -> Path | None:
    """../shared/data next to the repository (present for developers and CI), or $WALTZ_SHARED_DATA."""
    env = os.environ.get("WALTZ_SHARED_DATA")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present")
    return path


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    """A local Ray (2 CPUs, 300 MB object store) for one test module, unless one is already running."""
    ray = pytest.importorskip("ray")
    owned = not ray.is_initialized()
    if owned:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 1024 * 1024)
    yield ray
    if owned:
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tmp WALTZ_RAY_CACHE holding a tiny model built once per module (seconds with ``tests.tiny_world``'s
    overrides); subprocesses inherit it through the environment."""
    from tests.tiny_world import tiny_config
    from waltz_ray.worlds.tiny.build import init_tiny

    cache = tmp_path_factory.mktemp("waltz-cache")
    old = os.environ.get("WALTZ_RAY_CACHE")
    os.environ["WALTZ_RAY_CACHE"] = str(cache)
    init_tiny(tiny_config())
    yield cache
    if old is None:
        os.environ.pop("WALTZ_RAY_CACHE", None)
    else:
        os.environ["WALTZ_RAY_CACHE"] = old
