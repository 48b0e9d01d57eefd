"""CPU tests for the advantage estimators: hand-computed cases and plain-Python loop references."""

from __future__ import annotations

import math
import random

import pytest
import torch

from waltz_ray.core.advantages import (
    ADVANTAGE_ESTIMATORS,
    ESTIMATOR_SPECS,
    LOSS_KL_ESTIMATOR,
    check_kl_estimator,
    estimator_spec,
    get_advantage_estimator,
    grpo,
    register_advantage,
    reinforce_pp,
    resolve_kl_estimator,
    rloo,
)

EPS = 1e-8


# ---------------------------------------------------------------- plain-Python references


def ref_reinforce_pp(
    rewards: list[float], mask: list[list[float]], kl: list[list[float]] | None, kl_coef: float, gamma: float
) -> list[list[float]]:
    batch, length = len(mask), len(mask[0])
    returns = [[0.0] * length for _ in range(batch)]
    for b in range(batch):
        steps = [t for t in range(length) if mask[b][t] > 0]
        token_reward = {t: (-kl_coef * kl[b][t] if kl is not None else 0.0) for t in steps}
        if steps:
            token_reward[steps[-1]] += rewards[b]
        running = 0.0
        for t in reversed(steps):
            running = token_reward[t] + gamma * running
            returns[b][t] = running
    values = [returns[b][t] for b in range(batch) for t in range(length) if mask[b][t] > 0]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [
        [(returns[b][t] - mean) / (std + EPS) if mask[b][t] > 0 else 0.0 for t in range(length)] for b in range(batch)
    ]


def ref_group_advantage(rewards: list[float], groups: list[int], kind: str) -> list[float]:
    out = []
    for i, r in enumerate(rewards):
        members = [rewards[j] for j in range(len(rewards)) if groups[j] == groups[i]]
        if len(members) == 1:
            out.append(0.0)
        elif kind == "grpo":
            mean = sum(members) / len(members)
            std = math.sqrt(sum((m - mean) ** 2 for m in members) / len(members))
            out.append((r - mean) / (std + EPS))
        else:
            out.append(r - (sum(members) - r) / (len(members) - 1))
    return out


def ragged_mask(rng: random.Random, batch: int, length: int) -> list[list[float]]:
    """Left padding, right padding and holes; one row with no action tokens at all."""
    rows = []
    for b in range(batch):
        start, end = sorted(rng.sample(range(length + 1), 2))
        row = [1.0 if start <= t < end and rng.random() > 0.2 else 0.0 for t in range(length)]
        if b == 0:
            row = [0.0] * length
        elif sum(row) == 0:
            row[start] = 1.0
        rows.append(row)
    return rows


def broadcast(seq_adv: list[float], mask: list[list[float]]) -> list[list[float]]:
    return [[a if m > 0 else 0.0 for m in row] for a, row in zip(seq_adv, mask, strict=True)]


# ---------------------------------------------------------------- registry


def test_registry_holds_all_estimators_and_alias() -> None:
    assert set(ADVANTAGE_ESTIMATORS) == {"reinforce_pp", "reinforce++", "grpo", "rloo"}
    assert get_advantage_estimator("reinforce++") is reinforce_pp
    assert get_advantage_estimator("reinforce_pp") is reinforce_pp
    assert get_advantage_estimator("grpo") is grpo
    assert get_advantage_estimator("rloo") is rloo


def test_unknown_estimator_lists_sorted_names() -> None:
    with pytest.raises(ValueError, match=r"valid names: grpo, reinforce\+\+, reinforce_pp, rloo"):
        get_advantage_estimator("ppo")


def test_registry_says_what_each_estimator_needs() -> None:
    """Groups and the KL's place come from the registry, not from name lists spread over the learner and trainer."""
    for name in ("reinforce_pp", "reinforce++"):
        spec = estimator_spec(name)
        assert (spec.fn, spec.needs_groups, spec.kl_in_loss) == (reinforce_pp, False, False)
    for name, fn in (("grpo", grpo), ("rloo", rloo)):
        spec = estimator_spec(name)
        assert (spec.name, spec.fn, spec.needs_groups, spec.kl_in_loss) == (name, fn, True, True)
    assert set(ESTIMATOR_SPECS) == set(ADVANTAGE_ESTIMATORS)
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'; valid names: grpo, reinforce\+\+"):
        estimator_spec("ppo")


