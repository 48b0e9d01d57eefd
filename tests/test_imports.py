"""Import boundaries: the algorithm core and the driver-side modules import without Ray, vLLM or DeepSpeed.

``waltz_ray.core`` holds pure functions (protocol, rewards, samples, advantages, losses) that must stay importable
and testable anywhere: no distributed runtime, no inference engine, no model library and no I/O. The checks run in a
fresh interpreter so that modules imported by other tests cannot hide a heavy import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "waltz_ray" / "core"

LIGHT_MODULES = [
    "waltz_ray",
    "waltz_ray.core",
    "waltz_ray.core.protocol",
    "waltz_ray.core.rewards",
    "waltz_ray.core.samples",
    "waltz_ray.core.advantages",
    "waltz_ray.core.losses",
    "waltz_ray.types",
    "waltz_ray.config",
    "waltz_ray.rollout",
    "waltz_ray.data.loaders",
    "waltz_ray.engines.judges",
]
RUNTIME_PACKAGES = ["ray", "vllm", "deepspeed"]
CORE_FORBIDDEN = [
    *RUNTIME_PACKAGES,
    "transformers",
    "os",
    "pathlib",
    "io",
    "socket",
    "subprocess",
    "requests",
    "httpx",
]


def _loaded_after(imports: list[str], watched: list[str]) -> list[str]:
    """Import ``imports`` in a fresh interpreter; return which of ``watched`` (top-level packages) got loaded."""
    code = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {imports!r}:
            importlib.import_module(name)
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({watched!r}))
        print(",".join(loaded))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    output = result.stdout.strip().splitlines()
    return output[-1].split(",") if output and output[-1] else []


def test_light_modules_do_not_import_ray_vllm_or_deepspeed():
    assert _loaded_after(LIGHT_MODULES, RUNTIME_PACKAGES) == []


def test_package_import_is_cheap():
    """``import waltz_ray`` (as the CLI's first step does) loads neither torch nor transformers."""
    assert _loaded_after(["waltz_ray"], ["torch", "transformers"]) == []


def test_model_free_actor_hosts_import_no_model_library():
    """The judge and rollout actors' module (``runtime.hosts``) loads neither torch nor transformers: those two
    Ray actors start without paying for them (a judge that loads a model imports them when it is built)."""
    assert _loaded_after(["waltz_ray.runtime.hosts"], ["torch", "transformers"]) == []


def _imported_names(tree: ast.AST) -> set[str]:
    """Top-level package names of every import statement anywhere in ``tree`` (lazy imports in functions too)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


CORE_FILES = sorted(CORE.rglob("*.py"))


def test_core_has_modules():
    assert {path.name for path in CORE_FILES} >= {
        "__init__.py",
        "protocol.py",
        "rewards.py",
        "samples.py",
        "advantages.py",
        "losses.py",
    }


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_source_imports_no_runtime_model_library_or_io(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    forbidden = sorted(_imported_names(tree) & set(CORE_FORBIDDEN))
    assert forbidden == [], f"{path.relative_to(ROOT)} imports {forbidden}"
