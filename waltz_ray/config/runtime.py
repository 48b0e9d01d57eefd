"""Config sections of where the work runs: the judge, the Ray actor pools and runtime, and serving."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from waltz_ray.config.base import _Section


class JudgeConfig(_Section):
    kind: Literal["rule", "llm", "http"] = "rule"
    """rule: dataset label + refusal detector; llm: a local generator with the judge prompt; http: OpenAI-compatible."""
    model_path: str | None = None
    """Model for the ``llm`` judge (checkpoint directory, hub id, ``tiny://`` or ``smol://`` path)."""
    base_url: str | None = None
    """Base URL of the OpenAI-compatible endpoint for the ``http`` judge, e.g. http://127.0.0.1:8000/v1."""
    model: str | None = None
    """Model name sent to the ``http`` judge."""
    api_key_env: str = "WALTZ_JUDGE_API_KEY"
    """Environment variable holding the ``http`` judge's API key (the key itself is never stored in the config)."""
    api_key_file: str | None = None
    """File holding the ``http`` judge's API key, as an alternative to the environment variable."""
    timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    """Per-request timeout of the ``http`` judge."""
    max_retries: int = Field(2, ge=0, le=20)
    """Retries per request on connection errors, 429 and 5xx."""
    concurrency: int = Field(8, ge=1, le=1024)
    """Maximum in-flight requests to the ``http`` judge."""
    max_failure_rate: float = Field(0.1, ge=0.0, le=1.0)
    """Stop the run when the share of failed judge calls in a step exceeds this (failures are masked, not zeros)."""

    @model_validator(mode="after")
    def _needs(self) -> JudgeConfig:
        if self.kind == "llm" and not self.model_path:
            raise ValueError("judge.model_path is required when judge.kind is 'llm'")
        if self.kind == "http" and not (self.base_url and self.model):
            raise ValueError("judge.base_url and judge.model are required when judge.kind is 'http'")
        return self


_RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


class _ActorResources(_Section):
    """What each actor of a pool reserves: CPUs, GPUs and custom Ray resources."""

    num_cpus: float = Field(0.25, ge=0.0, le=1024.0)
    """CPUs per actor (fractions allowed; the sum over pools must fit the cluster or actors wait forever)."""
    num_gpus: float = Field(0.0, ge=0.0, le=8.0)
    """GPUs per actor."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources per actor, added to each actor's placement-group bundle so that the pool lands on the node
    types that advertise them, e.g. ``{generation_node: 1}`` (``cluster/README.md``); CPUs and GPUs go in
    ``num_cpus`` / ``num_gpus``. Amounts above 1 must be whole numbers (Ray's rule)."""

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, resources: dict[str, float]) -> dict[str, float]:
        for name, amount in resources.items():
            if name in _RAY_BUILTIN_RESOURCES:
                raise ValueError(f"{name!r} is not a custom resource; set it with num_cpus / num_gpus (or not at all)")
            if not math.isfinite(amount) or amount < 0:
                raise ValueError(f"resource {name!r} must be a finite amount >= 0 (got {amount})")
            if amount > 1 and amount != int(amount):
                raise ValueError(f"resource {name!r}: amounts above 1 must be whole numbers in Ray (got {amount})")
        return resources


_ONLY_GENERATION_TP = (
    "tensor_parallel_size applies only to the generation pools (runtime.conversation_pool, runtime.feedback_pool): "
    "this pool runs no vLLM engine"
)


class LightPoolConfig(_ActorResources):
    """A pool of light actors (judge, reference scoring): 0.1 CPU each unless set. A subclass rather than a
    ``default_factory``, so that setting one field (``--set runtime.judge_pool.num_actors=2``) keeps this default."""

    _retired: ClassVar[dict[str, str]] = {"tensor_parallel_size": _ONLY_GENERATION_TP}

    num_actors: int = Field(1, ge=1, le=4096)
    """Actors in this pool."""
    num_cpus: float = Field(0.1, ge=0.0, le=1024.0)
    """CPUs per actor (fractions allowed; the sum over pools must fit the cluster or actors wait forever)."""


class GenerationPoolConfig(_ActorResources):
    """The generation actors of one agent (its HF or vLLM engines)."""

    num_actors: int = Field(1, ge=1, le=4096)
    """Actors in this pool."""
    tensor_parallel_size: int = Field(1, ge=1, le=8)
    """vLLM tensor-parallel size of each actor's engine (every rank on that actor's GPUs: ``num_gpus`` >= it); the
    agent's ``engine`` must be vllm when it is above 1."""


