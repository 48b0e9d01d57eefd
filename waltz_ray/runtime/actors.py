"""Plain classes that live inside Ray actors: generation, reference and learner hosts (the judge and rollout hosts,
which hold no model, are in ``runtime.hosts`` and re-exported here).

Every host answers ``memory()`` (its process's peak and current RSS, ``waltz_ray.memory``), which the driver logs
as ``memory/<pool label>_peak_rss_mb`` (``runtime.memory.MemoryProbe``).

Nothing here is decorated: ``topology.build_topology`` wraps them with ``ray.remote(num_cpus=..., num_gpus=...)``.
Each host builds its engine from a checkpoint path inside the actor, so no model ever travels by value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from waltz_ray.config import AlgorithmConfig, LearnerConfig
from waltz_ray.engines.deepspeed_learner import LearnerWorker
from waltz_ray.engines.distributed import free_port
from waltz_ray.engines.learner import LearnerHost
from waltz_ray.memory import ReportsMemory
from waltz_ray.runtime.hosts import JudgeHost, RolloutHost, RolloutSummary
from waltz_ray.runtime.nccl import NCCL_EXTENSION, Bucket, NCCLSender
from waltz_ray.runtime.proxies import StaleWeightsError
from waltz_ray.types import Completion, GenerationParams, Message


def set_threads(num_threads: int | None, num_cpus: float) -> None:
    """torch intra-op threads: the configured number, else the actor's CPU share (at least one)."""
    import torch

    torch.set_num_threads(num_threads or max(1, int(num_cpus)))


def node_address() -> tuple[str, int]:
    """This actor's node IP and a free port on it (rank 0 hands them to the other ranks)."""
    import ray

    return ray.util.get_node_ip_address(), free_port()  # type: ignore[no-untyped-call]


class GeneratorHost(ReportsMemory):
    """One generation actor: ``HFGenerator`` or ``VLLMGenerator`` by the agent's ``engine``."""

    def __init__(
        self,
        engine: str,
        model_path: str,
        dtype: str,
        *,
        num_threads: int | None = None,
        num_cpus: float = 1.0,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        nccl: bool = False,
        policy_version: int = 0,
        max_model_len: int = 1024,
        gpu_memory_utilization: float = 0.5,
    ) -> None:
        """``policy_version``: the version of the weights at ``model_path`` (a resume point's, else 0)."""
        set_threads(num_threads, num_cpus)
        self.generator: Any
        if engine == "hf":
            from waltz_ray.engines.hf import HFGenerator

            self.generator = HFGenerator.from_pretrained(model_path, dtype)
        else:
            from waltz_ray.engines.vllm_engine import VLLMGenerator

            kwargs: dict[str, Any] = {"worker_extension_cls": NCCL_EXTENSION} if nccl else {}
            if tensor_parallel_size > 1:  # all tensor-parallel ranks live on this actor's GPUs
                kwargs["distributed_executor_backend"] = "mp"
            self.generator = VLLMGenerator(
                model_path,
                dtype=dtype,
                tensor_parallel_size=tensor_parallel_size,
                seed=seed,
                max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                **kwargs,
            )
        self.generator.policy_version = policy_version

    def get_policy_version(self) -> int:
        return int(self.generator.policy_version)

    def generate(
        self, chats: Sequence[Sequence[Message]], params: GenerationParams, min_version: int = 0
    ) -> list[Completion]:
        """Refuses (``StaleWeightsError``) while this actor holds weights older than ``min_version``: a restarted
        actor takes no work until the driver has pushed the current weights to it."""
        version = int(self.generator.policy_version)
        if version < min_version:
            raise StaleWeightsError(f"holds policy version {version}, the rollout needs {min_version}")
        return self.generator.generate(chats, params)  # type: ignore[no-any-return]

    def load_state_dict(self, state: dict[str, Any], policy_version: int) -> int:
        self.generator.load_state_dict(state, policy_version)
        return policy_version

    def nccl_init(self, address: str, port: int, rank_offset: int, world_size: int) -> list[int]:
        return self.generator.llm.collective_rpc(  # type: ignore[no-any-return]
            "init_weight_group", args=(address, port, rank_offset, world_size)
        )

    def nccl_receive(self, buckets: list[Bucket], policy_version: int) -> int:
        self.generator.llm.collective_rpc("receive_weight_buckets", args=(buckets,))
        self.generator.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self.generator.policy_version = policy_version
        return policy_version


