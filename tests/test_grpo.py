"""vinci.grpo against hand-computed numbers (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from vinci.grpo import (
    aggregate,
    batch_denominator,
    frac_zero_std,
    group_advantages,
    kl_penalty,
    masked_mean,
    policy_loss,
    zero_std_groups,
)


def _one_sequence(ratios: list[float], advantage: float):
    """logp/old_logp [1, T] whose exp(logp - old_logp) equals ``ratios``; logp is a leaf."""
    old = torch.full((1, len(ratios)), -1.0)  # [1, T]
    logp = (old + torch.tensor([ratios]).log()).requires_grad_()  # [1, T]
    return logp, old, torch.tensor([advantage]), torch.ones(1, len(ratios))


# ---------------------------------------------------------------- advantages


def test_group_advantages_unbiased_std_and_zero_std_group():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.0, 1.0, 1.0, 0.0]])
    adv = group_advantages(rewards, eps=1e-6)  # [3, 4]
    # Row 0: mean 2; squared deviations 1, 0, 1, 0 -> unbiased var 2/3, std 0.816497.
    s0 = math.sqrt(2 / 3) + 1e-6
    torch.testing.assert_close(adv[0], torch.tensor([-1 / s0, 0.0, 1 / s0, 0.0]))
    # Row 1: every reward equal -> exactly zero (no 0/eps noise).
    assert torch.equal(adv[1], torch.zeros(4))
    # Row 2: mean 0.5; var = 4 * 0.25 / 3 = 1/3, std 0.57735 -> +-0.5/0.57735 = +-0.866025.
    # (The biased std, 0.5, would give +-1: this checks the unbiased one is used.)
    torch.testing.assert_close(adv[2], torch.tensor([-0.866025, 0.866025, 0.866025, -0.866025]))


def test_group_advantages_without_std_scaling_keep_reward_units():
    rewards = torch.tensor([[0.70, 0.71, 0.72, 0.71], [0.1, 0.8, 0.8, 0.1], [0.5, 0.5, 0.5, 0.5]])  # [3, 4]
    adv = group_advantages(rewards, scale_by_std=False)  # [3, 4]
    assert torch.allclose(adv[0], torch.tensor([-0.01, 0.0, 0.01, 0.0]), atol=1e-6)  # tiny spread, tiny pull
    assert torch.allclose(adv[1], torch.tensor([-0.35, 0.35, 0.35, -0.35]), atol=1e-6)
    assert torch.equal(adv[2], torch.zeros(4))
    scaled = group_advantages(rewards)  # with std scaling both groups pull about equally hard
    assert scaled[0].abs().max() > 1.0 and scaled[1].abs().max() < 1.0


def test_group_advantages_single_sample_group_is_zero_not_nan():
    adv = group_advantages(torch.tensor([[0.3], [0.7]]))  # [2, 1]
    assert torch.equal(adv, torch.zeros(2, 1))


def test_group_advantages_eps_zero_and_integer_rewards():
    adv = group_advantages(torch.tensor([[2, 2], [0, 2]]), eps=0.0)  # [2, 2]
    # Row 0 all equal -> 0 (not 0/0). Row 1: mean 1, unbiased std sqrt(2) -> +-1/sqrt(2).
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.0], [-(0.5**0.5), 0.5**0.5]]))


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        group_advantages(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="NaN or inf"):
        group_advantages(torch.tensor([[1.0, float("nan")]]))


def test_frac_zero_std():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert zero_std_groups(rewards).tolist() == [False, True, True, False]
    assert frac_zero_std(rewards) == 0.5  # 2 of 4 groups
    assert frac_zero_std(torch.tensor([[0.1], [0.9]])) == 1.0  # G = 1: nothing to learn


# ---------------------------------------------------------------- policy loss


def test_clip_upward_for_positive_advantage():
    logp, old, adv, mask = _one_sequence([1.5, 1.1, 0.5], advantage=2.0)
    loss, stats = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.3)
    # pg1 = -2 * r            = [-3.0, -2.2, -1.0]
    # pg2 = -2 * clip(r, .8, 1.3) = [-2.6, -2.2, -1.6]
    # max                     = [-2.6, -2.2, -1.0] -> token-mean -5.8 / 3
    torch.testing.assert_close(loss, torch.tensor(-5.8 / 3))
    assert stats.clip_frac_high.item() == pytest.approx(1 / 3)  # ratio 1.5 > 1.3 with A > 0
    assert stats.clip_frac_low.item() == 0.0  # ratio 0.5 with A > 0 is not clipped
    assert stats.dual_clip_frac.item() == 0.0
    assert stats.ratio_mean.item() == pytest.approx(3.1 / 3)
    loss.backward()
    # d/dlogp of -A*r/3 is -A*r/3; the clipped token gets none: [0, -2*1.1/3, -2*0.5/3].
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -2.2 / 3, -1.0 / 3]]))


def test_clip_downward_for_negative_advantage():
    logp, old, adv, mask = _one_sequence([0.5, 1.5, 1.1], advantage=-1.0)
    loss, stats = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.3, clip_dual=3.0)
    # pg1 = r = [0.5, 1.5, 1.1]; pg2 = clip(r, .8, 1.3) = [0.8, 1.3, 1.1]
    # max = [0.8, 1.5, 1.1]; below the dual cap 3 -> token-mean 3.4 / 3
    torch.testing.assert_close(loss, torch.tensor(3.4 / 3))
    assert stats.clip_frac_low.item() == pytest.approx(1 / 3)  # ratio 0.5 < 0.8 with A < 0
    assert stats.clip_frac_high.item() == 0.0  # ratio 1.5 with A < 0 is not clipped
    assert stats.dual_clip_frac.item() == 0.0
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 1.5 / 3, 1.1 / 3]]))


def test_dual_clip_caps_negative_advantage_only():
    logp, old, adv, mask = _one_sequence([5.0, 2.0], advantage=-1.0)
    loss, stats = policy_loss(logp, old, adv, mask, clip_dual=3.0)
    # pg1 = [5, 2]; pg2 = [1.3, 1.3]; max = [5, 2]; min(., -A*3 = 3) = [3, 2] -> mean 2.5
    torch.testing.assert_close(loss, torch.tensor(2.5))
    assert stats.dual_clip_frac.item() == pytest.approx(0.5)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 2.0 / 2]]))  # capped token: 0
    # Without dual-clip the same tokens give mean(5, 2) = 3.5.
    off, off_stats = policy_loss(logp, old, adv, mask, clip_dual=None)
    torch.testing.assert_close(off, torch.tensor(3.5))
    assert off_stats.dual_clip_frac.item() == 0.0
    # A positive advantage is never dual-capped: ratio 5 -> max(-5, -1.3) = -1.3, not -3.
    pos, _ = policy_loss(logp[:, :1], old[:, :1], torch.tensor([1.0]), mask[:, :1])
    torch.testing.assert_close(pos, torch.tensor(-1.3))


def test_masked_tokens_do_not_contribute():
    torch.manual_seed(0)
    old = torch.randn(3, 5) - 2.0  # [3, 5]
    base = old + 0.3 * torch.randn(3, 5)  # [3, 5]
    adv = torch.tensor([1.0, -0.5, 2.0])  # [3]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])  # [3, 5]
    results = []
    for fill in (0.0, 100.0, float("-inf"), float("nan")):
        logp = base.masked_fill(mask == 0, fill).requires_grad_()  # [3, 5]
        old_f = old.masked_fill(mask == 0, -fill)  # [3, 5]; garbage in padding too
        for agg in ("token-mean", "seq-mean-token-mean"):
            loss, stats = policy_loss(logp, old_f, adv, mask, agg=agg)
            (grad,) = torch.autograd.grad(loss, logp)
            results.append((agg, loss.detach(), grad, stats.approx_kl, stats.ratio_mean))
    for agg in ("token-mean", "seq-mean-token-mean"):
        runs = [r for r in results if r[0] == agg]
        for _, loss, grad, kl, ratio in runs[1:]:
            torch.testing.assert_close(loss, runs[0][1])
            torch.testing.assert_close(grad, runs[0][2])
            torch.testing.assert_close(kl, runs[0][3])
            torch.testing.assert_close(ratio, runs[0][4])
        assert torch.all(runs[0][2][mask == 0] == 0)


def test_aggregations_differ_on_unequal_lengths():
    # ratio 1 everywhere, so each valid token's loss is -A: seq 0 = [-1], seq 1 = [1, 1, 1].
    logp = torch.zeros(2, 3)  # [2, 3]
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])  # [2, 3]
    adv = torch.tensor([1.0, -1.0])  # [2]
    token, _ = policy_loss(logp, logp, adv, mask, agg="token-mean")
    seq, _ = policy_loss(logp, logp, adv, mask, agg="seq-mean-token-mean")
    torch.testing.assert_close(token, torch.tensor(0.5))  # (-1 + 1 + 1 + 1) / 4
    torch.testing.assert_close(seq, torch.tensor(0.0))  # (-1 + 1) / 2
    with pytest.raises(ValueError, match="unknown agg"):
        policy_loss(logp, logp, adv, mask, agg="seq-mean-token-sum")


def test_seq_mean_skips_empty_sequences():
    values = torch.tensor([[2.0, 4.0], [7.0, 7.0]])  # [2, 2]
    mask = torch.tensor([[1, 1], [0, 0]])  # [2, 2]
    # Sequence 1 has no valid token: the mean is over sequence 0 only, (2 + 4) / 2 = 3.
    torch.testing.assert_close(aggregate(values, mask, "seq-mean-token-mean"), torch.tensor(3.0))


def test_gradient_flows_only_through_logp():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)  # [1, 2]
    old = torch.tensor([[-1.2, -1.9]], requires_grad=True)  # [1, 2]
    adv = torch.tensor([0.7], requires_grad=True)  # [1]
    ent = torch.tensor([[0.5, 0.6]], requires_grad=True)  # [1, 2]
    loss, stats = policy_loss(logp, old, adv, torch.ones(1, 2), entropy=ent)
    loss.backward()
    assert logp.grad is not None and torch.any(logp.grad != 0)
    assert old.grad is None and adv.grad is None and ent.grad is None
    assert all(not v.requires_grad for v in stats.as_dict().values())


def test_log_ratio_clamp_keeps_everything_finite():
    logp = torch.tensor([[100.0, -100.0]], requires_grad=True)  # [1, 2]
    old = torch.zeros(1, 2)  # [1, 2]
    mask = torch.ones(1, 2)  # [1, 2]
    # A < 0, dual off: loss = mean(exp(20), max(exp(-20), 0.8)) = (4.85165e8 + 0.8) / 2.
    loss, stats = policy_loss(logp, old, torch.tensor([-1.0]), mask, clip_dual=None)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx((math.exp(20) + 0.8) / 2, rel=1e-5)
    # k3 = mean(e^20 - 1 - 20, e^-20 - 1 + 20): finite.
    kl = ((math.exp(20) - 21) + (math.exp(-20) + 19)) / 2
    assert stats.approx_kl.item() == pytest.approx(kl, rel=1e-5)
    loss.backward()
    assert torch.all(torch.isfinite(logp.grad))


def test_approx_kl_and_entropy_stats():
    logp, old, adv, mask = _one_sequence([1.5, 0.5, 1.0], advantage=0.0)
    mask[0, 2] = 0
    entropy = torch.tensor([[1.0, 2.0, 9.0]])  # [1, 3]; the masked 9.0 must not count
    loss, stats = policy_loss(logp, old, adv, mask, entropy=entropy)
    # k3 = r - 1 - ln r: 1.5 -> 0.5 - 0.405465 = 0.094535; 0.5 -> -0.5 + 0.693147 = 0.193147
    assert stats.approx_kl.item() == pytest.approx((0.094535 + 0.193147) / 2, abs=1e-6)
    assert stats.entropy.item() == pytest.approx(1.5)
    assert stats.ratio_mean.item() == pytest.approx(1.0)
    assert loss.item() == 0.0  # A = 0
    assert set(stats.as_dict("train/")) == {
        "train/clip_frac_high", "train/clip_frac_low", "train/dual_clip_frac",
        "train/approx_kl", "train/ratio_mean", "train/entropy",
    }  # fmt: skip
    _, no_entropy = policy_loss(logp, old, adv, mask)
    assert "entropy" not in no_entropy.as_dict()


def test_policy_loss_rejects_bad_shapes_and_clips():
    logp = torch.zeros(2, 3)  # [2, 3]
    mask = torch.ones(2, 3)  # [2, 3]
    with pytest.raises(ValueError, match=r"advantages must be \[N\]"):
        policy_loss(logp, logp, torch.zeros(2, 1), mask)
    with pytest.raises(ValueError, match="mask"):
        policy_loss(logp, logp, torch.zeros(2), torch.ones(2, 4))
    with pytest.raises(ValueError, match="clip_dual"):
        policy_loss(logp, logp, torch.zeros(2), mask, clip_dual=0.9)


# ---------------------------------------------------------------- KL and masked_mean


def test_kl_estimators_on_known_values():
    logp = torch.tensor([[math.log(0.5), 0.0, -50.0]])  # [1, 3]
    ref = torch.tensor([[math.log(0.25), -50.0, 0.0]])  # [1, 3]
    # k1 = logp - ref: ln 2 = 0.693147, 50, -50
    k1 = kl_penalty(logp, ref, "k1")  # [1, 3]
    torch.testing.assert_close(k1, torch.tensor([[math.log(2), 50.0, -50.0]]))
    # k2 = 0.5 * (logp - ref)^2: 0.5 * 0.480453 = 0.240227, 1250, 1250
    torch.testing.assert_close(
        kl_penalty(logp, ref, "k2"), torch.tensor([[0.5 * math.log(2) ** 2, 1250.0, 1250.0]])
    )
    # k3, r = ref/p: 0.5 - 1 + ln 2 = 0.193147; r = e^-20 -> e^-20 + 19 -> clamp 10;
    # r = e^20 -> e^20 - 21 -> clamp 10.
    low = kl_penalty(logp, ref, "low_var_kl")  # [1, 3]
    torch.testing.assert_close(low, torch.tensor([[math.log(2) - 0.5, 10.0, 10.0]]))
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), low)
    # Identical policies: every estimator is 0.
    for kind in ("k1", "k2", "low_var_kl"):
        assert torch.equal(kl_penalty(ref[:, :1], ref[:, :1], kind), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="unknown KL kind"):
        kl_penalty(logp, ref, "kl")


def test_masked_mean_whole_and_per_row():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # [2, 3]
    mask = torch.tensor([[True, True, False], [False, False, False]])  # [2, 3]
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor(1.5))
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), torch.tensor([1.5, 0.0]))  # empty -> 0
    torch.testing.assert_close(masked_mean(x, torch.zeros(2, 3)), torch.tensor(0.0))


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_micro_batch_losses_with_the_batch_denominator_add_up_to_the_batch_loss(agg):
    """The update splits a rollout batch into micro-batches of any size; each passes the whole
    batch's count, so the pieces sum to the one-batch loss (and so do their gradients)."""
    torch.manual_seed(0)
    logp = torch.randn(5, 7, requires_grad=True)  # [N, T]
    old = logp.detach() + 0.1 * torch.randn(5, 7)
    advantages = torch.tensor([1.0, -0.5, 0.3, -0.8, 0.0])
    mask = torch.zeros(5, 7)
    for row, length in enumerate([7, 2, 5, 1, 4]):  # rows of different lengths
        mask[row, :length] = 1
    whole, _ = policy_loss(logp, old, advantages, mask, agg=agg)
    (grad_whole,) = torch.autograd.grad(whole, logp)
    denominator = batch_denominator(mask, agg)
    pieces = [policy_loss(logp[i : i + 2], old[i : i + 2], advantages[i : i + 2], mask[i : i + 2], agg=agg,
                          denominator=denominator)[0] for i in range(0, 5, 2)]
    (grad_pieces,) = torch.autograd.grad(sum(pieces), logp)
    torch.testing.assert_close(sum(pieces), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_pieces, grad_whole, atol=1e-6, rtol=0)
    if agg == "seq-mean-token-mean":
        return  # every row has tokens: a per-micro-batch mean scaled by its share of rows was already exact
    # a token mean per micro-batch scaled by its share of rows, as before, weighs tokens unevenly
    own = sum(policy_loss(logp[i : i + 2], old[i : i + 2], advantages[i : i + 2], mask[i : i + 2], agg=agg)[0]
              * len(range(i, min(5, i + 2))) / 5 for i in range(0, 5, 2))
    assert not torch.allclose(own, whole, atol=1e-4)