@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_k1_is_refused_where_the_kl_is_in_the_loss(name: str) -> None:
    with pytest.raises(ValueError, match=rf"algorithm\.kl_estimator k1 .*algorithm\.advantage_estimator {name}"):
        check_kl_estimator(name, "k1")
    with pytest.raises(ValueError, match="k3"):
        resolve_kl_estimator(name, "k1", kl_coef=0.01)
    check_kl_estimator(name, "k1", kl_coef=0.0)  # no KL term: nothing to regularise
    for kind in ("k2", "k3"):
        check_kl_estimator(name, kind)
        assert resolve_kl_estimator(name, kind) == kind
    assert resolve_kl_estimator(name, None) == LOSS_KL_ESTIMATOR == "k3"


def test_any_kl_estimator_goes_where_the_kl_is_in_the_reward() -> None:
    for kind in ("k1", "k2", "k3"):
        check_kl_estimator("reinforce_pp", kind)
        assert resolve_kl_estimator("reinforce_pp", kind) == kind
    assert resolve_kl_estimator("reinforce_pp", None) == "k1"


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("grpo")(rloo)
    assert ADVANTAGE_ESTIMATORS["grpo"] is grpo


@pytest.mark.parametrize("name", ["reinforce_pp", "grpo", "rloo"])
def test_shared_signature_and_padding_is_zero(name: str) -> None:
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    rewards = torch.tensor([1.0, 0.0, 0.5], requires_grad=True)
    adv = get_advantage_estimator(name)(
        rewards, mask, kl=torch.ones(3, 4), kl_coef=0.1, group_ids=[0, 0, 1], gamma=0.9, eps=1e-6
    )
    assert adv.shape == mask.shape
    assert not adv.requires_grad
    assert torch.all(adv[mask == 0] == 0)


# ---------------------------------------------------------------- REINFORCE++


def test_reinforce_pp_hand_computed_tiny_case() -> None:
    # Returns [1, 1] and [0]: mean 2/3, population std √2/3, so (1 − 2/3)/(√2/3) = 1/√2 and (0 − 2/3)/(√2/3) = −√2.
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = reinforce_pp(torch.tensor([1.0, 0.0]), mask)
    expected = torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [-math.sqrt(2), 0.0]])
    assert torch.allclose(adv, expected, atol=1e-6)


def test_reinforce_pp_hand_computed_kl_and_discount() -> None:
    # r = [−0.5·1, −0.5·2 + 3] = [−0.5, 2]; γ = 0.5 → G = [−0.5 + 0.5·2, 2] = [0.5, 2]; mean 1.25, std 0.75.
    adv = reinforce_pp(torch.tensor([3.0]), torch.ones(1, 2), kl=torch.tensor([[1.0, 2.0]]), kl_coef=0.5, gamma=0.5)
    assert torch.allclose(adv, torch.tensor([[-1.0, 1.0]]), atol=1e-6)


def test_reinforce_pp_discount_skips_holes_and_left_padding() -> None:
    # The hole is not a step: G = [0.5, ·, 1] with γ = 0.5, exactly as for the contiguous sequence [0.5, 1].
    holes = reinforce_pp(torch.tensor([1.0]), torch.tensor([[1.0, 0.0, 1.0]]), gamma=0.5)
    assert torch.allclose(holes, torch.tensor([[-1.0, 0.0, 1.0]]), atol=1e-6)
    left = reinforce_pp(torch.tensor([1.0]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), gamma=0.5)
    assert torch.allclose(left, torch.tensor([[0.0, 0.0, -1.0, 1.0]]), atol=1e-6)


def test_reinforce_pp_normalises_over_global_batch_not_groups() -> None:
    mask = torch.ones(4, 1)
    rewards = torch.tensor([1.0, 0.0, 3.0, 2.0])
    adv = reinforce_pp(rewards, mask, group_ids=[0, 0, 1, 1])
    # Global mean 1.5, population std √1.25: per-group normalisation would give ±1 instead.
    expected = ((rewards - 1.5) / math.sqrt(1.25))[:, None]
    assert torch.allclose(adv, expected, atol=1e-6)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("with_kl", [False, True])