class ReferenceHost(ReportsMemory):
    """One reference-scoring actor (``runtime.reference_on: rollout``): the agent's frozen reference model."""

    def __init__(
        self,
        model_path: str,
        dtype: str,
        micro_batch_size: int,
        *,
        from_first_action: bool = True,
        num_threads: int | None = None,
        num_cpus: float = 1.0,
    ) -> None:
        set_threads(num_threads, num_cpus)
        from waltz_ray.engines.hf import load_model_and_tokenizer
        from waltz_ray.engines.learner import ReferenceScorer

        model, tokenizer = load_model_and_tokenizer(model_path, dtype)
        self.scorer = ReferenceScorer(model, tokenizer.pad_token_id, micro_batch_size, from_first_action)

    def ready(self) -> bool:
        return True

    def score(self, completions: list[Completion]) -> list[Completion]:
        return self.scorer.score(completions)


class LearnerSender(ReportsMemory):
    """What a learner actor adds to its ``LearnerHost``: its node's rendezvous address and the sending end of the
    NCCL weight sync (rank 0)."""

    def __init__(self) -> None:
        self.sender = NCCLSender()

    def master_address(self) -> tuple[str, int]:
        return node_address()

    def nccl(self, method: str, *args: Any) -> Any:
        """NCCL weight sync, sending end (rank 0): ``init`` / ``plan`` / ``broadcast`` of ``NCCLSender``."""
        return getattr(self.sender, method)(*args)


class TorchLearnerHost(LearnerSender, LearnerHost):
    """A ``TorchLearner`` (policy + frozen reference + AdamW) loaded inside the actor; the torch backend's group.
    The learner methods (``logprobs``, ``update``, ``state_dict_for_sync``, saving) are ``LearnerHost``'s."""

    def __init__(
        self,
        model_path: str,
        dtype: str,
        learner: LearnerConfig,
        algorithm: AlgorithmConfig,
        *,
        num_threads: int | None = None,
        num_cpus: float = 1.0,
        reference_path: str | None = None,
        resume: bool = False,
    ) -> None:
        """The policy from ``model_path``, the reference from ``reference_path`` (default: the same); ``resume``:
        ``model_path`` is a checkpoint's agent folder, whose optimizer state and policy version are restored."""
        set_threads(num_threads, num_cpus)
        super().__init__()
        from waltz_ray.engines.hf import load_model_and_tokenizer
        from waltz_ray.engines.learner import TorchLearner

        policy, _ = load_model_and_tokenizer(model_path, dtype)
        reference, _ = load_model_and_tokenizer(reference_path or model_path, dtype)
        self.learner = TorchLearner(policy, reference, learner, algorithm)
        if resume:
            self.learner.load_state(model_path)


class DeepSpeedLearnerHost(LearnerSender, LearnerWorker):
    """A ``LearnerWorker`` rank plus the NCCL sender methods (its saves are collective: every rank calls them)."""

    def __init__(self, *, num_threads: int | None = None, num_cpus: float = 1.0) -> None:
        set_threads(num_threads, num_cpus)
        LearnerSender.__init__(self)
        LearnerWorker.__init__(self)


__all__ = [
    "DeepSpeedLearnerHost",
    "GeneratorHost",
    "JudgeHost",
    "ReferenceHost",
    "RolloutHost",
    "RolloutSummary",
    "TorchLearnerHost",
]