class LearnerPoolConfig(_ActorResources):
    """What each learner rank reserves. How many ranks there are is ``learner.num_workers`` per agent, so this
    section has no ``num_actors``."""

    _retired: ClassVar[dict[str, str]] = {
        "num_actors": (
            "runtime.learner_pool.num_actors is not a setting: learner.num_workers sets the learner ranks per agent "
            "(one learner group per agent); set that instead"
        ),
        "tensor_parallel_size": _ONLY_GENERATION_TP,
    }


class RuntimeConfig(_Section):
    mode: Literal["ray", "inline"] = "ray"
    """ray: actor pools on a Ray cluster (joins ``$RAY_ADDRESS`` or starts a local one); inline: everything in one
    process (debugging, exactness checks; ``--runtime inline``)."""
    max_staleness: int = Field(0, ge=0, le=64)
    """Maximum policy versions a training sample may lag behind its learner (0 = fully synchronous)."""
    conversation_pool: GenerationPoolConfig = Field(default_factory=GenerationPoolConfig)
    """Generation actors of the conversation agent."""
    feedback_pool: GenerationPoolConfig = Field(default_factory=GenerationPoolConfig)
    """Generation actors of the feedback agent."""
    judge_pool: LightPoolConfig = Field(default_factory=LightPoolConfig)
    """Judge actors."""
    learner_pool: LearnerPoolConfig = Field(default_factory=LearnerPoolConfig)
    """What each learner rank reserves; ``learner.num_workers`` ranks per agent (one group each for conversation and
    feedback)."""
    reference_on: Literal["learner", "rollout"] = "learner"
    """Where the frozen reference model scores the sampled tokens (for the KL term). learner: inside each learner
    group, before its update; rollout: in a reference pool per agent, right after generation, so with
    ``max_staleness`` > 0 that work overlaps the updates (OpenRLHF-style) and the learner side gets shorter."""
    reference_pool: LightPoolConfig = Field(default_factory=LightPoolConfig)
    """Reference-model scoring actors per agent (only with ``reference_on: rollout``)."""
    concurrent_updates: bool = True
    """Stage 2: issue both agents' learner-group calls (log-probs, update) at once and wait for both, since the two
    groups are independent actors; false: one group after the other. The same results either way (only the order
    of the remote calls differs); the inline runtime always updates one agent after the other."""
    rollout_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources for the rollout actor (it reserves no CPU): pin it to a node that stays, e.g. the head
    or an on-demand learner node, not a spot node (``cluster/README.md``)."""
    max_actor_restarts: int = Field(3, ge=0, le=100)
    """How often Ray restarts a dead generation actor (it gets the current weights before it takes work again);
    learner, judge and rollout actors are not restarted: their death stops the run (resume from a checkpoint)."""
    remote_timeout_s: float = Field(600.0, gt=0.0)
    """Timeout for every remote wait, collective and weight sync."""
    num_threads: int | None = Field(None, ge=1, le=1024)
    """torch intra-op threads in this process; None leaves torch's default."""


class ServeAutoscalingConfig(_Section):
    enabled: bool = False
    """Let Serve scale the deployment between ``min_replicas`` and ``max_replicas`` (``num_replicas`` unused)."""
    min_replicas: int = Field(1, ge=0, le=4096)
    """Fewest replicas (0 lets an idle deployment scale to zero, at the price of a cold start)."""
    max_replicas: int = Field(2, ge=1, le=4096)
    """Most replicas."""
    target_ongoing_requests: float = Field(4.0, gt=0.0, le=10_000.0)
    """Ongoing requests per replica that Serve's autoscaler aims for."""
    upscale_delay_s: float = Field(30.0, ge=0.0, le=86_400.0)
    """How long the load must stay above target before a replica is added."""
    downscale_delay_s: float = Field(600.0, ge=0.0, le=86_400.0)
    """How long the load must stay below target before a replica is removed."""

    @model_validator(mode="after")
    def _ordered(self) -> ServeAutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class ServeDeploymentConfig(_Section):
    num_replicas: int = Field(1, ge=1, le=4096)
    """Replicas of this deployment (unused when ``autoscaling.enabled``)."""
    num_cpus: float = Field(0.25, ge=0.0, le=1024.0)
    """CPUs per replica (fractions allowed; every replica must fit the cluster or it waits forever)."""
    num_gpus: float = Field(0.0, ge=0.0, le=8.0)
    """GPUs per replica (vLLM agents on a GPU cluster: 1)."""
    max_ongoing_requests: int = Field(16, ge=1, le=100_000)
    """Requests one replica works on at once; more wait in the caller's queue."""
    max_queued_requests: int = Field(32, ge=1, le=1_000_000)
    """Requests that may wait for a replica at each caller (the HTTP proxy for the ingress, the ingress for the
    agents); beyond it the request is answered 503 at once (backpressure), never queued without bound."""
    max_batch_size: int = Field(8, ge=1, le=1024)
    """Agent deployments: concurrent requests grouped into one generate call (ignored by the ingress)."""
    autoscaling: ServeAutoscalingConfig = Field(default_factory=ServeAutoscalingConfig)
    """Serve autoscaling (off by default: ``num_replicas`` fixed)."""