def test_reinforce_pp_matches_python_loop(gamma: float, with_kl: bool) -> None:
    rng = random.Random(17)
    batch, length = 7, 9
    mask = ragged_mask(rng, batch, length)
    rewards = [rng.uniform(-1.0, 2.0) for _ in range(batch)]
    kl = [[rng.uniform(-0.5, 0.5) for _ in range(length)] for _ in range(batch)] if with_kl else None
    kl_coef = 0.3 if with_kl else 0.0

    adv = reinforce_pp(
        torch.tensor(rewards, dtype=torch.float64),
        torch.tensor(mask, dtype=torch.float64),
        kl=torch.tensor(kl, dtype=torch.float64) if kl is not None else None,
        kl_coef=kl_coef,
        gamma=gamma,
    )
    expected = torch.tensor(ref_reinforce_pp(rewards, mask, kl, kl_coef, gamma), dtype=torch.float64)
    assert torch.allclose(adv, expected, atol=1e-10)
    action = adv[torch.tensor(mask) > 0]
    assert abs(action.mean().item()) < 1e-9
    assert abs(action.std(correction=0).item() - 1.0) < 1e-6


def test_reinforce_pp_kl_none_means_no_kl_term() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards = torch.tensor([0.2, 1.0])
    assert torch.equal(reinforce_pp(rewards, mask, kl_coef=0.5), reinforce_pp(rewards, mask))


def test_reinforce_pp_empty_batch_and_bad_inputs() -> None:
    assert torch.equal(reinforce_pp(torch.tensor([1.0]), torch.zeros(1, 3)), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="mask"):
        reinforce_pp(torch.tensor([1.0, 2.0]), torch.ones(3, 2))
    with pytest.raises(ValueError, match="kl"):
        reinforce_pp(torch.tensor([1.0]), torch.ones(1, 2), kl=torch.ones(1, 3))
    with pytest.raises(ValueError, match="gamma"):
        reinforce_pp(torch.tensor([1.0]), torch.ones(1, 2), gamma=1.5)


# ---------------------------------------------------------------- GRPO and RLOO


def test_grpo_hand_computed() -> None:
    # Group 7: [1, 0] → ±1 (population std 0.5); group 3: equal rewards → 0; group 9: singleton → 0.
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    adv = grpo(torch.tensor([1.0, 0.0, 2.0, 2.0, 5.0]), mask, group_ids=[7, 7, 3, 3, 9])
    expected = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(adv, expected, atol=1e-6)


def test_rloo_hand_computed() -> None:
    # Group of three [1, 0, 2]: 1 − 1 = 0, 0 − 1.5 = −1.5, 2 − 0.5 = 1.5; the singleton gets 0.
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    adv = rloo(torch.tensor([1.0, 0.0, 2.0, 4.0]), mask, group_ids=torch.tensor([0, 0, 0, 1]))
    expected = torch.tensor([[0.0, 0.0], [-1.5, 0.0], [0.0, 1.5], [0.0, 0.0]])
    assert torch.allclose(adv, expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_group_estimators_match_python_loop(kind: str) -> None:
    rng = random.Random(5)
    batch, length = 11, 6
    mask = ragged_mask(rng, batch, length)
    rewards = [rng.choice([0.0, 1.0]) + rng.uniform(-0.3, 0.3) for _ in range(batch)]
    groups = [rng.choice([4, 8, 15]) for _ in range(batch - 1)] + [99]  # 99 is a singleton group
    estimator = get_advantage_estimator(kind)
    adv = estimator(
        torch.tensor(rewards, dtype=torch.float64),
        torch.tensor(mask, dtype=torch.float64),
        group_ids=torch.tensor(groups),
    )
    expected = broadcast(ref_group_advantage(rewards, groups, kind), mask)
    assert torch.allclose(adv, torch.tensor(expected, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_group_estimators_ignore_kl(kind: str) -> None:
    estimator = get_advantage_estimator(kind)
    mask = torch.ones(4, 3)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.25])
    plain = estimator(rewards, mask, group_ids=[0, 0, 1, 1])
    with_kl = estimator(rewards, mask, group_ids=[0, 0, 1, 1], kl=torch.rand(4, 3), kl_coef=1.0, gamma=0.5)
    assert torch.equal(plain, with_kl)


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_group_estimators_need_group_ids(kind: str) -> None:
    estimator = get_advantage_estimator(kind)
    with pytest.raises(ValueError, match="group_ids is required"):
        estimator(torch.tensor([1.0, 0.0]), torch.ones(2, 2))
    with pytest.raises(ValueError, match="group_ids must have shape"):
        estimator(torch.tensor([1.0, 0.0]), torch.ones(2, 2), group_ids=[0, 0, 1])


def test_integer_rewards_give_float_advantages() -> None:
    adv = grpo(torch.tensor([1, 0]), torch.ones(2, 2), group_ids=[0, 0])
    assert adv.is_floating_point()
    assert torch.allclose(adv, torch.tensor([[1.0, 1.0], [-1.0, -1.0]]), atol=1e-6)
