"""The learner seam: TorchLearner, DeepSpeedLearner and RemoteLearnerGroup are ``Learner``s (runtime-checkable
Protocol, same parameter names), the Ray learner hosts expose the methods the runtime calls by delegating to their
learner, and a learner picks the KL estimator from the registry (k3 where the KL is in the loss, k1 refused there)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch

from waltz_ray.config import AlgorithmConfig, LearnerConfig
from waltz_ray.engines.base import Learner
from waltz_ray.engines.deepspeed_learner import DeepSpeedLearner, LearnerWorker
from waltz_ray.engines.learner import LEARNER_STATE, TorchLearner, kl_settings, make_batch
from waltz_ray.runtime.actors import DeepSpeedLearnerHost, TorchLearnerHost
from waltz_ray.runtime.proxies import Pool, RemoteLearnerGroup
from waltz_ray.types import Completion
from waltz_ray.worlds.tiny.model import build_tiny_model, tiny_llama_config

PROTOCOL_METHODS = ("logprobs", "update", "save_pretrained", "save_state", "load_state")
# What runtime/driver.py, weight_sync.py, topology.py and checkpoint code call on a learner actor.
HOST_METHODS = (
    "get_policy_version",
    "logprobs",
    "update",
    "state_dict_for_sync",
    "save_pretrained",
    "save_state",
    "load_state",
    "master_address",
    "nccl",
)


def tiny_model(seed: int = 0) -> Any:
    return build_tiny_model(tiny_llama_config(96, 64, 1, {"bos": 1, "eos": 2, "pad": 0}), seed=seed)


def torch_learner(**algorithm: Any) -> TorchLearner:
    return TorchLearner(tiny_model(), tiny_model(), LearnerConfig(lr=1e-3), AlgorithmConfig(**algorithm))


def batch_and_advantages() -> tuple[Any, torch.Tensor]:
    rows = [((5, 6, 7), (11, 12, 2)), ((5, 6), (13, 14))]
    batch = make_batch([Completion(text="", prompt_token_ids=s, token_ids=a) for s, a in rows], 0)
    return batch, torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0], [0.0, -1.0, -1.0, 0.0, 0.0]])


def parameters(fn: Any) -> list[str]:
    """The parameter names, without ``self`` and without the ``_ray_trace_ctx`` that Ray adds to the methods of a
    class once it has been made an actor class in this process (an earlier test may have done so)."""
    return [name for name in inspect.signature(fn).parameters if name != "self" and not name.startswith("_ray_")]


@pytest.mark.parametrize("cls", [TorchLearner, DeepSpeedLearner, RemoteLearnerGroup])
def test_learners_have_the_protocol_methods_with_its_parameter_names(cls: type) -> None:
    for name in PROTOCOL_METHODS:
        assert parameters(getattr(cls, name)) == parameters(getattr(Learner, name)), f"{cls.__name__}.{name}"


def test_learners_are_learners() -> None:
    assert isinstance(torch_learner(), Learner)
    assert isinstance(RemoteLearnerGroup(Pool("feedback_learner", []), timeout_s=1.0), Learner)
    # A DeepSpeedLearner needs a torch.distributed group to build (engines/test_deepspeed_learner.py builds real ones);
    # the Protocol check needs only its methods and the version its constructor sets.
    deepspeed = object.__new__(DeepSpeedLearner)
    deepspeed.policy_version = 0
    assert isinstance(deepspeed, Learner)


@pytest.mark.parametrize("cls", [TorchLearnerHost, DeepSpeedLearnerHost])
def test_hosts_expose_what_the_runtime_calls(cls: type) -> None:
    for name in HOST_METHODS:
        assert callable(getattr(cls, name, None)), f"{cls.__name__}.{name}"
    for name in ("logprobs", "update", "save_pretrained", "save_state", "load_state"):
        assert parameters(getattr(cls, name)) == parameters(getattr(Learner, name)), f"{cls.__name__}.{name}"
    if cls is DeepSpeedLearnerHost:
        for name in ("pick_master_port", "setup", "save_checkpoint", "load_checkpoint"):
            assert callable(getattr(cls, name, None)), name


def test_a_host_before_its_learner_is_built_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"LearnerWorker: setup\(\) has not been called"):
        LearnerWorker().get_policy_version()


def test_torch_host_delegates_to_its_learner_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TorchLearnerHost as the actor would run it (no Ray): update, sync dict, save_state, then a resumed host."""
    import waltz_ray.engines.hf as hf

    monkeypatch.setattr(hf, "load_model_and_tokenizer", lambda path, dtype="float32": (tiny_model(), None))
    build = {"learner": LearnerConfig(lr=1e-3), "algorithm": AlgorithmConfig(), "num_cpus": 1.0}
    host = TorchLearnerHost("unused", "float32", **build)  # type: ignore[arg-type]
    assert isinstance(host.learner, TorchLearner) and host.get_policy_version() == 0
    batch, advantages = batch_and_advantages()
    old, ref = host.logprobs(batch)
    assert old is not None and ref is not None and old.shape == batch.action_mask.shape
    stats = host.update(batch, old, ref, advantages)
    assert not stats.skipped and host.get_policy_version() == host.policy_version == 1
    state = host.state_dict_for_sync()
    assert set(state) == set(host.learner.policy.state_dict())
    assert all(not t.requires_grad for t in state.values())
    assert host.save_state(str(tmp_path)) == str(tmp_path)
    assert (tmp_path / LEARNER_STATE).is_file() and (tmp_path / "config.json").is_file()
    resumed = TorchLearnerHost(str(tmp_path), "float32", resume=True, **build)  # type: ignore[arg-type]
    assert resumed.get_policy_version() == 1
    assert host.load_state(str(tmp_path)) == str(tmp_path)


def test_kl_in_the_loss_defaults_to_k3() -> None:
    """grpo/rloo put the KL into the loss; there the field's default k1 would regularise nothing (tests/core)."""
    for name in ("grpo", "rloo"):
        algorithm = AlgorithmConfig(advantage_estimator=name, samples_per_prompt=2)
        assert kl_settings(algorithm) == (True, "k3")
        assert torch_learner(advantage_estimator=name, samples_per_prompt=2).kl_estimator == "k3"
        explicit = AlgorithmConfig(advantage_estimator=name, samples_per_prompt=2, kl_estimator="k2")
        assert kl_settings(explicit) == (True, "k2")
    assert kl_settings(AlgorithmConfig()) == (False, "k1")  # REINFORCE++: k1 folded into the return, unchanged
    assert kl_settings(AlgorithmConfig(kl_estimator="k3")) == (False, "k3")


@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_a_configured_k1_in_the_loss_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"algorithm\.kl_estimator k1"):
        torch_learner(advantage_estimator=name, samples_per_prompt=2, kl_estimator="k1")
    with pytest.raises(ValueError, match=r"algorithm\.kl_estimator k1"):
        kl_settings(AlgorithmConfig(advantage_estimator=name, samples_per_prompt=2, kl_estimator="k1"))
    # without a KL term there is nothing to refuse
    assert torch_learner(advantage_estimator=name, samples_per_prompt=2, kl_estimator="k1", kl_coef=0.0)
