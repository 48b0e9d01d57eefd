"""CPU tests for the losses: hand-computed values, clipping, and shard/accumulation invariance of token-mean."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from waltz_ray.core.losses import (
    MicroStats,
    PolicyLossStats,
    entropy_from_logits,
    kl_estimate,
    kl_penalty_loss,
    micro_batch_loss,
    off_policy_summary,
    policy_loss,
    token_logprobs,
    token_sum_mean,
    truncated_is_weights,
)

# ---------------------------------------------------------------- KL estimators


def test_kl_estimators_hand_computed() -> None:
    logp = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([-2.0, -1.0])
    # logp − ref = [1, −1]; k3 = e^{ref−logp} − (ref−logp) − 1 = [e^{−1}, e − 2].
    assert torch.allclose(kl_estimate(logp, ref, "k1"), torch.tensor([1.0, -1.0]))
    assert torch.allclose(kl_estimate(logp, ref, "k2"), torch.tensor([0.5, 0.5]))
    assert torch.allclose(kl_estimate(logp, ref, "k3"), torch.tensor([math.exp(-1.0), math.e - 2.0]))


def test_kl_estimators_zero_when_equal_and_k3_non_negative() -> None:
    gen = torch.Generator().manual_seed(0)
    logp = -torch.rand(4, 5, generator=gen) * 5
    for kind in ("k1", "k2", "k3"):
        assert torch.equal(kl_estimate(logp, logp.clone(), kind), torch.zeros(4, 5))
    ref = -torch.rand(4, 5, generator=gen) * 5
    assert torch.all(kl_estimate(logp, ref, "k3") >= 0)
    assert torch.all(kl_estimate(logp, ref, "k2") >= 0)


def test_kl_unknown_kind_lists_valid_kinds() -> None:
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_estimate(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match="shapes differ"):
        kl_estimate(torch.zeros(2), torch.zeros(3), "k1")


# ---------------------------------------------------------------- token-mean aggregation


def test_token_sum_mean_hand_computed() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert token_sum_mean(values, mask).item() == pytest.approx(7.0 / 3.0)
    assert token_sum_mean(values, mask, num_tokens=7).item() == pytest.approx(1.0)
    assert token_sum_mean(values, torch.zeros(2, 3)).item() == 0.0  # empty mask: clamped count, no NaN
    with pytest.raises(ValueError, match="positive"):
        token_sum_mean(values, mask, num_tokens=0)


def make_batch(batch: int = 8, length: int = 7, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Ragged masks (left/right padding, a hole), float64 for tight comparisons. Returns logp, old, ref, adv, mask."""
    gen = torch.Generator().manual_seed(seed)
    logp = -torch.rand(batch, length, generator=gen, dtype=torch.float64) * 3
    old = logp + 0.4 * torch.randn(batch, length, generator=gen, dtype=torch.float64)
    ref = logp + 0.2 * torch.randn(batch, length, generator=gen, dtype=torch.float64)
    adv = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    mask = torch.zeros(batch, length, dtype=torch.float64)
    for b in range(batch):
        start, end = b % 3, length - (b * 5) % 4
        mask[b, start:end] = 1.0
    mask[2, 3] = 0.0
    return logp, old, ref, adv, mask


