"""The learner seam: TorchLearner, DeepSpeedLearner and RemoteLearnerGroup are ``Learner``s (runtime-checkable
Protocol, same parameter names), the Ray learner hosts expose the methods the runtime calls by delegating to their
learner, and a learner picks the KL estimator from the registry (k3 where the KL is in the loss, k1 refused there).
An on-policy update that reweights stale tokens on its own forward pass (``OffPolicy``) steps exactly as the
separate-scoring-pass path does."""

from __future__ import annotations

import inspect
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from waltz_ray.config import AlgorithmConfig, LearnerConfig
from waltz_ray.core.losses import off_policy_summary, truncated_is_weights
from waltz_ray.engines.base import Learner
from waltz_ray.engines.deepspeed_learner import DeepSpeedLearner, LearnerWorker
from waltz_ray.engines.learner import LEARNER_STATE, OffPolicy, TorchLearner, kl_settings, make_batch
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


# ------------------------------------------------------------------------------------- importance weights, fused
GRPO = {"advantage_estimator": "grpo", "samples_per_prompt": 2, "kl_coef": 0.1}


def stale_inputs(learner: TorchLearner) -> tuple[Any, torch.Tensor, torch.Tensor, OffPolicy]:
    """Four rows, micro-batches of two: rows 0 and 2 stale (their behaviour log-probs offset from the learner's by
    −1, +0.3, −0.2, ... so one weight is capped, one below 1), rows 1 and 3 current. Returns the batch, advantages,
    reference log-probs (the reference's, shifted so the KL term has a gradient) and the OffPolicy."""
    rows = [((5, 6, 7), (11, 12, 2)), ((5, 6), (13, 14)), ((9,), (20, 21, 22, 23)), ((5, 8), (30, 31))]
    batch = make_batch([Completion(text="", prompt_token_ids=s, token_ids=a) for s, a in rows], 0)
    old, ref = learner.logprobs(batch)
    assert old is not None and ref is not None
    mask = batch.action_mask
    stale = mask * torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    offsets = torch.tensor([-1.0, 0.3, -0.2, 0.5, -0.9, 0.1]).repeat(4)[: mask.numel()].reshape(mask.shape)
    behaviour = (old + offsets) * stale
    advantages = torch.tensor([[1.0], [-1.0], [0.5], [-0.5]]) * mask
    return batch, advantages, (ref - 0.2) * mask, OffPolicy(behaviour, stale, 2.0)


def test_off_policy_rows_pickle_and_validation() -> None:
    off = OffPolicy(torch.arange(6.0).reshape(3, 2), torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), 2.0)
    assert torch.equal(off.rows(slice(1, 3)).behaviour_logp, off.behaviour_logp[1:3])
    picked = off.rows(torch.tensor([2, 0]))  # DeepSpeed ranks take their rows by index tensor
    assert torch.equal(picked.stale_mask, torch.tensor([[1.0, 1.0], [1.0, 0.0]])) and picked.cap == 2.0
    again = pickle.loads(pickle.dumps(off))  # Ray sends it to the learner actors
    assert torch.equal(again.behaviour_logp, off.behaviour_logp) and again.cap == off.cap
    with pytest.raises(ValueError, match="shapes differ"):
        OffPolicy(torch.zeros(3, 2), torch.zeros(3, 3), 2.0)
    with pytest.raises(ValueError, match="cap must be >= 1"):
        OffPolicy(torch.zeros(3, 2), torch.zeros(3, 2), 0.5)


def test_fused_importance_weights_step_like_the_separate_scoring_pass() -> None:
    """Two identical learners on a stale batch: one scores the policy first and updates on advantages weighted by
    ``truncated_is_weights`` of those log-probs (the separate pass), the other updates on-policy with ``OffPolicy``.
    With one epoch the update's forward pass is the pre-update policy (train and eval mode agree: no dropout), so the
    weights, the step and the logged figures agree to float rounding (measured: bit-identical here)."""
    separate, fused = torch_learner(**GRPO), torch_learner(**GRPO)
    batch, advantages, ref, off = stale_inputs(separate)
    old, _ = separate.logprobs(batch, with_reference=False)
    assert old is not None
    weights = truncated_is_weights(old, off.behaviour_logp, off.stale_mask, off.cap)
    stale = off.stale_mask
    assert bool(((weights >= off.cap) * stale).any()) and bool(((weights < 1.0) * stale).any())
    want = off_policy_summary(
        float(stale.sum()),
        float((weights * stale).sum()),
        float(((weights >= off.cap) * stale).sum()),
        batch.num_tokens,
    )
    separate_stats = separate.update(batch, old, ref, advantages * weights)
    fused_stats = fused.update(batch, None, ref, advantages, off_policy=off)
    assert not separate_stats.skipped and not fused_stats.skipped
    before = torch_learner(**GRPO).policy.state_dict()
    moved = max(float((v - before[k]).abs().max()) for k, v in fused.policy.state_dict().items())
    assert moved > 1e-4  # the step is large enough for a difference to show
    for name, value in separate.policy.state_dict().items():
        assert torch.allclose(fused.policy.state_dict()[name], value, rtol=0.0, atol=1e-7), name
    for field in ("loss", "grad_norm", "entropy", "clip_fraction"):
        assert getattr(fused_stats, field) == pytest.approx(getattr(separate_stats, field), rel=1e-6, abs=1e-8), field
    got = (
        fused_stats.offpolicy_token_fraction,
        fused_stats.offpolicy_is_weight_mean,
        fused_stats.offpolicy_is_truncated,
    )
    assert got == pytest.approx(want, rel=1e-6)
    assert want[0] == pytest.approx(7 / batch.num_tokens) and want[2] > 0  # rows 0 and 2: 3 + 4 action tokens
    # the separate path's update knows nothing of the weights: its offpolicy_* stay NaN
    assert math.isnan(separate_stats.offpolicy_token_fraction) and math.isnan(separate_stats.offpolicy_is_truncated)


def test_fused_importance_weights_need_an_on_policy_single_epoch_update() -> None:
    learner = torch_learner(**GRPO)
    batch, advantages, ref, off = stale_inputs(learner)
    old, _ = learner.logprobs(batch, with_reference=False)
    with pytest.raises(ValueError, match="off_policy is for an on-policy update"):
        learner.update(batch, old, ref, advantages, off_policy=off)
    two_epochs = torch_learner(**GRPO, ppo_epochs=2)
    with pytest.raises(ValueError, match="single-epoch"):
        two_epochs.update(batch, None, ref, advantages, off_policy=off)
    assert learner.policy_version == two_epochs.policy_version == 0


def test_host_passes_off_policy_to_its_learner(monkeypatch: pytest.MonkeyPatch) -> None:
    import waltz_ray.engines.hf as hf

    monkeypatch.setattr(hf, "load_model_and_tokenizer", lambda path, dtype="float32": (tiny_model(), None))
    build = {"learner": LearnerConfig(lr=1e-3), "algorithm": AlgorithmConfig(**GRPO), "num_cpus": 1.0}
    host = TorchLearnerHost("unused", "float32", **build)  # type: ignore[arg-type]
    batch, advantages, ref, off = stale_inputs(host.learner)
    stats = host.update(batch, None, ref, advantages, off)
    assert stats.offpolicy_token_fraction == pytest.approx(7 / batch.num_tokens) and host.get_policy_version() == 1
