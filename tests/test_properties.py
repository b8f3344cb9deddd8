"""Property-based tests (hypothesis) of the pure functions on random inputs: ties, empty arrays,
NaN and extreme scores (+-1e30, inf where meaningful). Each property is one a reader can check by
hand; a degenerate input must give a defined result (NaN, an empty selection, STOP) or a clear
ValueError, never a crash deep inside or a silently wrong number."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as hs

from ser import status as st
from ser.calibration import (cross_fitted, expected_calibration_error, fit_temperature, pair_probability,
                             precision_threshold, reliability, temperature_problem)
from ser.loop import label_pool
from ser.losses import bradley_terry_loss, margin_loss, pair_metrics, pairwise_loss
from ser.rl import gae, masked_mean, masked_whiten, whiten_scores
from ser.selection import coverage_curve, mc_agreement, select, top_k, top_k_precision
from ser.significance import across_seeds, holm, mcnemar_exact, paired_bootstrap, seed_bootstrap

# fast and reproducible: the whole file runs in well under 30 s on one core
settings.register_profile("ser", max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ser")
# inf - inf on purpose (a diverged RM): numpy warns, the functions under test must then say NaN
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")

INF, NAN = math.inf, math.nan
EXTREME = [0.0, 1e30, -1e30, 1e-30, -1e-30]
# scores drawn often from a few values (ties), sometimes wide, sometimes extreme
finite = hs.one_of(hs.sampled_from([-1.0, 0.0, 0.5, 1.0]), hs.floats(-1e6, 1e6), hs.sampled_from(EXTREME))
anything = hs.one_of(finite, hs.sampled_from([INF, -INF, NAN]))


def pairs_of(elements, min_size: int = 0, max_size: int = 30):
    """Two equally long float arrays (the two answers' scores of the same pairs)."""
    return hs.integers(min_size, max_size).flatmap(
        lambda n: hs.tuples(hs.lists(elements, min_size=n, max_size=n), hs.lists(elements, min_size=n, max_size=n))
    ).map(lambda ab: (np.array(ab[0], dtype=np.float64), np.array(ab[1], dtype=np.float64)))


def unique_sorted_subset(index: np.ndarray, n: int) -> bool:
    index = np.asarray(index)
    return bool(np.all((index >= 0) & (index < n)) and np.all(np.diff(index) > 0))


THRESHOLDS = [st.Thresholds(), st.Thresholds(min_count=1), st.Thresholds(tau_high=0.5, tau_low=0.5, min_count=3),
              st.Thresholds(rule="authors")]


# --------------------------------------------------------------------------------------------
# ser.status
# --------------------------------------------------------------------------------------------

@given(hs.lists(anything, max_size=30))
def test_probabilities_in_unit_interval_monotone_and_symmetric(xs):
    x = np.array(xs, dtype=np.float64)
    p = st.probabilities(x)
    known = ~np.isnan(x)
    assert np.all(np.isnan(p[~known]))  # NaN in, NaN out: never a made-up probability
    assert np.all((p[known] >= 0) & (p[known] <= 1))
    assert np.allclose(p[known] + st.probabilities(-x[known]), 1.0)  # sigmoid(x) + sigmoid(-x) = 1
    order = np.argsort(x[known], kind="stable")
    assert np.all(np.diff(p[known][order]) >= 0)
    assert st.probabilities([INF, -INF]).tolist() == [1.0, 0.0]


@given(pairs_of(hs.one_of(hs.sampled_from([0.0, 0.12, 0.45, 0.5, 0.55, 0.88, 1.0]), hs.floats(0, 1))),
       hs.sampled_from(THRESHOLDS))
def test_status_selection_is_a_subset_consistent_with_the_decision(p12, th):
    p1, p2 = p12
    n = len(p1)
    d = st.decide_status(p1, p2, th)
    sel = st.select_pairs(p1, p2, d.status, th)
    assert d.pool_size == n and 0 <= d.n_easy <= n and 0 <= d.n_hard <= n
    assert unique_sorted_subset(sel.index, n) and len(sel.first_is_chosen) == len(sel)
    assert np.all(p1[sel.index] != p2[sel.index])  # an exact tie is never kept
    assert np.array_equal(sel.first_is_chosen, p1[sel.index] > p2[sel.index])
    if n == 0:
        assert d.status == st.Status.STOP
    if d.status == st.Status.EASY:
        assert len(sel) == d.n_easy >= d.min_count
    elif d.status == st.Status.HARD:
        assert d.n_easy < d.min_count <= d.n_hard and len(sel) <= d.n_hard
    elif d.status == st.Status.STOP:
        assert len(sel) == 0
    # swapping the two answers keeps the same pairs, oriented the other way
    swapped = st.select_pairs(p2, p1, d.status, th)
    assert np.array_equal(swapped.index, sel.index) and np.array_equal(swapped.first_is_chosen, ~sel.first_is_chosen)
    counts, _ = st.gap_histogram(p1, p2)
    assert counts.sum() == n
    prec = st.pseudo_label_precision(sel, np.ones(n, dtype=bool))
    assert (prec is None) == (len(sel) == 0) and (prec is None or 0 <= prec <= 1)


@given(hs.lists(finite, min_size=2, max_size=30))
def test_centring_and_scaling(xs):
    x = np.array(xs)
    c = st.centre_scores(x, "pool_mean")
    assert abs(c.mean()) <= 1e-9 * max(1.0, np.abs(x).max())
    s = st.scale_scores(c, "pool_std", x)
    if x.std() > 0:
        assert s.std() == pytest.approx(1.0, rel=1e-9)
    else:  # no spread to divide by: unchanged (all 0 after centring)
        assert np.array_equal(s, c)


@given(pairs_of(finite, min_size=1), hs.sampled_from(["none", "pool_mean", "labeled_mean"]),
       hs.sampled_from(["none", "pool_std", "labeled_std"]), hs.sampled_from(THRESHOLDS))
def test_label_pool_never_fails_on_ties_or_extreme_scores(s12, centring, scaling, th):
    """``ser.loop.label_pool`` (pure) on any finite pool scores: a subset of the alive pairs, in range."""
    s1, s2 = s12
    n = len(s1)
    alive = np.arange(10, 10 + n)  # pool positions of the alive pairs
    hidden = np.zeros(10 + n, dtype=bool)
    lab = label_pool(np.r_[s1, s2], np.array([1.0, -1.0]), alive, hidden, th, centring, scaling)
    assert set(lab.pool_index.tolist()) <= set(alive.tolist()) and len(set(lab.pool_index.tolist())) == len(lab.pool_index)
    assert lab.stop == (len(lab.pool_index) == 0 or lab.fields["status"] == "STOP")
    p = np.r_[lab.arrays["p1"], lab.arrays["p2"]]
    assert np.all((p >= 0) & (p <= 1))


@given(hs.sampled_from(THRESHOLDS), hs.integers(0, 5))
def test_all_tied_pool_is_stop(th, n):
    s = np.full(2 * n, 0.3)
    lab = label_pool(s, np.array([0.3, 0.3]), np.arange(n), np.zeros(n, bool), th, "pool_mean", "pool_std") if n else None
    d = st.decide_status(np.full(n, 0.5), np.full(n, 0.5), th)
    assert d.status == st.Status.STOP
    if lab is not None:
        assert lab.stop and lab.fields["kept"] == 0


# --------------------------------------------------------------------------------------------
# ser.calibration
# --------------------------------------------------------------------------------------------

@given(pairs_of(hs.one_of(finite, hs.sampled_from([INF, -INF]))), hs.sampled_from([1e-4, 0.3, 1.0, 7.0, 1e4]))
def test_pair_probability_and_confidence_ranges(s12, t):
    s1, s2 = s12
    assume(not np.any(np.isinf(s1) & np.isinf(s2)))  # inf - inf has no sign
    p, conf = pair_probability(s1, s2, t)
    q, conf_swapped = pair_probability(s2, s1, t)
    assert np.all((p >= 0) & (p <= 1)) and np.all((conf >= 0.5) & (conf <= 1))
    assert np.allclose(p + q, 1.0) and np.array_equal(conf, conf_swapped)
    assert np.all((p > 0.5) == (s1 > s2)) or not np.all(np.abs(s1 - s2) / t > 1e-12)


@given(hs.lists(hs.one_of(finite, hs.sampled_from([INF, NAN])), max_size=30))
def test_fit_temperature_defined_or_one_clear_error(diffs):
    d = np.array(diffs, dtype=np.float64)
    problem = temperature_problem(d)
    if problem is not None:
        with pytest.raises(ValueError, match="fit_temperature"):
            fit_temperature(d)
        return
    t = fit_temperature(d)
    assert 1e-4 * 0.999 <= t <= 1e4 * 1.001

    def nll(x):
        return float(np.logaddexp(0.0, -d / x).sum())

    # the fitted T is a minimum: not worse than its neighbours (within float rounding)
    for other in (t * 1.01, t / 1.01):
        if 1e-4 <= other <= 1e4:
            assert nll(t) <= nll(other) * (1 + 1e-9) + 1e-9


@given(hs.lists(hs.one_of(hs.sampled_from([0.5, 0.55, 0.95, 1.0, NAN]), hs.floats(0.5, 1.0)), max_size=40),
       hs.randoms(use_true_random=False))
def test_ece_and_reliability_bins(conf, rnd):
    conf = np.array(conf, dtype=np.float64)
    ok = np.array([rnd.random() < 0.5 for _ in conf], dtype=bool)
    bins = reliability(conf, ok)
    assert sum(b["n"] for b in bins) == int(np.sum(~np.isnan(conf)))  # a NaN confidence is in no bin
    for b in bins:
        assert b["low"] - 1e-12 <= b["confidence"] <= b["high"] + 1e-12 and 0 <= b["accuracy"] <= 1
    ece = expected_calibration_error(conf, ok)
    assert math.isnan(ece) == (len(conf) == 0 or bool(np.isnan(conf).any()))
    assert math.isnan(ece) or 0 <= ece <= 1


@given(hs.lists(hs.sampled_from([0.5, 0.6, 0.6, 0.7, 0.9, 1.0]), max_size=40), hs.randoms(use_true_random=False),
       hs.sampled_from([0.5, 0.8, 1.0]), hs.integers(1, 5))
def test_precision_threshold_keeps_what_it_promises(conf, rnd, target, min_pairs):
    conf = np.array(conf, dtype=np.float64)
    ok = np.array([rnd.random() < 0.7 for _ in conf], dtype=bool)
    cut = precision_threshold(conf, ok, target, min_pairs)
    if cut is not None:
        kept = conf >= cut
        assert cut in conf and kept.sum() >= min_pairs and ok[kept].mean() >= target


@given(pairs_of(anything, max_size=12))
def test_cross_fitted_never_raises_and_says_what_is_undefined(cr):
    chosen, rejected = cr
    cal = cross_fitted(chosen, rejected)
    for key in ("ece", "ece_raw"):
        assert math.isnan(cal[key]) or 0 <= cal[key] <= 1
    assert (cal["note"] is None) == (math.isfinite(cal["ece"]) and math.isfinite(cal["temperature"]))
    assert sum(b["n"] for b in cal["bins"]) in (0, len(chosen))


@pytest.mark.parametrize("chosen,rejected", [
    ([1.0, 2.0], [1.0, 2.0]),  # a collapsed RM: every score difference 0
    ([1.0, 2.0, 3.0], [1.0, 2.0, 0.0]),  # 3 pairs, a fitting half with all-zero differences
    ([0.5], [0.2]),  # 1 pair: no half to fit on
    ([], []),
])
def test_cross_fitted_degenerate_validation_is_nan_not_an_error(chosen, rejected):
    cal = cross_fitted(chosen, rejected)
    assert math.isnan(cal["ece"]) and cal["bins"] == [] and cal["note"]


# --------------------------------------------------------------------------------------------
# ser.selection
# --------------------------------------------------------------------------------------------

@given(pairs_of(anything), pairs_of(anything, max_size=10), hs.sampled_from(["pairwise", "precision_target", "consistent"]),
       hs.sampled_from([0.5, 0.7, 0.95]), hs.randoms(use_true_random=False))
def test_confidence_selection_is_a_subset_and_survives_degenerate_validation(pool, val, strategy, confidence, rnd):
    s1, s2 = pool
    n = len(s1)
    prev = np.array([rnd.choice([-1, 0, 1]) for _ in range(n)], dtype=np.int64)
    mc = np.array([rnd.random() for _ in range(n)])
    cs = select(strategy, s1, s2, val[0], val[1], confidence, 0.8, 2, prev, mc, 0.5)
    assert unique_sorted_subset(cs.index, n) and len(cs.first_is_chosen) == len(cs.index)
    if temperature_problem(val[0] - val[1]) is not None:  # no temperature: nothing kept, and said so
        assert len(cs.index) == 0 and math.isnan(cs.fields["temperature"]) and cs.fields["note"]
        return
    p, conf = pair_probability(s1, s2, cs.fields["temperature"])
    assert np.array_equal(cs.first_is_chosen, p[cs.index] > 0.5)
    assert np.all(mc[cs.index] >= 0.5)
    if cs.fields["cut"] is not None:
        assert np.all(conf[cs.index] >= cs.fields["cut"])
    else:
        assert len(cs.index) == 0
    est = cs.fields["estimated_precision"]
    assert est is None or 0 <= est <= 1


@given(hs.lists(hs.one_of(hs.sampled_from([0.0, 1.0]), hs.floats(-1e30, 1e30)), max_size=30),
       hs.randoms(use_true_random=False), hs.integers(0, 35))
def test_top_k_and_coverage_curve(score, rnd, k):
    score = np.array(score, dtype=np.float64)
    n = len(score)
    right = np.array([rnd.random() < 0.5 for _ in range(n)], dtype=bool)
    mask = np.array([rnd.random() < 0.7 for _ in range(n)], dtype=bool)
    idx = top_k(score, k, mask)
    assert len(set(idx.tolist())) == len(idx) == min(k, int(mask.sum())) and np.all(mask[idx])
    assert np.all(np.diff(score[idx]) <= 0)  # highest first
    prec = top_k_precision(score, right, k, mask)
    assert prec is None or 0 <= prec <= 1
    cov, pr = coverage_curve(score, right, mask)
    assert len(cov) == len(pr) == int(mask.sum())
    assert np.all(np.diff(cov) > 0) and np.all((pr >= 0) & (pr <= 1))


@given(pairs_of(finite, min_size=1, max_size=10), hs.integers(1, 4), hs.randoms(use_true_random=False))
def test_mc_agreement_is_a_share(s12, passes, rnd):
    s1, s2 = s12
    runs = [(s1 + np.array([rnd.gauss(0, 1) for _ in s1]), s2) for _ in range(passes)]
    a = mc_agreement(s1, s2, runs)
    assert a.shape == s1.shape and np.all((a >= 0) & (a <= 1))


# --------------------------------------------------------------------------------------------
# ser.significance (read-only here: its properties are checked, not changed)
# --------------------------------------------------------------------------------------------

outcomes = hs.integers(1, 60).flatmap(lambda n: hs.tuples(hs.lists(hs.booleans(), min_size=n, max_size=n),
                                                          hs.lists(hs.booleans(), min_size=n, max_size=n)))


@given(outcomes, hs.integers(0, 3))
def test_paired_bootstrap_ci_contains_the_estimate(ab, seed):
    a, b = ab
    ci = paired_bootstrap(a, b, n_boot=400, seed=seed)
    assert ci.estimate == pytest.approx(np.mean(b) - np.mean(a))
    assert -1 <= ci.low <= ci.estimate + 1e-12 and ci.estimate - 1e-12 <= ci.high <= 1 and ci.n == len(a)
    same = paired_bootstrap(a, a, n_boot=100, seed=seed)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


@given(outcomes)
def test_mcnemar_is_a_probability_and_symmetric(ab):
    a, b = ab
    m, swapped = mcnemar_exact(a, b), mcnemar_exact(b, a)
    assert 0 <= m["p"] <= 1 and m["p"] == swapped["p"]
    assert (m["a_only"], m["b_only"]) == (swapped["b_only"], swapped["a_only"])


@given(hs.lists(outcomes, min_size=1, max_size=4), hs.integers(0, 3))
def test_across_seeds_gain_ci_contains_the_estimate(runs, seed):
    summary = across_seeds([a for a, _ in runs], [b for _, b in runs], n_boot=300, seed=seed)
    g = summary.gain
    assert g.estimate == pytest.approx(np.mean([np.mean(b) - np.mean(a) for a, b in runs]))
    assert g.low <= g.estimate + 1e-12 and g.estimate <= g.high + 1e-12
    assert g.n == (len(runs) if len(runs) > 1 else len(runs[0][0]))  # one run: its pairs' paired bootstrap
    old = seed_bootstrap([a for a, _ in runs], [b for _, b in runs], n_boot=300, seed=seed)
    assert old.estimate == pytest.approx(g.estimate) and old.low <= old.estimate + 1e-12 <= old.high + 2e-12


@given(hs.lists(hs.one_of(hs.none(), hs.floats(0, 1)), max_size=12))
def test_holm_adjusted_p_values(ps):
    adj = holm(ps)
    assert [a is None for a in adj] == [p is None for p in ps]
    for p, a in zip(ps, adj):
        assert p is None or p <= a <= 1


def test_significance_on_no_pairs_is_one_clear_error():
    for f in (paired_bootstrap, mcnemar_exact):
        with pytest.raises(ValueError, match="no pairs"):
            f([], [])


# --------------------------------------------------------------------------------------------
# ser.losses
# --------------------------------------------------------------------------------------------

bounded = hs.one_of(hs.sampled_from([0.0, 1.0, 1e30, -1e30]), hs.floats(-1e6, 1e6))


def tensors(elements=bounded, min_size=1):
    return pairs_of(elements, min_size=min_size, max_size=16).map(lambda ab: (torch.tensor(ab[0]), torch.tensor(ab[1])))


@given(tensors(), hs.sampled_from([0.0, 0.5, 1.0]), hs.sampled_from(["bradley_terry", "margin"]), hs.sampled_from([0.0, 0.1]))
def test_losses_finite_non_negative_with_finite_gradients(rr, margin, kind, coef):
    rc, rj = (x.clone().requires_grad_() for x in rr)
    loss = pairwise_loss(rc, rj, kind, margin, coef)
    loss.backward()
    assert torch.isfinite(loss) and loss >= 0
    assert torch.isfinite(rc.grad).all() and torch.isfinite(rj.grad).all()
    m = pair_metrics(rc.detach(), rj.detach())
    assert 0 <= m["accuracy"] <= 1 and torch.isfinite(m["reward_std"])


@given(tensors(hs.floats(-1e3, 1e3)), hs.floats(-1e3, 1e3))
def test_losses_symmetries(rr, c):
    rc, rj = rr
    # -log sigmoid(d) + log sigmoid(-d) = -d: swapping the answers changes the BT loss by mean(d)
    d = (rc - rj).mean()
    assert (bradley_terry_loss(rc, rj) - bradley_terry_loss(rj, rc)).item() == pytest.approx(-d.item(), abs=1e-6)
    # only score differences matter: shifting every score leaves both losses unchanged
    assert bradley_terry_loss(rc + c, rj + c).item() == pytest.approx(bradley_terry_loss(rc, rj).item(), abs=1e-6)
    assert margin_loss(rc + c, rj + c).item() == pytest.approx(margin_loss(rc, rj).item(), abs=1e-6)
    # negating the scores and swapping the answers is the same ranking
    assert margin_loss(-rj, -rc).item() == pytest.approx(margin_loss(rc, rj).item(), abs=1e-9)
    assert bradley_terry_loss(rc, rc).item() == pytest.approx(math.log(2))


def test_loss_of_an_empty_batch_is_one_clear_error():
    with pytest.raises(ValueError, match="empty batch"):
        pairwise_loss(torch.zeros(0), torch.zeros(0))


# --------------------------------------------------------------------------------------------
# ser.rl: whitening and GAE
# --------------------------------------------------------------------------------------------

@given(hs.lists(bounded, max_size=20), hs.sampled_from([torch.float32, torch.float64]))
def test_whiten_scores_mean_zero_std_one_or_defined(xs, dtype):
    x = torch.tensor(xs, dtype=dtype)
    w = whiten_scores(x)
    assert w.dtype == x.dtype and w.shape == x.shape and torch.isfinite(w).all()
    if x.numel() <= 1:
        assert torch.equal(w, x)  # no spread to measure: unchanged
    elif torch.all(x == x[0]):
        assert torch.all(w == 0)  # constant scores: all 0
    elif (x.double().std() / x.double().abs().max()) > 1e-6:  # a spread the dtype resolves
        assert abs(w.double().mean().item()) < 1e-5 and w.double().std().item() == pytest.approx(1.0, abs=1e-4)


@given(hs.integers(1, 4).flatmap(lambda b: hs.integers(1, 6).flatmap(lambda t: hs.tuples(
    hs.lists(hs.lists(bounded, min_size=t, max_size=t), min_size=b, max_size=b),
    hs.lists(hs.lists(hs.booleans(), min_size=t, max_size=t), min_size=b, max_size=b)))))
def test_masked_whiten_over_the_masked_entries(xm):
    x = torch.tensor(xm[0], dtype=torch.float64)
    m = torch.tensor(xm[1])
    w = masked_whiten(x, m)
    assert torch.isfinite(w).all()
    real = x[m]
    if real.numel() >= 2 and not torch.all(real == real[0]):
        assert abs(masked_mean(w, m).item()) < 1e-6
        if real.var() > 1e-3:  # var + 1e-8 in the denominator (as TRL): std 1 once the spread dwarfs it
            assert w[m].std().item() == pytest.approx(1.0, abs=1e-4)
    elif real.numel() >= 1:
        assert torch.all(w[m] == 0)  # constant (or single) masked entries whiten to 0


@given(hs.integers(1, 3).flatmap(lambda b: hs.integers(1, 6).flatmap(lambda t: hs.tuples(
    hs.lists(hs.lists(hs.floats(-1e3, 1e3), min_size=t, max_size=t), min_size=b, max_size=b),
    hs.lists(hs.lists(hs.floats(-1e3, 1e3), min_size=t, max_size=t), min_size=b, max_size=b),
    hs.lists(hs.integers(0, t), min_size=b, max_size=b)))), hs.sampled_from([0.9, 1.0]))
def test_gae_lam1_returns_are_discounted_rewards_and_padding_is_zero(rvl, gamma):
    rewards = torch.tensor(rvl[0], dtype=torch.float64)
    values = torch.tensor(rvl[1], dtype=torch.float64)
    B, T = rewards.shape
    mask = (torch.arange(T)[None, :] < torch.tensor(rvl[2])[:, None]).double()  # right padding, rows may be empty
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=1.0)
    assert torch.isfinite(adv).all() and torch.isfinite(ret).all()
    assert torch.all(adv[mask == 0] == 0)
    expected = torch.zeros_like(rewards)  # R_t = sum_{k >= t} gamma^(k - t) r_k over the real tokens
    for b in range(B):
        for t in range(T):
            expected[b, t] = sum(gamma ** (k - t) * rewards[b, k] for k in range(t, T) if mask[b, k])
    assert torch.allclose(ret * mask, expected * mask, atol=1e-6 * (1 + rewards.abs().sum().item()))
