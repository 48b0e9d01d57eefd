"""The tiny world the end-to-end tests train on: a model built on the fly in seconds, a few short steps."""

from __future__ import annotations

from pathlib import Path

from waltz_ray.config import WaltzConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "tiny.sft_steps=3",
    "tiny.hidden_size=64",
    "tiny.num_layers=1",
    "stages.stage1_steps=2",
    "stages.stage2_steps=2",
    "stages.eval_every=0",
    "rollout.prompts_per_step=8",
    "data.eval_limit=8",
    "logging.wandb_mode=disabled",
    "logging.progress=false",
    # the synchronous run, the exactness reference (equal to inline, deterministic for a seed); the shipped default
    # (configs/tiny.yaml: max_staleness 1, reference on the rollout side) is tested where a test sets it back
    "runtime.max_staleness=0",
    "runtime.reference_on=learner",
    "runtime.num_threads=1",  # the actors and the inline process then use the same torch kernels
    "runtime.remote_timeout_s=180",
    "runtime.conversation_pool.num_cpus=0.2",
    "runtime.feedback_pool.num_cpus=0.2",
    "runtime.judge_pool.num_cpus=0.1",
    "runtime.learner_pool.num_cpus=0.2",
]

# metrics that measure wall-clock time (differ run to run); every other metric is deterministic for a seed
WALL_CLOCK = ("time/", "throughput/", "pool/", "judge/latency_s", "memory/")  # memory: RSS differs run to run


def tiny_config(*extra: str) -> WaltzConfig:
    return load_config(ROOT / "configs" / "tiny.yaml", [*TINY, *extra])
