"""Config sections of training: data, rollout, reward, algorithm, learner, stages, logging, checkpoints."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from waltz_ray.config.base import _Section


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
