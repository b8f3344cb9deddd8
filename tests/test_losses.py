"""Unit tests for ser.losses against hand-computed numbers (the arithmetic is in the comments)."""

import math

import pytest
import torch

from ser.losses import LOSSES, bradley_terry_loss, centring_penalty, margin_loss, pair_metrics, pairwise_loss


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def close(a, b, atol=1e-9):
    torch.testing.assert_close(a, b if isinstance(b, torch.Tensor) else t(b), atol=atol, rtol=0)


def close_acc(a, b):
    # accuracy is a float32 mean of booleans whatever the reward dtype
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, torch.tensor(b, dtype=torch.float32), atol=1e-7, rtol=0)


# --------------------------------------------------------------------------- #
# Bradley-Terry
# --------------------------------------------------------------------------- #
def test_bradley_terry_equal_rewards_is_log2():
    # d = r_c - r_r = 0 -> -log(sigmoid(0)) = -log(1/2) = log 2 = 0.693147...
    close(bradley_terry_loss(t([0.0]), t([0.0])), math.log(2))
    # every pair has d = 0, whatever the absolute level -> the mean is still log 2
    close(bradley_terry_loss(t([3.0, -7.5]), t([3.0, -7.5])), math.log(2))


def test_bradley_terry_mean_over_pairs():
    # d = [1, 2]: -log sigmoid(d) = log(1 + e^-d)
    #   log(1 + e^-1) = 0.31326168751822286
    #   log(1 + e^-2) = 0.12692801104297263
    #   mean          = 0.22009484928059775
    close(bradley_terry_loss(t([1.0, 2.0]), t([0.0, 0.0])), 0.22009484928059775)


def test_bradley_terry_with_margin():
    # margin 1, d = 0: -log sigmoid(0 - 1) = log(1 + e^1) = 1.3132616875182228
    close(bradley_terry_loss(t([0.0]), t([0.0]), margin=1.0), 1.3132616875182228)
    # margin 1, d = 1: -log sigmoid(1 - 1) = log 2: a margin shifts the curve by exactly `margin`
    close(bradley_terry_loss(t([1.5]), t([0.5]), margin=1.0), math.log(2))


def test_bradley_terry_is_antisymmetric_and_decreasing():
    # swapping chosen/rejected: d = -1 -> log(1 + e^1) = 1.31326..., d = +1 -> 0.31326...
    close(bradley_terry_loss(t([0.0]), t([1.0])), 1.3132616875182228)
    close(bradley_terry_loss(t([1.0]), t([0.0])), 0.31326168751822286)


def test_bradley_terry_gradient():
    # d/dr_c [-log sigmoid(r_c - r_r)] = -(1 - sigmoid(d)) = -0.5 at d = 0; d/dr_r = +0.5
    rc, rr = t([0.0]).requires_grad_(), t([0.0]).requires_grad_()
    bradley_terry_loss(rc, rr).backward()
    close(rc.grad, [-0.5])
    close(rr.grad, [0.5])


# --------------------------------------------------------------------------- #
# Hinge (margin) loss
# --------------------------------------------------------------------------- #
def test_margin_loss_inside_and_outside_margin():
    # margin 1, d = [0.25, 3.0, -0.5]
    #   max(0, 1 - 0.25) = 0.75   (inside the margin)
    #   max(0, 1 - 3.0)  = 0      (outside: correct by more than the margin)
    #   max(0, 1 + 0.5)  = 1.5    (wrong order)
    #   mean = (0.75 + 0 + 1.5) / 3 = 0.75
    close(margin_loss(t([0.25, 3.0, 0.0]), t([0.0, 0.0, 0.5]), margin=1.0), 0.75)


def test_margin_loss_default_margin_is_one():
    # d = 0 with the default Delta = 1 -> max(0, 1 - 0) = 1
    close(margin_loss(t([2.0]), t([2.0])), 1.0)
    # d exactly on the margin -> 0
    close(margin_loss(t([1.0]), t([0.0])), 0.0)


def test_margin_loss_zero_outside_margin():
    # margin 0.5, d = [1, 2] -> both outside -> 0
    close(margin_loss(t([1.0, 2.0]), t([0.0, 0.0]), margin=0.5), 0.0)