def whole_and_pieces(sizes: list[int], loss_fn: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(whole loss, whole grad, summed piece loss, accumulated piece grad) for pieces of the given sizes."""
    logp, old, ref, adv, mask = make_batch()

    def loss(lp: Tensor, sl: slice, num_tokens: float | None) -> Tensor:
        if loss_fn == "policy":
            return policy_loss(lp, old[sl], adv[sl], mask[sl], clip_eps=0.2, num_tokens=num_tokens)[0]
        return kl_penalty_loss(lp, ref[sl], mask[sl], kind="k3", coef=0.1, num_tokens=num_tokens)

    whole_leaf = logp.clone().requires_grad_(True)
    whole = loss(whole_leaf, slice(None), None)
    whole.backward()

    pieces_leaf = logp.clone().requires_grad_(True)
    global_tokens = mask.sum().item()
    total = torch.zeros((), dtype=torch.float64)
    start = 0
    for size in sizes:
        sl = slice(start, start + size)
        piece = loss(pieces_leaf[sl], sl, global_tokens)
        piece.backward()  # gradients accumulate in the leaf, like micro-batch accumulation
        total = total + piece.detach()
        start += size
    assert start == logp.shape[0]
    assert whole_leaf.grad is not None and pieces_leaf.grad is not None
    return whole.detach(), whole_leaf.grad, total, pieces_leaf.grad


@pytest.mark.parametrize("loss_fn", ["policy", "kl"])
@pytest.mark.parametrize("sizes", [[3, 5], [1] * 8, [8]], ids=["shards_3_5", "accum_8x1", "whole"])
def test_sharded_loss_and_grad_equal_whole_batch(sizes: list[int], loss_fn: str) -> None:
    whole, whole_grad, total, pieces_grad = whole_and_pieces(sizes, loss_fn)
    assert torch.allclose(total, whole, rtol=1e-12, atol=1e-14)
    assert torch.allclose(pieces_grad, whole_grad, rtol=1e-12, atol=1e-14)


def test_per_shard_mean_would_not_match() -> None:
    # Why the global count matters: averaging per-shard means weights the shards' tokens unequally.
    logp, old, _, adv, mask = make_batch()
    whole, _ = policy_loss(logp, old, adv, mask)
    a, _ = policy_loss(logp[:3], old[:3], adv[:3], mask[:3])
    b, _ = policy_loss(logp[3:], old[3:], adv[3:], mask[3:])
    assert not torch.allclose((a + b) / 2, whole)


# ---------------------------------------------------------------- PPO-clipped surrogate


def test_policy_loss_at_ratio_one_is_minus_token_mean_advantage() -> None:
    logp, _, _, adv, mask = make_batch()
    leaf = logp.clone().requires_grad_(True)
    loss, stats = policy_loss(leaf, logp, adv, mask)
    assert torch.allclose(loss, -token_sum_mean(adv, mask))
    loss.backward()
    assert leaf.grad is not None
    assert torch.allclose(leaf.grad, -adv * mask / mask.sum())
    assert stats == PolicyLossStats(clip_fraction=0.0, approx_kl=0.0, ratio_max=1.0, ratio_mean=1.0)


def test_policy_loss_clipping_hand_computed() -> None:
    # Tokens: (s=1.5, Â=+1) clipped at 1.2; (s=0.5, Â=−1) clipped at 0.8·−1; (s=1.5, Â=−1) and (s=0.5, Â=+1)
    # keep the unclipped, more pessimistic branch. The last column is padding with an absurd ratio.
    ratios = torch.tensor([[1.5, 0.5, 1.5, 0.5, 10.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    old = torch.full_like(ratios, -1.0)
    logp = (old + ratios.log()).requires_grad_(True)

    loss, stats = policy_loss(logp, old, adv, mask, clip_eps=0.2)
    # Objective per token: [1.2, −0.8, −1.5, 0.5] → sum −0.6 → loss = 0.6 / 4 = 0.15.
    assert loss.item() == pytest.approx(0.15)
    loss.backward()
    assert logp.grad is not None
    # d(−s·Â/4)/dlogp = −s·Â/4 on unclipped tokens: −(1.5·−1)/4 = 0.375 and −(0.5·1)/4 = −0.125; 0 when clipped.
    assert torch.allclose(logp.grad, torch.tensor([[0.0, 0.0, 0.375, -0.125, 0.0]], dtype=torch.float64))
    assert stats.clip_fraction == pytest.approx(0.5)
    assert stats.ratio_max == pytest.approx(1.5)
    assert stats.ratio_mean == pytest.approx(1.0)
    assert stats.approx_kl == pytest.approx(-(2 * math.log(1.5) + 2 * math.log(0.5)) / 4)


def test_policy_loss_stats_are_floats_and_validation() -> None:
    logp, old, _, adv, mask = make_batch()
    _, stats = policy_loss(logp.requires_grad_(True), old, adv, mask)
    assert all(isinstance(v, float) for v in vars(stats).values())
    assert 0.0 <= stats.clip_fraction <= 1.0
    _, empty = policy_loss(logp, old, adv, torch.zeros_like(mask))
    assert empty == PolicyLossStats(clip_fraction=0.0, approx_kl=0.0, ratio_max=1.0, ratio_mean=1.0)
    with pytest.raises(ValueError, match="mask shape"):
        policy_loss(logp, old, adv, mask[:, :3])


def test_kl_penalty_loss_value_and_ref_is_constant() -> None:
    logp, _, ref, _, mask = make_batch()
    ref = ref.clone().requires_grad_(True)
    loss = kl_penalty_loss(logp.requires_grad_(True), ref, mask, kind="k1", coef=0.05)
    assert torch.allclose(loss, 0.05 * ((logp - ref) * mask).sum() / mask.sum())
    loss.backward()
    assert ref.grad is None


@pytest.mark.parametrize(
    ("kind", "want"),
    [
        # π = softmax(z) = [1/2, 1/4, 1/4], π_ref = [1/4, 1/4, 1/2]; L = Σ_a sg(π_a)·k(log π_a, log π_ref_a) is the
        # KL term's expectation over on-policy samples, ∂L/∂z its expected gradient.
        ("k1", [0.0, 0.0, 0.0]),  # Σ_a π_a (δ_aj − π_j) = π_j − π_j = 0: regularises nothing
        ("k2", [0.375 * math.log(2), -0.0625 * math.log(2), -0.3125 * math.log(2)]),  # ∇ KL(π ‖ π_ref)
        ("k3", [0.25, 0.0, -0.25]),  # Σ_a (π_a − ref_a)(δ_aj − π_j) = π_j − ref_j: ∇ KL(π_ref ‖ π)
    ],
)
def test_expected_gradient_of_the_kl_loss_term_on_policy_samples(kind: str, want: list[float]) -> None:
    """Why k1 is refused where the KL is in the loss (grpo, rloo): its expected gradient on the policy's own samples
    is exactly zero (hand-computed on a 3-token vocabulary); k2's and k3's pull the policy toward the reference."""
    z = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64).log().requires_grad_(True)
    ref = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64).log()
    logp = torch.log_softmax(z, dim=0)
    expected = (logp.detach().exp() * kl_estimate(logp, ref, kind)).sum()
    (grad,) = torch.autograd.grad(expected, z)
    torch.testing.assert_close(grad, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    if kind == "k1":  # while the estimate itself is not 0: KL(π ‖ π_ref) = log(2) / 4
        assert float(expected.detach()) == pytest.approx(math.log(2) / 4)


# ---------------------------------------------------------------- the learner's micro-batch loss


def micro_inputs() -> dict[str, Tensor]:
    """One row, two action tokens and one masked position holding values that would overflow exp() if used."""
    half, quarter = math.log(0.5), math.log(0.25)
    return {
        "logp": torch.tensor([[half, quarter, -200.0]], requires_grad=True),
        "entropy": torch.tensor([[1.0, 2.0, 9.0]]),
        "old_logp": torch.tensor([[half, half, 50.0]]),
        "ref_logp": torch.tensor([[quarter, quarter, -80.0]]),
        "advantages": torch.tensor([[1.0, -1.0, 0.0]]),
        "mask": torch.tensor([[1.0, 1.0, 0.0]]),
    }


def test_micro_batch_loss_hand_computed() -> None:
    """The batch holds 4 action tokens, this micro-batch 2 (share 1/2). Ratios [1, 1/2]; ε 0.2 clips token 1:
    min(1·1, 1·1) = 1 and min(½·−1, 0.8·−1) = −0.8, so the policy loss is −(1 − 0.8)/4. k3 to the reference:
    token 0 exp(−log 2) + log 2 − 1 = log 2 − ½, token 1 (logp = ref) 0; coef ½ over 4 tokens."""
    x = micro_inputs()
    loss, stats = micro_batch_loss(
        *x.values(), clip_eps=0.2, kl_in_loss=True, kl_estimator="k3", kl_coef=0.5, num_tokens=4.0
    )
    ln2 = math.log(2)
    want_loss = -(1.0 - 0.8) / 4 + 0.5 * (ln2 - 0.5) / 4
    assert float(loss.detach()) == pytest.approx(want_loss, abs=1e-7)
    assert isinstance(stats, MicroStats)
    assert stats.loss == pytest.approx(want_loss, abs=1e-7)
    assert stats.clip_fraction == pytest.approx(0.5 * 0.5)  # 1 of 2 tokens clipped, times the share
    assert stats.approx_kl == pytest.approx((ln2 / 2) * 0.5)  # mean(old − logp) = (0 + log 2)/2, times the share
    assert stats.entropy == pytest.approx((1.0 + 2.0) / 4)
    assert stats.ref_kl == pytest.approx(2 * (ln2 - 0.5) / 4, abs=1e-7)  # k3(old, ref): log 2 − ½ on both tokens
    loss.backward()
    grad = x["logp"].grad
    assert grad is not None and torch.isfinite(grad).all() and grad[0, 2] == 0.0


def test_micro_batch_loss_without_the_kl_term_is_the_policy_loss() -> None:
    x = micro_inputs()
    want, pstats = policy_loss(x["logp"], x["old_logp"], x["advantages"], x["mask"], clip_eps=0.2, num_tokens=4.0)
    for kl_in_loss, coef in ((False, 0.5), (True, 0.0)):
        loss, stats = micro_batch_loss(
            *x.values(), clip_eps=0.2, kl_in_loss=kl_in_loss, kl_estimator="k3", kl_coef=coef, num_tokens=4.0
        )
        assert torch.equal(loss, want)
        assert stats.clip_fraction == pstats.clip_fraction * 0.5
    x["ref_logp"] = None  # type: ignore[assignment]
    loss, stats = micro_batch_loss(
        *x.values(), clip_eps=0.2, kl_in_loss=False, kl_estimator="k3", kl_coef=0.5, num_tokens=4.0
    )
    assert torch.equal(loss, want) and math.isnan(stats.ref_kl)
    with pytest.raises(ValueError, match="reference log-probs are required"):
        micro_batch_loss(*x.values(), clip_eps=0.2, kl_in_loss=True, kl_estimator="k3", kl_coef=0.5, num_tokens=4.0)


def test_micro_batch_loss_on_policy() -> None:
    """``old_logp`` None: ratio 1 (loss −mean advantage, nothing clipped, approx KL 0) and ``ref_kl`` measured on
    ``logp`` itself: k1(logp, ref) = [log 2, 0]."""
    x = micro_inputs()
    x["old_logp"] = None  # type: ignore[assignment]
    loss, stats = micro_batch_loss(
        *x.values(), clip_eps=0.2, kl_in_loss=False, kl_estimator="k1", kl_coef=0.5, num_tokens=4.0
    )
    assert float(loss.detach()) == pytest.approx(-(1.0 - 1.0) / 4)
    assert (stats.clip_fraction, stats.approx_kl) == (0.0, 0.0)
    assert stats.ref_kl == pytest.approx(math.log(2) / 4)


def test_micro_batch_losses_add_up_to_the_whole_batch() -> None:
    """Micro-batches given the global token count: their losses and stats sum to the whole batch's."""
    logp, old, ref, adv, mask = make_batch(batch=6, length=5, seed=3)
    entropy = torch.rand(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    total = float(mask.sum())

    def loss(i: int, j: int) -> tuple[Tensor, MicroStats]:
        return micro_batch_loss(
            logp[i:j],
            entropy[i:j],
            old[i:j],
            ref[i:j],
            adv[i:j],
            mask[i:j],
            clip_eps=0.2,
            kl_in_loss=True,
            kl_estimator="k3",
            kl_coef=0.1,
            num_tokens=total,
        )

    whole, whole_stats = loss(0, 6)
    parts = [loss(i, j) for i, j in ((0, 1), (1, 4), (4, 6))]
    assert float(sum(loss for loss, _ in parts)) == pytest.approx(float(whole), abs=1e-6)
    for field in ("loss", "clip_fraction", "approx_kl", "entropy", "ref_kl"):
        got = sum(getattr(stats, field) for _, stats in parts)
        assert got == pytest.approx(getattr(whole_stats, field), abs=1e-6), field


# ---------------------------------------------------------------- log-probs and entropy


def test_token_logprobs_manual() -> None:
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    tokens = torch.tensor([[2, 1]])
    expected = torch.tensor([[3.0 - math.log(math.e + math.e**2 + math.e**3), math.log(1 / 3)]])
    assert torch.allclose(token_logprobs(logits, tokens), expected)
    low_precision = token_logprobs(logits.to(torch.bfloat16), tokens)
    assert low_precision.dtype == torch.float32
    with pytest.raises(ValueError, match="do not match"):
        token_logprobs(logits, torch.tensor([[2]]))


def test_entropy_manual_and_masked_vocab() -> None:
    z = math.e + math.e**2 + math.e**3
    probs = [math.e / z, math.e**2 / z, math.e**3 / z]
    manual = -sum(p * math.log(p) for p in probs)
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    assert torch.allclose(entropy_from_logits(logits), torch.tensor([[manual, math.log(3)]]))

    # −inf logits (masked vocabulary) contribute 0·log 0 = 0, in the value and in the gradient.
    masked = torch.tensor([[[0.0, 0.0, -math.inf]]], requires_grad=True)
    entropy = entropy_from_logits(masked)
    assert torch.allclose(entropy, torch.tensor([[math.log(2)]]))
    entropy.sum().backward()
    assert masked.grad is not None and torch.all(torch.isfinite(masked.grad))


# ---------------------------------------------------------------- off-policy correction


def test_truncated_is_weights_hand_computed() -> None:
    target = torch.tensor([[-1.0, -0.5, -2.0], [-1.0, -1.0, -1.0]])
    behaviour = torch.tensor([[-1.0, -1.0, -0.5], [-3.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    weights = truncated_is_weights(target, behaviour, mask, cap=2.0)
    # exp(0) = 1; exp(0.5) = 1.6487; exp(-1.5) = 0.2231; exp(2) = 7.389 -> cap 2; unmasked tokens -> 1
    expected = torch.tensor([[1.0, math.exp(0.5), math.exp(-1.5)], [2.0, 1.0, 1.0]])
    assert torch.allclose(weights, expected, atol=1e-6)
    with pytest.raises(ValueError, match="cap must be >= 1"):
        truncated_is_weights(target, behaviour, mask, cap=0.5)


def importance_inputs() -> dict[str, Tensor]:
    """Row 0 is stale (3 tokens, behaviour log-probs given), row 1 is current (stale mask 0, behaviour 0 there).
    log-ratios on row 0: −1 + 1.5 = 0.5, −0.5 + 2 = 1.5 (exp 4.48, capped at 2), −2 + 0.5 = −1.5."""
    return {
        "logp": torch.tensor([[-1.0, -0.5, -2.0], [-1.0, -1.0, 0.0]], requires_grad=True),
        "entropy": torch.zeros(2, 3),
        "advantages": torch.tensor([[1.0, 1.0, -1.0], [0.5, 0.5, 0.0]]),
        "mask": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),
        "behaviour_logp": torch.tensor([[-1.5, -2.0, -0.5], [0.0, 0.0, 0.0]]),
        "stale_mask": torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]),
    }


def importance_loss(
    x: dict[str, Tensor], rows: slice = slice(None), ref: Tensor | None = None, **overrides: object
) -> tuple[Tensor, MicroStats]:
    kwargs: dict[str, object] = {
        "clip_eps": 0.2,
        "kl_in_loss": False,
        "kl_estimator": "k3",
        "kl_coef": 0.0,
        "num_tokens": 8.0,  # the batch holds 8 action tokens, these two rows 5
        "behaviour_logp": x["behaviour_logp"][rows],
        "stale_mask": x["stale_mask"][rows],
        "is_cap": 2.0,
    }
    kwargs.update(overrides)
    return micro_batch_loss(
        x["logp"][rows], x["entropy"][rows], None, ref, x["advantages"][rows], x["mask"][rows], **kwargs
    )  # type: ignore[arg-type]


def test_micro_batch_loss_weights_stale_tokens_on_its_own_log_probs() -> None:
    """On-policy (ratio 1) with importance weighting: weights [e^0.5, 2 (capped from e^1.5), e^−1.5] on row 0, 1 on
    the current row 1. loss = −Σ w·Â / 8 = −(e^0.5 + 2 − e^−1.5 + 0.5 + 0.5) / 8; each token's gradient −w·Â / 8.
    Stats: 3 stale tokens, weights summing to e^0.5 + 2 + e^−1.5, one of them truncated."""
    x = importance_inputs()
    loss, stats = importance_loss(x)
    e05, em15 = math.exp(0.5), math.exp(-1.5)
    want = -(e05 + 2.0 - em15 + 0.5 + 0.5) / 8
    assert float(loss.detach()) == pytest.approx(want, abs=1e-6)
    assert stats.loss == pytest.approx(want, abs=1e-6)
    assert (stats.offpolicy_tokens, stats.offpolicy_truncated) == (3.0, 1.0)
    assert stats.offpolicy_weight_sum == pytest.approx(e05 + 2.0 + em15, abs=1e-6)
    assert (stats.clip_fraction, stats.approx_kl) == (0.0, 0.0)  # the ratio is still 1: only the advantages moved
    loss.backward()
    grad = x["logp"].grad
    assert grad is not None
    want_grad = -torch.tensor([[e05 * 1.0, 2.0 * 1.0, em15 * -1.0], [0.5, 0.5, 0.0]]) / 8
    assert torch.allclose(grad, want_grad, atol=1e-7)
    # The logged figures: 3 of the batch's 8 tokens corrected, their mean weight, 1 of the 3 truncated.
    fraction, mean, truncated = off_policy_summary(
        stats.offpolicy_tokens, stats.offpolicy_weight_sum, stats.offpolicy_truncated, 8.0
    )
    assert (fraction, truncated) == (3 / 8, 1 / 3)
    assert mean == pytest.approx((e05 + 2.0 + em15) / 3, abs=1e-6)
    assert off_policy_summary(0.0, 0.0, 0.0, 8.0) == (0.0, 0.0, 0.0)  # nothing corrected: 0, not NaN


def test_micro_batch_importance_figures_add_up_over_micro_batches() -> None:
    """Row by row the losses and the off-policy sums add up to the two rows' (the current row adds nothing)."""
    x = importance_inputs()
    whole, whole_stats = importance_loss(x)
    parts = [importance_loss(x, slice(i, i + 1)) for i in (0, 1)]
    assert float(sum(loss.detach() for loss, _ in parts)) == pytest.approx(float(whole.detach()), abs=1e-6)
    for field in ("offpolicy_tokens", "offpolicy_weight_sum", "offpolicy_truncated"):
        assert sum(getattr(s, field) for _, s in parts) == pytest.approx(getattr(whole_stats, field), abs=1e-6)
    assert (parts[1][1].offpolicy_tokens, parts[1][1].offpolicy_weight_sum) == (0.0, 0.0)


def test_micro_batch_importance_weighting_equals_weighting_the_advantages_first() -> None:
    """The fused weighting is the separate-pass one: advantages multiplied by ``truncated_is_weights`` of the same
    log-probs before the loss give the same loss and gradient (and the KL term is untouched by the weights)."""
    x = importance_inputs()
    ref = x["logp"].detach() - 0.3
    fused, fused_stats = importance_loss(x, ref=ref, kl_in_loss=True, kl_coef=0.1)
    fused.backward()
    fused_grad = x["logp"].grad.clone()  # type: ignore[union-attr]
    x["logp"].grad = None
    weights = truncated_is_weights(x["logp"].detach(), x["behaviour_logp"], x["stale_mask"], 2.0)
    separate, separate_stats = micro_batch_loss(
        x["logp"],
        x["entropy"],
        x["logp"].detach(),
        ref,
        x["advantages"] * weights,
        x["mask"],
        clip_eps=0.2,
        kl_in_loss=True,
        kl_estimator="k3",
        kl_coef=0.1,
        num_tokens=8.0,
    )
    assert fused_stats.ref_kl == pytest.approx(separate_stats.ref_kl, abs=1e-7) and fused_stats.ref_kl > 0
    separate.backward()
    assert torch.allclose(fused_grad, x["logp"].grad, atol=1e-7)  # type: ignore[arg-type]
    assert float(fused.detach()) == pytest.approx(float(separate.detach()), abs=1e-7)
    assert separate_stats.offpolicy_tokens == 0.0  # the separate path counts nothing in the loss


def test_micro_batch_importance_weighting_is_refused_off_policy_or_half_given() -> None:
    x = importance_inputs()
    with pytest.raises(ValueError, match="on-policy updates"):
        micro_batch_loss(
            x["logp"],
            x["entropy"],
            x["logp"].detach(),
            None,
            x["advantages"],
            x["mask"],
            clip_eps=0.2,
            kl_in_loss=False,
            kl_estimator="k3",
            kl_coef=0.0,
            num_tokens=8.0,
            behaviour_logp=x["behaviour_logp"],
            stale_mask=x["stale_mask"],
            is_cap=2.0,
        )
    with pytest.raises(ValueError, match="together"):
        importance_loss(x, is_cap=None)
    with pytest.raises(ValueError, match="stale_mask shape"):
        importance_loss(x, stale_mask=x["stale_mask"][:, :2])
    with pytest.raises(ValueError, match="cap must be >= 1"):
        importance_loss(x, is_cap=0.5)


def test_unscored_positions_cannot_poison_the_gradient() -> None:
    """Outside the mask, old/ref log-probs may be 0 where logp is very negative (windows scored differently): the
    loss and its gradient stay finite and equal those of a batch whose masked positions agree."""
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    adv = torch.tensor([[0.0, 1.0, -1.0]])
    logp = torch.tensor([[-200.0, -1.0, -2.0]], requires_grad=True)
    far = torch.tensor([[0.0, -1.1, -1.9]])
    near = torch.tensor([[-200.0, -1.1, -1.9]])
    for kind in ("k1", "k2", "k3"):
        results = []
        for other in (far, near):
            logp.grad = None
            loss, _ = policy_loss(logp, other, adv, mask)
            loss = loss + kl_penalty_loss(logp, other, mask, kind=kind, coef=0.1)
            loss.backward()
            assert logp.grad is not None and torch.isfinite(logp.grad).all() and torch.isfinite(loss)
            results.append((loss.detach(), logp.grad.clone()))
        assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
        assert results[0][1][0, 0] == 0.0
