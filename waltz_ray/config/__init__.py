"""One typed config tree for a WaltzRL run: loaded from YAML, overridden with ``--set a.b=value``, validated on load.

Every field carries its documentation as an attribute docstring; the resolved tree is saved next to each run's output.

The sections live in ``agents``, ``training`` and ``runtime``, the saved-config migration in ``migrate``; every
public name is re-exported here, so ``from waltz_ray.config import X`` is the import to use.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from waltz_ray.config.agents import AgentConfig, AgentsConfig, GenerationConfig, TinyConfig
from waltz_ray.config.base import ConfigError, _Section
from waltz_ray.config.migrate import migrate_saved_tree
from waltz_ray.config.runtime import (
    GenerationPoolConfig,
    JudgeConfig,
    LearnerPoolConfig,
    LightPoolConfig,
    RuntimeConfig,
    ServeAutoscalingConfig,
    ServeConfig,
    ServeDeploymentConfig,
    ServeIngressConfig,
)
from waltz_ray.config.training import (
    AlgorithmConfig,
    CheckpointConfig,
    DataConfig,
    LearnerConfig,
    LoggingConfig,
    RewardConfig,
    RolloutConfig,
    StagesConfig,
)

__all__ = [
    "AgentConfig",
    "AgentsConfig",
    "AlgorithmConfig",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "GenerationConfig",
    "GenerationPoolConfig",
    "JudgeConfig",
    "LearnerConfig",
    "LearnerPoolConfig",
    "LightPoolConfig",
    "LoggingConfig",
    "RewardConfig",
    "RolloutConfig",
    "RuntimeConfig",
    "ServeAutoscalingConfig",
    "ServeConfig",
    "ServeDeploymentConfig",
    "ServeIngressConfig",
    "StagesConfig",
    "TinyConfig",
    "WaltzConfig",
    "build_config",
    "load_config",
    "migrate_saved_tree",
    "parse_override",
    "save_config",
]

log = logging.getLogger(__name__)


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
