"""Unit tests for ser.rl against hand-computed numbers."""

import math

import pytest
import torch

from ser.rl import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    gae,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
    whiten_scores,
)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def close(a, b, atol=1e-6):
    torch.testing.assert_close(a, t(b) if not isinstance(b, torch.Tensor) else b, atol=atol, rtol=0)


# --------------------------------------------------------------------------- #
# masked statistics
# --------------------------------------------------------------------------- #
def test_masked_mean_all_and_dim():
    x = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # all: (1 + 2 + 4) / 3 = 7/3
    close(masked_mean(x, m), 7.0 / 3.0)
    # per row: (1 + 2) / 2 = 1.5 ; 4 / 1 = 4
    close(masked_mean(x, m, dim=1), [1.5, 4.0])
    # empty mask -> 0, not NaN
    close(masked_mean(x, torch.zeros_like(m)), 0.0)


def test_masked_var():
    x = t([1.0, 3.0, 5.0, 100.0])
    m = t([1.0, 1.0, 1.0, 0.0])
    # mean over masked = 3; squared deviations 4, 0, 4 -> sum 8
    close(masked_var(x, m, unbiased=False), 8.0 / 3.0)
    close(masked_var(x, m, unbiased=True), 8.0 / 2.0)


def test_masked_whiten_uses_only_masked_entries():
    x = t([[1.0, 3.0, 100.0], [5.0, -50.0, 7.0]])
    m = t([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # masked entries: 1, 3, 5 -> mean 3, unbiased var (4+0+4)/2 = 4, std 2
    w = masked_whiten(x, m)
    s = math.sqrt(4.0 + 1e-8)
    close(w[m.bool()], [(1 - 3) / s, (3 - 3) / s, (5 - 3) / s])  # ~[-1, 0, 1]
    close(masked_mean(w, m), 0.0)
    close(masked_var(w, m), 1.0)
    # padded value 100 is transformed with the masked statistics: (100-3)/2
    close(w[0, 2], 97.0 / s)
    # shift_mean=False keeps the mean: [-1, 0, 1] + 3 = [2, 3, 4]
    w2 = masked_whiten(x, m, shift_mean=False)
    close(w2[m.bool()], [2.0, 3.0, 4.0], atol=1e-6)


def test_whiten_scores_hand_computed():
    # [1, 2, 3]: mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1 -> [-1, 0, 1] (up to eps)
    close(whiten_scores(t([1.0, 2.0, 3.0])), [-1.0, 0.0, 1.0])
    close(whiten_scores(t([1.0, 2.0, 3.0]), eps=1.0), [-0.5, 0.0, 0.5])
    # [2, 4, 4, 6]: mean 4, unbiased std sqrt((4 + 0 + 0 + 4) / 3) = sqrt(8/3)
    s = math.sqrt(8.0 / 3.0) + 1e-8
    close(whiten_scores(t([2.0, 4.0, 4.0, 6.0])), [-2.0 / s, 0.0, 0.0, 2.0 / s])
    # the inlined formula it replaces in the PPO step, bit for bit
    raw = torch.randn(7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(whiten_scores(raw), (raw - raw.mean()) / (raw.std() + 1e-8))


def test_whiten_scores_batch_of_one_is_unchanged():
    x = t([3.5])
    assert whiten_scores(x) is x


# --------------------------------------------------------------------------- #
# logits helpers
# --------------------------------------------------------------------------- #
def test_logprobs_and_entropy_from_logits():
    # logits [0, log 2, log 1] -> probs [1/4, 2/4, 1/4]
    logits = t([[[0.0, math.log(2.0), 0.0], [0.0, 0.0, 0.0]]])  # (1, 2, 3)
    labels = torch.tensor([[1, 2]])
    close(logprobs_from_logits(logits, labels), [[math.log(0.5), math.log(1.0 / 3.0)]])
    # H([1/4,1/2,1/4]) = 2*(1/4)*log 4 + (1/2)*log 2 = 1.5 log 2 ; uniform over 3 = log 3
    close(entropy_from_logits(logits), [[1.5 * math.log(2.0), math.log(3.0)]])


# --------------------------------------------------------------------------- #
# KL
# --------------------------------------------------------------------------- #
def test_kl_kinds():
    logp = t([0.0, -1.0])
    ref = t([-0.5, 0.0])
    # d = logp - ref = [0.5, -1.0]
    close(kl_penalty(logp, ref, "k1"), [0.5, -1.0])
    close(kl_penalty(logp, ref, "abs"), [0.5, 1.0])
    close(kl_penalty(logp, ref, "mse"), [0.125, 0.5])  # 0.5 * [0.25, 1]
    # r = ref - logp = [-0.5, 1.0]; (e^r - 1) - r
    # e^-0.5 - 1 + 0.5 = 0.6065306597 - 0.5 = 0.1065306597
    # e^1 - 1 - 1      = 2.7182818285 - 2   = 0.7182818285
    close(kl_penalty(logp, ref, "k3"), [0.1065306597, 0.7182818285])
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "bogus")


# --------------------------------------------------------------------------- #
# token rewards
# --------------------------------------------------------------------------- #
def test_token_rewards_score_at_last_real_token():
    score = t([1.0, 2.0, 3.0, 4.0])
    mask = torch.tensor(
        [
            [1, 1, 1, 0],  # last real token at index 2
            [1, 1, 0, 0],  # last real token at index 1
            [0, 1, 1, 0],  # left+right padding: last real index 2
            [0, 0, 0, 0],  # empty row: no score at all
        ]
    )
    ref = torch.zeros(4, 4, dtype=torch.float64)
    logp = t(
        [
            [0.1, 0.2, -0.1, 5.0],
            [0.3, 0.0, 7.0, 7.0],
            [9.0, 0.4, 0.2, 9.0],
            [1.0, 1.0, 1.0, 1.0],
        ]
    )
    rewards, kl = token_rewards(score, logp, ref, mask, kl_coef=0.5, kind="k1")
    # kl = (logp - ref) * mask
    close(kl, [[0.1, 0.2, -0.1, 0.0], [0.3, 0.0, 0.0, 0.0], [0.0, 0.4, 0.2, 0.0], [0.0] * 4])
    # rewards = -0.5 * kl, + score at last real token
    # row0: [-0.05, -0.10, 0.05 + 1.0, 0]
    # row1: [-0.15,  0.0 + 2.0, 0, 0]
    # row2: [0, -0.20, -0.10 + 3.0, 0]
    close(
        rewards,
        [
            [-0.05, -0.10, 1.05, 0.0],
            [-0.15, 2.00, 0.00, 0.0],
            [0.00, -0.20, 2.90, 0.0],
            [0.00, 0.00, 0.00, 0.0],
        ],
    )


def test_token_rewards_k3_kind_passes_through():
    logp = t([[0.0, -1.0]])
    ref = t([[-0.5, 0.0]])
    rewards, kl = token_rewards(t([0.0]), logp, ref, torch.ones(1, 2), kl_coef=1.0, kind="k3")
    close(kl, [[0.1065306597, 0.7182818285]])
    close(rewards, [[-0.1065306597, -0.7182818285]])


# --------------------------------------------------------------------------- #
# GAE
# --------------------------------------------------------------------------- #
REWARDS = [0.1, -0.2, 1.0]
VALUES = [0.5, 0.6, 0.7]


def test_gae_gamma1_lam095():
    adv, ret = gae(t([REWARDS]), t([VALUES]), torch.ones(1, 3), gamma=1.0, lam=0.95)
    # t=2: delta = 1.0 + 0 - 0.7 = 0.3                  A2 = 0.3
    # t=1: delta = -0.2 + 0.7 - 0.6 = -0.1              A1 = -0.1 + 0.95*0.3  = 0.185
    # t=0: delta = 0.1 + 0.6 - 0.5 = 0.2                A0 = 0.2 + 0.95*0.185 = 0.37575
    close(adv, [[0.37575, 0.185, 0.3]])
    # returns = A + V = [0.87575, 0.785, 1.0]
    close(ret, [[0.87575, 0.785, 1.0]])


def test_gae_gamma09_lam1_is_discounted_return_minus_value():
    adv, ret = gae(t([REWARDS]), t([VALUES]), torch.ones(1, 3), gamma=0.9, lam=1.0)
    # t=2: delta = 1.0 - 0.7 = 0.3                              A2 = 0.3
    # t=1: delta = -0.2 + 0.9*0.7 - 0.6 = -0.17                 A1 = -0.17 + 0.9*0.3 = 0.1
    # t=0: delta = 0.1 + 0.9*0.6 - 0.5 = 0.14                   A0 = 0.14 + 0.9*0.1 = 0.23
    # check: G = [0.1 + 0.9*0.7, -0.2 + 0.9*1.0, 1.0] = [0.73, 0.7, 1.0]; A = G - V
    close(adv, [[0.23, 0.1, 0.3]])
    close(ret, [[0.73, 0.7, 1.0]])


def test_gae_padded_row():
    rewards = t([REWARDS, [0.5, 2.0, 9.0]])  # 9.0 is garbage on padding
    values = t([VALUES, [0.2, 0.4, 5.0]])  # 5.0 is garbage on padding
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # row 0 unchanged from the unpadded example
    close(adv[0], [0.37575, 0.185, 0.3])
    # row 1, V beyond last real token = 0:
    # t=2: padded -> A2 = 0
    # t=1: delta = 2.0 + 0 - 0.4 = 1.6                  A1 = 1.6
    # t=0: delta = 0.5 + 0.4 - 0.2 = 0.7                A0 = 0.7 + 0.95*1.6 = 2.22
    # (a leak of V=5.0 would give A1 = 2.0 + 5.0 - 0.4 = 6.6)
    close(adv[1], [2.22, 1.6, 0.0])
    close(ret[1], [2.42, 2.0, 0.0])


def test_gae_has_no_grad():
    v = t([VALUES]).requires_grad_(True)
    adv, ret = gae(t([REWARDS]), v, torch.ones(1, 3))
    assert not adv.requires_grad and not ret.requires_grad


# --------------------------------------------------------------------------- #
# policy loss
# --------------------------------------------------------------------------- #
def test_policy_loss_clipping():
    ratios = [1.1, 1.5, 0.5, 1.5, 0.5, 3.0]
    adv = t([1.0, 1.0, -1.0, -1.0, 1.0, 100.0])
    mask = t([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])  # last token is padding
    logp = t([math.log(r) for r in ratios]).requires_grad_(True)
    old = torch.zeros(6, dtype=torch.float64)
    loss, clip_frac, approx_kl = policy_loss(logp, old, adv, mask, clip_range=0.2)
    # per token max(-A*rho, -A*clip(rho, 0.8, 1.2)):
    # 0: rho 1.1, A=+1: max(-1.1, -1.1) = -1.1   inside range      (not clipped)
    # 1: rho 1.5, A=+1: max(-1.5, -1.2) = -1.2   clipped (pg2 > pg1)
    # 2: rho 0.5, A=-1: max( 0.5,  0.8) =  0.8   clipped
    # 3: rho 1.5, A=-1: max( 1.5,  1.2) =  1.5   outside but pessimistic -> unclipped
    # 4: rho 0.5, A=+1: max(-0.5, -0.8) = -0.5   outside but pessimistic -> unclipped
    # mean = (-1.1 - 1.2 + 0.8 + 1.5 - 0.5) / 5 = -0.5 / 5 = -0.1
    close(loss, -0.1)
    close(clip_frac, 2.0 / 5.0)
    # approx_kl = mean(0.5 * log(rho)^2)
    # log 1.1 = 0.0953102, log 1.5 = 0.4054651, log 0.5 = -0.6931472
    # squares: 0.0090840 + 0.1644020 + 0.4804530 + 0.1644020 + 0.4804530 = 1.2987940
    # 0.5 * 1.2987940 / 5 = 0.1298794
    close(approx_kl, 0.1298794, atol=1e-6)
    # gradient d loss / d logp = -A*rho/5 on unclipped tokens, 0 on clipped/padded ones
    loss.backward()
    close(logp.grad, [-1.1 / 5, 0.0, 0.0, 1.5 / 5, -0.5 / 5, 0.0])


def test_policy_loss_ratio_one_is_minus_mean_advantage():
    adv = t([[2.0, -1.0, 4.0]])
    mask = t([[1.0, 1.0, 0.0]])
    z = torch.zeros(1, 3, dtype=torch.float64)
    loss, clip_frac, approx_kl = policy_loss(z, z, adv, mask)
    # rho = 1 everywhere: loss = -(2 - 1)/2 = -0.5
    close(loss, -0.5)
    close(clip_frac, 0.0)
    close(approx_kl, 0.0)


# --------------------------------------------------------------------------- #
# value loss
# --------------------------------------------------------------------------- #
def test_value_loss_clipping():
    values = t([0.1, 0.5, 0.5, -0.6, -0.6, 10.0])
    old = torch.zeros(6, dtype=torch.float64)
    returns = t([0.5, 1.0, 0.3, 0.0, -1.0, -10.0])
    mask = t([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    loss, clip_frac = value_loss(values, old, returns, mask, clip_range_value=0.2)
    # v_clip = clip(v, -0.2, 0.2); max((v-R)^2, (v_clip-R)^2):
    # 0: v 0.1 -> 0.1 : (−0.4)^2=0.16, 0.16 -> 0.16  not clipped
    # 1: v 0.5 -> 0.2 : 0.25, (−0.8)^2=0.64 -> 0.64  clipped
    # 2: v 0.5 -> 0.2 : 0.04, 0.01          -> 0.04  not clipped
    # 3: v-0.6 -> -0.2: 0.36, 0.04          -> 0.36  not clipped
    # 4: v-0.6 -> -0.2: 0.16, 0.64          -> 0.64  clipped
    # loss = 0.5 * (0.16+0.64+0.04+0.36+0.64)/5 = 0.5 * 1.84/5 = 0.184
    close(loss, 0.184)
    close(clip_frac, 2.0 / 5.0)


# --------------------------------------------------------------------------- #
# KL controllers
# --------------------------------------------------------------------------- #
def test_adaptive_kl_controller():
    # init 0.1, target 6, horizon 10000, n_steps 1000 -> n/h = 0.1
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # kl 6.6: e = 6.6/6 - 1 = 0.1 (inside clip) -> mult 1 + 0.1*0.1 = 1.01
    assert c.update(6.6, 1000) == pytest.approx(0.101)
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # kl 9: e = 0.5 -> clipped to 0.2 -> mult 1.02
    c.update(torch.tensor(9.0), 1000)
    assert c.value == pytest.approx(0.102)
    # kl 100: still clipped to +20% -> 0.102 * 1.02 = 0.10404
    c.update(100.0, 1000)
    assert c.value == pytest.approx(0.10404)
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # kl 4.8: e = -0.2 exactly -> mult 0.98
    c.update(4.8, 1000)
    assert c.value == pytest.approx(0.098)
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # kl 0: e = -1 -> clipped to -0.2 -> 0.098
    c.update(0.0, 1000)
    assert c.value == pytest.approx(0.098)
    # kl 5.7: e = -0.05 -> 0.098 * (1 - 0.005) = 0.09751
    c.update(5.7, 1000)
    assert c.value == pytest.approx(0.09751)


def test_kl_controllers_state_dict_roundtrip():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(9.0, 1000)
    state = c.state_dict()
    d = AdaptiveKLController(0.5, target=1.0, horizon=5)
    d.load_state_dict(state)
    assert (d.value, d.target, d.horizon) == (pytest.approx(0.102), 6.0, 10000.0)
    # both continue identically
    assert d.update(3.0, 500) == pytest.approx(c.update(3.0, 500))

    f = FixedKLController(0.3)
    g = FixedKLController(0.0)
    g.load_state_dict(f.state_dict())
    assert g.value == 0.3


def test_fixed_kl_controller_never_changes():
    f = FixedKLController(0.05)
    for kl in [0.0, 1.0, 100.0, -5.0]:
        f.update(kl, 1000)
    assert f.value == 0.05


def test_adaptive_controller_rejects_bad_args():
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=10)
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=1.0, horizon=0)