class ServeIngressConfig(ServeDeploymentConfig):
    """The HTTP ingress: light (no model), so a small CPU share and a larger concurrency. A subclass rather than a
    ``default_factory`` so that setting one field keeps these defaults."""

    num_cpus: float = Field(0.1, ge=0.0, le=1024.0)
    """CPUs per replica (fractions allowed; every replica must fit the cluster or it waits forever)."""
    max_ongoing_requests: int = Field(64, ge=1, le=100_000)
    """Requests one replica works on at once; more wait in the caller's queue."""
    max_queued_requests: int = Field(64, ge=1, le=1_000_000)
    """Requests that may wait for a replica at each caller (the HTTP proxy for the ingress, the ingress for the
    agents); beyond it the request is answered 503 at once (backpressure), never queued without bound."""


class ServeConfig(_Section):
    host: str = "127.0.0.1"
    """Address the HTTP server binds to (loopback by default; 0.0.0.0 exposes it to the network)."""
    port: int = Field(8000, ge=0, le=65535)
    """HTTP port (0 picks a free one)."""
    model_name: str = Field("waltz", min_length=1, max_length=256)
    """Model id the API reports in ``/v1/models`` and expects in requests."""
    api_key_env: str = "WALTZ_SERVE_API_KEYS"
    """Environment variable holding the accepted API keys (comma-separated); the keys are never stored in a config."""
    api_key_file: str | None = None
    """File holding accepted API keys, one per line (``#`` starts a comment), in addition to ``api_key_env``."""
    require_api_key: bool = True
    """Refuse to start without at least one API key; false serves without authentication (trusted networks only)."""
    hide_feedback: bool = False
    """Leave the feedback agent's texts (reasoning and feedback) out of the ``waltz`` object; labels stay."""
    request_timeout_s: float = Field(120.0, gt=0.0, le=86_400.0)
    """Whole-request time limit (all protocol turns); past it the request is cancelled and answered 504."""
    default_temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Conversation agent temperature when a request gives none (0 = greedy, as in evaluation)."""
    max_tokens_limit: int = Field(1024, ge=1, le=32768)
    """Largest ``max_tokens`` a request may ask for; omitted, it is the conversation agent's ``max_new_tokens``."""
    max_messages: int = Field(32, ge=1, le=10_000)
    """Most messages in one request."""
    max_message_chars: int = Field(16_000, ge=1, le=10_000_000)
    """Longest message content, in characters."""
    max_total_chars: int = Field(64_000, ge=1, le=100_000_000)
    """Longest conversation (all message contents together), in characters."""
    max_body_bytes: int = Field(1_000_000, ge=1024, le=1_000_000_000)
    """Largest request body; a bigger one is answered 413 without being read."""
    batch_wait_s: float = Field(0.01, ge=0.0, le=10.0)
    """How long an agent replica waits for more requests to fill a generate batch."""
    num_threads: int | None = Field(1, ge=1, le=1024)
    """torch threads per agent replica; None uses the replica's CPU share (at least one)."""
    health_check_period_s: float = Field(10.0, gt=0.0, le=3600.0)
    """How often Serve checks each replica's health (a failing replica is replaced)."""
    health_check_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    """How long a health check may take before the replica counts as unhealthy."""
    graceful_shutdown_timeout_s: float = Field(60.0, ge=0.0, le=86_400.0)
    """On shutdown, how long replicas may finish in-flight requests before they are killed."""
    retry_after_s: float = Field(1.0, ge=0.0, le=3600.0)
    """``Retry-After`` sent with 503 backpressure answers."""
    ingress: ServeIngressConfig = Field(default_factory=ServeIngressConfig)
    """The HTTP ingress deployment (auth, validation, the protocol loop); it holds no model."""
    conversation: ServeDeploymentConfig = Field(default_factory=ServeDeploymentConfig)
    """The conversation agent's deployment (engine and dtype come from ``agents.conversation``)."""
    feedback: ServeDeploymentConfig = Field(default_factory=ServeDeploymentConfig)
    """The feedback agent's deployment (engine and dtype come from ``agents.feedback``)."""
