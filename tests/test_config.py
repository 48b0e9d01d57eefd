"""The config tree: how a run's settings are loaded, overridden, validated and saved.

Read top to bottom, these tests document the behaviour: ``configs/tiny.yaml`` is a complete config, every field is
documented, ``--set section.field=value`` overrides are typed, and every mistake is reported by its dotted field name
together with what the field allows, before anything starts running.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from waltz_ray.config import (
    ConfigError,
    WaltzConfig,
    build_config,
    load_config,
    parse_override,
    save_config,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def _fields(model: type[BaseModel], prefix: str = ""):
    """Yield ``(dotted name, FieldInfo)`` for every field of ``model`` and, recursively, of its sections."""
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        yield dotted, field
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _fields(annotation, f"{dotted}.")


def _error(overrides: list[str] | None = None, tree: dict | None = None) -> str:
    """The message of the ConfigError raised by building this config (fails the test if it builds)."""
    with pytest.raises(ConfigError) as info:
        build_config(tree, overrides)
    return str(info.value)


# --- loading and documentation -------------------------------------------------------------------------------------


def test_tiny_yaml_loads_with_its_values():
    config = load_config(TINY)
    assert isinstance(config, WaltzConfig)
    assert config.agents.conversation.model_path == "tiny://instruct"
    assert config.agents.conversation.generation.max_new_tokens == 24
    assert config.agents.feedback.generation.max_new_tokens == 64
    assert config.learner.lr == pytest.approx(1e-4)
    assert config.stages.stage1_steps == 40
    assert config.reward.label_weight_stage2 == pytest.approx(0.2)
    assert config.runtime.mode == "ray" and config.runtime.max_staleness == 1
    assert config.runtime.reference_on == "rollout"
    assert config.algorithm.off_policy_correction == "truncated_is"
    # fields the file leaves out keep their defaults
    assert config.checkpoint.keep_last == WaltzConfig().checkpoint.keep_last


def test_every_field_of_every_section_has_a_docstring():
    """Attribute docstrings become ``field.description`` (``use_attribute_docstrings=True``): one per field."""
    fields = dict(_fields(WaltzConfig))
    assert "agents.feedback.generation.max_new_tokens" in fields  # the walk reaches nested sections
    undocumented = [name for name, field in fields.items() if not (field.description or "").strip()]
    assert undocumented == []


def test_defaults_build_without_a_file():
    assert build_config() == WaltzConfig()
    assert load_config(None) == WaltzConfig()
    config = build_config()
    assert config.rollout.t_max == 1
    assert config.judge.kind == "rule"
    assert config.algorithm.advantage_estimator == "reinforce_pp"


# --- overrides -----------------------------------------------------------------------------------------------------


def test_override_int():
    config = load_config(TINY, ["rollout.t_max=2"])
    assert config.rollout.t_max == 2
    assert isinstance(config.rollout.t_max, int)


def test_override_floats():
    config = build_config(overrides=["learner.lr=5.0e-7", "rollout.mix_prob_b=0.25", "learner.weight_decay=1e-2"])
    assert config.learner.lr == pytest.approx(5e-7)
    assert config.rollout.mix_prob_b == 0.25
    assert config.learner.weight_decay == pytest.approx(0.01)


def test_override_booleans_and_null():
    config = build_config(
        overrides=["logging.progress=false", "agents.conversation.system_prompt=null", "data.eval_limit=null"]
    )
    assert config.logging.progress is False
    assert config.agents.conversation.system_prompt is None
    assert config.data.eval_limit is None
    assert build_config(overrides=["logging.progress=true"]).logging.progress is True


def test_override_nested_section():
    config = load_config(TINY, ["agents.feedback.generation.max_new_tokens=32"])
    assert config.agents.feedback.generation.max_new_tokens == 32
    # siblings from the file are untouched
    assert config.agents.feedback.model_path == "tiny://instruct"
    assert config.agents.conversation.generation.max_new_tokens == 24


def test_override_value_is_split_at_the_first_equals_sign():
    assert parse_override("data.train=path/with=sign.jsonl") == ("data.train", "path/with=sign.jsonl")
    config = build_config(overrides=["agents.conversation.system_prompt=answer if x=1"])
    assert config.agents.conversation.system_prompt == "answer if x=1"


def test_override_plain_text_is_taken_literally():
    """Text that YAML would turn into a mapping (``a: b``) or cut at a comment (`` #``) stays the string typed."""
    prompt = "Note: be brief #1"
    config = build_config(overrides=[f"agents.conversation.system_prompt={prompt}"])
    assert config.agents.conversation.system_prompt == prompt


def test_override_lists_and_quoted_strings_are_yaml():
    config = build_config(overrides=["learner.betas=[0.8, 0.95]", "data.train='123'"])
    assert config.learner.betas == (0.8, 0.95)
    assert config.data.train == "123"


def test_later_overrides_win_and_the_input_tree_is_not_modified():
    tree = {"rollout": {"t_max": 1}}
    config = build_config(tree, ["rollout.t_max=2", "rollout.t_max=3"])
    assert config.rollout.t_max == 3
    assert tree == {"rollout": {"t_max": 1}}


# --- errors name the field and what it allows ----------------------------------------------------------------------


def test_out_of_range_names_field_and_range():
    with pytest.raises(ConfigError) as info:
        load_config(TINY, ["rollout.t_max=0"])
    message = str(info.value)
    assert "rollout.t_max" in message
    assert "greater than or equal to 1" in message
    assert str(TINY) in message  # and where the config came from


def test_above_range_names_the_upper_bound():
    message = _error(["rollout.t_max=9"])
    assert "rollout.t_max" in message
    assert "less than or equal to 8" in message


def test_unknown_field_is_named():
    message = _error(tree={"rollout": {"t_maxx": 2}})
    assert "rollout.t_maxx" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_field_in_yaml_file_is_named(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("learner:\n  lrr: 0.1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "learner.lrr" in str(info.value)
    assert "Extra inputs are not permitted" in str(info.value)


def test_wrong_type_is_named():
    message = _error(["rollout.t_max=two"])
    assert "rollout.t_max" in message
    assert "valid integer" in message
    assert "'two'" in message


def test_unknown_section_in_override_is_named():
    message = _error(["rolout.t_max=2"])
    assert "rolout" in message
    assert "Extra inputs are not permitted" in message


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match=r"section\.field=value"):
        build_config(overrides=["rollout.t_max"])
    with pytest.raises(ConfigError, match=r"section\.field=value"):
        parse_override("=2")


def test_override_cannot_descend_into_a_value():
    for source in (None, TINY):  # whether or not the file sets the value
        with pytest.raises(ConfigError) as info:
            load_config(source, ["seed.x=1"])
        assert "seed is a value, not a section" in str(info.value)
    with pytest.raises(ConfigError, match=r"learner\.betas is a value"):
        build_config(overrides=["learner.betas.first=0.5"])


def test_yaml_with_a_list_at_top_level(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- seed: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping at the top level, not list"):
        load_config(path)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("rollout: {t_max: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid YAML" in str(info.value)
    assert str(path) in str(info.value)


def test_empty_yaml_means_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n", encoding="utf-8")
    assert load_config(path) == WaltzConfig()


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not found" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_advantage_estimator_lists_valid_names():
    message = _error(["algorithm.advantage_estimator=ppo"])
    assert "algorithm.advantage_estimator" in message
    assert "'ppo'" in message
    for name in ("reinforce_pp", "grpo", "rloo"):
        assert name in message


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_group_estimators_need_two_samples_per_prompt(estimator):
    message = _error([f"algorithm.advantage_estimator={estimator}"])
    assert "algorithm.samples_per_prompt must be >= 2" in message
    config = build_config(overrides=[f"algorithm.advantage_estimator={estimator}", "algorithm.samples_per_prompt=4"])
    assert config.algorithm.samples_per_prompt == 4


def test_http_judge_needs_base_url_and_model():
    message = _error(["judge.kind=http"])
    assert "judge.base_url and judge.model are required" in message
    assert "judge" in message
    _error(["judge.kind=http", "judge.base_url=http://127.0.0.1:8000/v1"])  # model still missing
    config = build_config(overrides=["judge.kind=http", "judge.base_url=http://127.0.0.1:8000/v1", "judge.model=m"])
    assert config.judge.base_url == "http://127.0.0.1:8000/v1"


def test_llm_judge_needs_a_model_path():
    assert "judge.model_path is required" in _error(["judge.kind=llm"])


def test_several_errors_are_all_listed():
    message = _error(
        [
            "rollout.t_max=0",
            "learner.lr=-1",
            "runtime.mode=cluster",
            "algorithm.advantage_estimator=ppo",
            "tiny.hiden_size=64",
        ]
    )
    for name in (
        "rollout.t_max",
        "learner.lr",
        "runtime.mode",
        "algorithm.advantage_estimator",
        "tiny.hiden_size",
    ):
        assert name in message
    assert "'ray' or 'inline'" in message  # a Literal lists its choices
    assert len(message.splitlines()) == 1 + 5  # a header line, then one line per error


def test_assignment_is_validated_too():
    config = build_config()
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        config.rollout.t_max = 0


# --- saving --------------------------------------------------------------------------------------------------------


def test_save_config_round_trips(tmp_path):
    config = load_config(TINY, ["rollout.t_max=2", "learner.betas=[0.8, 0.95]", "agents.feedback.system_prompt=null"])
    path = tmp_path / "config.yaml"
    save_config(config, path)
    again = load_config(path)
    assert again.model_dump() == config.model_dump()
    assert again == config
    # the saved file is the resolved tree: defaults the source left out are written too
    saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert saved["checkpoint"]["keep_last"] == config.checkpoint.keep_last


def test_saved_config_holds_no_secrets(tmp_path, monkeypatch):
    """The http judge's key lives in an env var; the config (and so the saved file) stores only the var's name."""
    monkeypatch.setenv("WALTZ_JUDGE_API_KEY", "canary-123")
    config = build_config(
        overrides=["judge.kind=http", "judge.base_url=http://127.0.0.1:8000/v1", "judge.model=judge-model"]
    )
    path = tmp_path / "config.yaml"
    save_config(config, path)
    text = path.read_text(encoding="utf-8")
    assert "canary-123" not in text
    assert "WALTZ_JUDGE_API_KEY" in text
    assert load_config(path) == config


# --- the command line ----------------------------------------------------------------------------------------------


def test_cli_reports_config_errors_without_training(tmp_path, capsys, monkeypatch):
    def _must_not_run(*args, **kwargs):
        raise AssertionError("training started despite an invalid config")

    # a stand-in for the (heavy) training module: reaching it would fail the test
    monkeypatch.setitem(sys.modules, "waltz_ray.trainer.inline", types.SimpleNamespace(train=_must_not_run))
    from waltz_ray.cli import main

    out = tmp_path / "run"
    code = main(["train", "--config", str(TINY), "--out", str(out), "--set", "rollout.t_max=0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "rollout.t_max" in err
    assert "greater than or equal to 1" in err
    assert not out.exists()


def test_setting_one_field_of_a_light_pool_keeps_its_other_defaults() -> None:
    assert load_config(None).runtime.judge_pool.num_cpus == 0.1
    config = load_config(None, ["runtime.judge_pool.num_actors=2", "runtime.reference_pool.num_gpus=0"])
    assert (config.runtime.judge_pool.num_actors, config.runtime.judge_pool.num_cpus) == (2, 0.1)
    assert config.runtime.reference_pool.num_cpus == 0.1
    assert config.runtime.conversation_pool.num_cpus == 0.25


# --- retired names, refused knobs, the KL estimator ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("alpha", "dir_weight"),
        ("lambda_stage1", "label_weight_stage1"),
        ("lambda_stage2", "label_weight_stage2"),
        ("gamma", "format_weight"),
    ],
)
def test_renamed_reward_weights_fail_loudly_with_the_new_name(old: str, new: str) -> None:
    # an old YAML file must not load with the weight silently back at its default
    message = _error([f"reward.{old}=0.5"])
    assert f"reward.{old} was renamed to reward.{new}" in message
    message = _error(tree={"reward": {old: 0.5}})
    assert f"reward.{new}" in message
    assert getattr(build_config(overrides=[f"reward.{new}=0.5"]).reward, new) == 0.5


def test_reward_weights_keep_the_papers_symbols_in_their_docs() -> None:
    fields = WaltzConfig.model_fields["reward"].annotation.model_fields  # type: ignore[union-attr]
    assert "alpha" in fields["dir_weight"].description
    assert "lambda" in fields["label_weight_stage1"].description
    assert "lambda" in fields["label_weight_stage2"].description
    assert "gamma" in fields["format_weight"].description


def test_unread_learner_optimizer_is_gone() -> None:
    assert "optimizer" not in WaltzConfig.model_fields["learner"].annotation.model_fields  # type: ignore[union-attr]
    assert "learner.optimizer was removed" in _error(["learner.optimizer=adamw"])


def test_learner_pool_has_no_actor_count_of_its_own() -> None:
    # learner.num_workers decides how many learner ranks there are; a learner_pool.num_actors would be ignored
    message = _error(["runtime.learner_pool.num_actors=4"])
    assert "runtime.learner_pool.num_actors" in message and "learner.num_workers" in message
    assert "num_actors" not in load_config(None).runtime.learner_pool.model_dump()


@pytest.mark.parametrize("pool", ["judge_pool", "reference_pool", "learner_pool"])
def test_tensor_parallel_size_only_on_generation_pools(pool: str) -> None:
    message = _error([f"runtime.{pool}.tensor_parallel_size=2"])
    assert f"runtime.{pool}" in message and "tensor_parallel_size applies only to the generation pools" in message


def test_tensor_parallel_size_needs_the_vllm_engine() -> None:
    message = _error(["runtime.conversation_pool.tensor_parallel_size=2"])
    assert "runtime.conversation_pool.tensor_parallel_size is 2 but agents.conversation.engine is 'hf'" in message
    config = build_config(
        overrides=["runtime.conversation_pool.tensor_parallel_size=2", "agents.conversation.engine=vllm"]
    )
    assert config.runtime.conversation_pool.tensor_parallel_size == 2


def test_zero_stage_needs_deepspeed() -> None:
    assert "learner.zero_stage 3 needs learner.backend deepspeed" in _error(["learner.zero_stage=3"])
    assert build_config(overrides=["learner.zero_stage=3", "learner.backend=deepspeed"]).learner.zero_stage == 3


@pytest.mark.parametrize(
    ("estimator", "kl"), [("reinforce_pp", "k1"), ("reinforce++", "k1"), ("grpo", "k3"), ("rloo", "k3")]
)
def test_kl_estimator_default_follows_where_the_kl_goes(estimator: str, kl: str) -> None:
    overrides = [f"algorithm.advantage_estimator={estimator}", "algorithm.samples_per_prompt=2"]
    assert build_config(overrides=overrides).algorithm.kl_estimator == kl
    assert build_config(overrides=[*overrides, "algorithm.kl_estimator=null"]).algorithm.kl_estimator == kl
    assert load_config(TINY, overrides).algorithm.kl_estimator == kl  # the shipped configs leave it to the default


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_k1_is_refused_where_the_kl_is_in_the_loss(estimator: str) -> None:
    overrides = [f"algorithm.advantage_estimator={estimator}", "algorithm.samples_per_prompt=2"]
    message = _error([*overrides, "algorithm.kl_estimator=k1"])
    assert f"algorithm.kl_estimator k1 cannot be used with algorithm.advantage_estimator {estimator}" in message
    assert "expected gradient on the policy's own samples is zero" in message
    assert build_config(overrides=[*overrides, "algorithm.kl_estimator=k2"]).algorithm.kl_estimator == "k2"
    # without a KL term the estimator is never used
    no_kl = build_config(overrides=[*overrides, "algorithm.kl_estimator=k1", "algorithm.kl_coef=0"])
    assert no_kl.algorithm.kl_estimator == "k1"


def test_saved_config_holds_the_resolved_kl_estimator(tmp_path: Path) -> None:
    config = build_config(overrides=["algorithm.advantage_estimator=grpo", "algorithm.samples_per_prompt=2"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").algorithm.kl_estimator == "k3"


def test_a_config_saved_by_an_older_version_still_loads_as_saved(tmp_path: Path, caplog) -> None:
    # what save_config wrote before the renames: every field, the retired ones included
    tree = load_config(TINY).model_dump(mode="json")
    tree["reward"] = {"alpha": 0.5, "lambda_stage1": 0.7, "lambda_stage2": 0.2, "gamma": 0.3}
    tree["learner"]["optimizer"] = "adamw"
    tree["runtime"]["learner_pool"].update(num_actors=1, tensor_parallel_size=1)
    tree["runtime"]["judge_pool"]["tensor_parallel_size"] = 1
    tree["runtime"]["reference_pool"]["tensor_parallel_size"] = 1
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"reward\.alpha was renamed to reward\.dir_weight"):
        load_config(path)  # a config a person writes fails loudly
    with caplog.at_level("WARNING", logger="waltz_ray.config"):
        config = load_config(path, saved=True)
    reward = config.reward
    assert (reward.dir_weight, reward.label_weight_stage1, reward.label_weight_stage2, reward.format_weight) == (
        0.5,
        0.7,
        0.2,
        0.3,
    )
    assert "reward.gamma -> reward.format_weight" in caplog.text
    assert "dropped runtime.learner_pool.num_actors=1" in caplog.text
    assert load_config(TINY, saved=True) == load_config(TINY)  # nothing to migrate in a current one