# --------------------------------------------------------------------------- #
# Centring penalty and the combined loss
# --------------------------------------------------------------------------- #
def test_centring_penalty():
    # r_c + r_r = [1 + 2, -2 + 1] = [3, -1] -> squares [9, 1] -> mean 5
    close(centring_penalty(t([1.0, -2.0]), t([2.0, 1.0])), 5.0)
    # centred scores: r_c = -r_r -> 0
    close(centring_penalty(t([1.5, -4.0]), t([-1.5, 4.0])), 0.0)


def test_pairwise_loss_bradley_terry_with_centring():
    rc, rr = t([1.0, -2.0]), t([2.0, 1.0])
    # d = [-1, -3]: log(1 + e^1) = 1.3132616875182228, log(1 + e^3) = 3.048587351573742
    #   BT mean = 2.1809245195459823
    #   centring = mean([3^2, (-1)^2]) = 5 -> 0.1 * 5 = 0.5
    #   total = 2.6809245195459823
    close(pairwise_loss(rc, rr, kind="bradley_terry", centring_coef=0.1), 2.6809245195459823)
    # coef 0 -> plain BT, and BT is the default kind
    close(pairwise_loss(rc, rr), 2.1809245195459823)
    close(pairwise_loss(rc, rr, centring_coef=0.0), bradley_terry_loss(rc, rr))


def test_pairwise_loss_margin_with_centring():
    rc, rr = t([1.0, -2.0]), t([2.0, 1.0])
    # hinge, margin 0.5, d = [-1, -3]: max(0, 0.5 + 1) = 1.5, max(0, 0.5 + 3) = 3.5 -> mean 2.5
    #   + 0.1 * centring 5 = 0.5 -> 3.0
    close(pairwise_loss(rc, rr, kind="margin", margin=0.5, centring_coef=0.1), 3.0)
    close(pairwise_loss(rc, rr, kind="margin", margin=0.5), 2.5)


def test_pairwise_loss_bradley_terry_passes_margin():
    # BT with margin 1 at d = 0 -> log(1 + e) = 1.3132616875182228
    close(pairwise_loss(t([0.0]), t([0.0]), kind="bradley_terry", margin=1.0), 1.3132616875182228)


def test_pairwise_loss_unknown_kind():
    with pytest.raises(ValueError, match=r"loss\.kind='hinge'") as e:
        pairwise_loss(t([0.0]), t([0.0]), kind="hinge")
    for k in LOSSES:  # the message lists the valid choices
        assert k in str(e.value)


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #
def test_pair_metrics():
    rc, rr = t([1.0, 2.0, 3.0, 0.0]), t([0.0, 2.0, 4.0, -1.0])
    m = pair_metrics(rc, rr)
    # 1 > 0 yes, 2 > 2 tie -> wrong, 3 > 4 no, 0 > -1 yes -> 2 / 4 = 0.5
    close_acc(m["accuracy"], 0.5)
    # margins [1, 0, -1, 1] -> mean 0.25
    close(m["margin"], 0.25)
    # all rewards [1, 2, 3, 0, 0, 2, 4, -1]: sum 11 -> mean 1.375
    close(m["reward_mean"], 1.375)
    # squared deviations from 1.375 sum to 19.875; unbiased: sqrt(19.875 / 7) = 1.685018016012207
    close(m["reward_std"], 1.685018016012207)


def test_pair_metrics_all_ties_is_zero_accuracy():
    m = pair_metrics(t([1.0, 1.0]), t([1.0, 1.0]))
    close_acc(m["accuracy"], 0.0)
    close(m["margin"], 0.0)
    close(m["reward_std"], 0.0)


def test_pair_metrics_single_pair_std_over_both():
    # one pair: rewards [1, 0] -> mean 0.5, unbiased std = sqrt(((0.5)^2 + (0.5)^2) / 1) = 0.70710678...
    m = pair_metrics(t([1.0]), t([0.0]))
    close_acc(m["accuracy"], 1.0)
    close(m["reward_mean"], 0.5)
    close(m["reward_std"], math.sqrt(0.5))
