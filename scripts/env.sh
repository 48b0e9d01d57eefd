# Environment that keeps Ray, vLLM, DeepSpeed, Hugging Face and W&B offline, on 127.0.0.1 and inside .cache/.
# Sourced by the Makefile targets and tests/conftest.py mirrors it; see ../shared/ENVIRONMENT.md §0 for why each matters.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
export HF_HOME="${HF_HOME:-$_root/.cache/hf}" HF_HUB_DISABLE_TELEMETRY=1
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
export RAY_TMPDIR="${RAY_TMPDIR:-$_root/.cache/ray}"
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}" GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-lo}" MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$_root/.cache/torch_extensions}"
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export VLLM_CACHE_ROOT="${VLLM_CACHE_ROOT:-$_root/.cache/vllm}"
export WANDB_MODE="${WANDB_MODE:-offline}" WANDB_DIR="${WANDB_DIR:-$_root/.cache/wandb}" WANDB_SILENT=true
export WANDB_CACHE_DIR="${WANDB_CACHE_DIR:-$_root/.cache/wandb_cache}" WANDB_CONFIG_DIR="${WANDB_CONFIG_DIR:-$_root/.cache/wandb_cfg}"
export WALTZ_RAY_CACHE="${WALTZ_RAY_CACHE:-$_root/.cache/waltz-ray}"
export TMPDIR="${TMPDIR_WALTZ:-$_root/.cache/tmp}" TOKENIZERS_PARALLELISM=false
mkdir -p "$TMPDIR" "$RAY_TMPDIR" "$WANDB_DIR" "$HF_HOME"
unset _root
