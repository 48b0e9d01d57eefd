"""One agent of the pair inside a Serve replica: a Generator (HF or vLLM, by the agent's config) behind a batched call.

A plain class: ``app.build_apps`` turns it into two deployments (conversation, feedback) with their own replicas and
resources. Concurrent requests are grouped into one ``generate`` call (``serve.batch``), which runs in a worker
thread so the replica's event loop keeps answering health checks while the model works.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ray import serve

from waltz_ray.core.protocol import render_chat
from waltz_ray.engines.base import Generator
from waltz_ray.types import AgentName, Completion, GenerationParams, Message

log = logging.getLogger(__name__)

GeneratorFactory = Callable[[], Generator]
"""Builds the replica's generator in place of a checkpoint (tests use scripted generators)."""


@dataclass(frozen=True)
class AgentReply:
    """A completion, or why the request cannot be answered (too long for the model's context)."""

    completion: Completion | None = None
    error: str | None = None


@dataclass(frozen=True)
class EngineSpec:
    """What the replica loads: the agent's engine settings from ``agents.<name>`` and the checkpoint path."""

    engine: str
    model_path: str
    dtype: str = "float32"
    max_model_len: int = 1024
    gpu_memory_utilization: float = 0.5
    num_threads: int | None = 1


def _build(spec: EngineSpec, num_cpus: float) -> tuple[Any, int | None]:
    """The generator and its context length in tokens."""
    generator: Any
    if spec.engine == "vllm":
        from waltz_ray.engines.vllm_engine import VLLMGenerator

        generator = VLLMGenerator(
            spec.model_path,
            dtype=spec.dtype,
            max_model_len=spec.max_model_len,
            gpu_memory_utilization=spec.gpu_memory_utilization,
        )
        return generator, spec.max_model_len
    import torch

    from waltz_ray.engines.hf import HFGenerator

    torch.set_num_threads(spec.num_threads or max(1, int(num_cpus)))
    generator = HFGenerator.from_pretrained(spec.model_path, spec.dtype)
    return generator, getattr(generator.model.config, "max_position_embeddings", None)


class AgentServer:
    """Answers ``generate(chat, params)`` for one agent; requests arriving together share one generate call."""

    def __init__(
        self,
        agent: AgentName,
        spec: EngineSpec | None,
        *,
        num_cpus: float = 1.0,
        max_batch_size: int = 8,
        batch_wait_s: float = 0.01,
        generator_factory: GeneratorFactory | None = None,
    ) -> None:
        self.agent = agent
        self.generator: Any
        if generator_factory is not None:
            self.generator = generator_factory()
            self.context_len: int | None = getattr(self.generator, "context_len", None)
        elif spec is not None:
            self.generator, self.context_len = _build(spec, num_cpus)
        else:
            raise ValueError("AgentServer needs an EngineSpec or a generator_factory")
        self.tokenizer = getattr(self.generator, "tokenizer", None)
        batcher: Any = self._generate_batch  # serve.batch's wrapper carries its setters
        batcher.set_max_batch_size(max_batch_size)
        batcher.set_batch_wait_timeout_s(batch_wait_s)

    def _budget(self, chat: list[Message], params: GenerationParams) -> GenerationParams | str:
        """The params with ``max_new_tokens`` cut to the room left in the context, or why there is none."""
        if self.context_len is None or self.tokenizer is None:
            return params
        text = render_chat(self.tokenizer, chat)
        used = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        room = self.context_len - used
        if room < 1:
            return (
                f"the {self.agent} agent's input is {used} tokens; its context holds {self.context_len} "
                "(shorten the messages)"
            )
        if params.max_new_tokens <= room:
            return params
        return GenerationParams(room, params.temperature, params.top_p, params.seed)

    async def generate(self, chat: list[Message], params: GenerationParams) -> AgentReply:
        budget = self._budget(chat, params)
        if isinstance(budget, str):
            return AgentReply(error=budget)
        completion = await self._generate_batch((chat, budget))
        return AgentReply(completion=completion)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _generate_batch(self, items: list[tuple[list[Message], GenerationParams]]) -> list[Completion]:
        """Requests with equal sampling settings go through the engine together; results keep the input order."""
        groups: dict[GenerationParams, list[int]] = {}
        for index, (_, params) in enumerate(items):
            groups.setdefault(params, []).append(index)
        out: list[Completion | None] = [None] * len(items)
        for params, indices in groups.items():
            chats: Sequence[list[Message]] = [items[i][0] for i in indices]
            completions = await asyncio.to_thread(self.generator.generate, chats, params)
            for index, completion in zip(indices, completions, strict=True):
                out[index] = completion
        return [c for c in out if c is not None]

    def ping(self) -> dict[str, Any]:
        return {"agent": self.agent, "policy_version": int(getattr(self.generator, "policy_version", 0))}

    def check_health(self) -> None:
        """Serve's periodic health check: a replica whose engine is gone is replaced."""
        if getattr(self.generator, "llm", True) is None:  # a closed VLLMGenerator
            raise RuntimeError(f"the {self.agent} agent's engine is closed")
