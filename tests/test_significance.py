"""Paired statistics on hand-made outcomes (ser/significance.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ser.significance import (Interval, across_seeds, fieller, holm, mcnemar_exact, pair_ids, paired_bootstrap, power,
                              power_pairs, seed_bootstrap, seed_moments, t_pvalue, t_quantile, verdict)


def _pairs(both: int, b_only: int, a_only: int, neither: int):
    a = [1] * both + [0] * b_only + [1] * a_only + [0] * neither
    b = [1] * both + [1] * b_only + [0] * a_only + [0] * neither
    return a, b


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact(*_pairs(10, 5, 0, 3)) == {"b_only": 5, "a_only": 0, "p": 2 / 32}
    assert mcnemar_exact(*_pairs(0, 6, 1, 0))["p"] == pytest.approx(2 * (1 + 7) / 128)
    assert mcnemar_exact(*_pairs(4, 3, 3, 1))["p"] == 1.0  # balanced discordance
    assert mcnemar_exact(*_pairs(4, 0, 0, 1))["p"] == 1.0  # no discordant pair
    with pytest.raises(ValueError, match="same pairs"):
        mcnemar_exact([1, 0], [1])


def test_paired_bootstrap_point_and_width():
    a, b = _pairs(50, 20, 10, 20)  # 100 pairs: +10 points
    ci = paired_bootstrap(a, b, n_boot=20_000)
    assert ci.estimate == pytest.approx(0.10) and ci.n == 100
    se = math.sqrt((0.2 + 0.1 - 0.1 ** 2) / 100)  # the difference of two paired proportions
    assert ci.low == pytest.approx(0.10 - 1.96 * se, abs=0.01) and ci.high == pytest.approx(0.10 + 1.96 * se, abs=0.01)
    same = paired_bootstrap(a, a)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    all_b = paired_bootstrap(*_pairs(0, 30, 0, 0))
    assert (all_b.low, all_b.high) == (1.0, 1.0) and all_b.excludes_zero()


def test_seed_bootstrap_resamples_seeds():
    # run 1: SER right and seed wrong on every pair; run 2 the reverse. No pair-level noise, so the
    # spread is the seeds': the mean of 2 drawn runs is +1, 0 or -1 with probability 1/4, 1/2, 1/4.
    r1 = _pairs(0, 40, 0, 0)
    r2 = _pairs(0, 0, 30, 0)
    s = seed_bootstrap([r1[0], r2[0]], [r1[1], r2[1]], n_boot=4000)
    assert s.estimate == 0.0 and s.n == 2
    assert (s.low, s.high) == (-1.0, 1.0)


def test_seed_bootstrap_one_run_is_the_paired_bootstrap():
    a, b = _pairs(50, 20, 10, 20)
    s = seed_bootstrap([a], [b], n_boot=20_000)
    p = paired_bootstrap(a, b, n_boot=20_000)
    assert s.estimate == p.estimate
    assert s.low == pytest.approx(p.low, abs=0.01) and s.high == pytest.approx(p.high, abs=0.01)


def test_verdict_lines():
    assert verdict(Interval(0.034, 0.009, 0.058, 5)).startswith("SER beats the seed RM at 95%: +3.4 [+0.9, +5.8]")
    assert "does not beat" in verdict(Interval(0.01, -0.02, 0.04, 5))
    assert "is worse" in verdict(Interval(-0.05, -0.08, -0.02, 5))


def test_bootstrap_is_reproducible():
    rng = np.random.default_rng(3)
    a, b = rng.random(200) < 0.6, rng.random(200) < 0.65
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)


# -- Student's t ------------------------------------------------------------------------------------
def test_t_distribution_against_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-4)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.95996, abs=1e-5)
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
    assert t_pvalue(1.0, 1) == pytest.approx(0.5)  # Cauchy: P(|T| > 1) = 1/2
    assert t_pvalue(2.0, 3) == pytest.approx(0.13933, abs=1e-5)
    assert t_pvalue(1.959964, math.inf) == pytest.approx(0.05, abs=1e-6)
    assert t_pvalue(0.0, 5) == pytest.approx(1.0)


# -- across seeds -----------------------------------------------------------------------------------
def _run(gain_pairs: int, n: int = 100):
    """One run of n pairs: SER alone right on ``gain_pairs`` of them, the rest concordant."""
    return _pairs(n // 2, gain_pairs, 0, n - n // 2 - gain_pairs)


def test_disjoint_splits_give_the_t_interval_over_seeds():
    # each seed its own pairs (no keys): gains 1, 3, 5 points -> mean 3, s = 2, se = 2 / sqrt(3), t(2 df)
    runs = [_run(1), _run(3), _run(5)]
    s = across_seeds([r[0] for r in runs], [r[1] for r in runs])
    half = 4.302653 * 2 / math.sqrt(3)
    assert s.gain.estimate == pytest.approx(0.03) and s.gain.df == pytest.approx(2)
    assert 100 * s.gain.low == pytest.approx(3 - half, abs=1e-4) and 100 * s.gain.high == pytest.approx(3 + half, abs=1e-4)
    assert s.gain.p == pytest.approx(t_pvalue(3 / (2 / math.sqrt(3)), 2))
    assert s.shared == 0 and s.keyless == 3
    old = seed_bootstrap([r[0] for r in runs], [r[1] for r in runs])  # the percentile bootstrap over 3 seeds
    assert old.low > 0 > s.gain.low and old.high - old.low < 0.6 * (s.gain.high - s.gain.low)
    # with keys that do not overlap: the same interval
    keys = [np.arange(100, dtype=np.uint64) + np.uint64(1000 * i) for i in range(3)]
    assert across_seeds([r[0] for r in runs], [r[1] for r in runs], keys=keys).gain == s.gain


def test_identical_copies_of_a_run_give_that_runs_ci():
    rng = np.random.default_rng(0)
    a = rng.random(461) < 0.6
    b = a.copy()
    flip = rng.random(461) < 0.15
    b[flip] = ~b[flip]
    keys = rng.integers(0, 2 ** 63, size=461).astype(np.uint64)
    one = paired_bootstrap(a, b)
    five = across_seeds([a] * 5, [b] * 5, keys=[keys] * 5)
    assert five.gain.estimate == pytest.approx(one.estimate) and five.shared == 461
    assert five.gain.high - five.gain.low == pytest.approx(one.high - one.low, rel=0.05)  # not sqrt(5) narrower
    old = seed_bootstrap([a] * 5, [b] * 5)  # the method before: treats the copies as independent
    assert old.high - old.low == pytest.approx((one.high - one.low) / math.sqrt(5), rel=0.1)


def test_seed_moments_by_hand():
    # two runs on the same 4 pairs: per-pair differences x and y
    x, y = np.array([1.0, 0, 0, 1]), np.array([1.0, 0, 0, 0])
    k = np.arange(4, dtype=np.uint64)
    m = seed_moments([x, y], [k, k])
    # run means 0.5 and 0.25: s^2 = 0.03125, seed part s^2 / 2
    assert m.estimate[0] == pytest.approx(0.375) and m.seed_cov[0, 0] == pytest.approx(0.015625)
    # covariance on the 4 common pairs: 0.5 / 3; times 4 / (4 * 4)
    assert m.pair_cov[0, 0] == pytest.approx(1 / 24) and m.shared_var[0, 0] == pytest.approx(1 / 6)
    assert m.cov[0, 0] == pytest.approx(0.015625 + 1 / 24)
    assert m.df[0] == pytest.approx(((0.015625 + 1 / 24) / 0.015625) ** 2)  # Satterthwaite, 1 df for the seed part
    assert m.shared == 4
    # pairs are matched by key, not position; a run without keys shares nothing
    perm = np.array([2, 0, 3, 1])
    assert seed_moments([x, y[perm]], [k, k[perm]]).cov[0, 0] == pytest.approx(m.cov[0, 0])
    alone = seed_moments([x, y], [k, None])
    assert alone.pair_cov[0, 0] == 0 and alone.shared == 0 and alone.df[0] == pytest.approx(1)


def test_pair_ids_match_repeats_in_order():
    ids = pair_ids([np.array([5, 7, 5], dtype=np.uint64), np.array([5, 9], dtype=np.uint64), None])
    assert ids[2] is None
    assert ids[0][0] == ids[1][0] and ids[0][2] != ids[1][0]  # the first 5 matches the first 5 only
    assert len(set(ids[0].tolist())) == 3 and ids[1][1] not in ids[0]


# -- gap closed -------------------------------------------------------------------------------------
def test_fieller_by_hand():
    # (0.05 - r 0.10)^2 <= 4 (1e-4 + r^2 1e-4): 0.0096 r^2 - 0.01 r + 0.0021 <= 0 -> r in [7/24, 3/4]
    lo, hi = fieller(0.05, 0.10, 1e-4, 1e-4, 0.0, 2.0)
    assert lo == pytest.approx(7 / 24) and hi == pytest.approx(0.75)
    assert fieller(0.05, 0.01, 1e-4, 1e-4, 0.0, 2.0) is None  # denominator not above 0 at this level
    assert fieller(0.05, -0.10, 1e-4, 1e-4, 0.0, 2.0) is None  # full worse than the seed: no gap to close


def test_gap_closed_undefined_when_full_gain_is_not_significant():
    # 400 pairs: SER right alone on 12 (+3.0 points); full right alone on 6, the seed RM alone on 2
    # (+1.0 [-0.4, +2.4]). The old bootstrap printed 300% [138%, 2100%], dropping resamples.
    n = 400
    seed = np.ones(n, bool)
    seed[:12] = False
    ser = np.ones(n, bool)
    full = seed.copy()
    full[:6] = True
    full[12:14] = False
    s = across_seeds([seed], [ser], [full])
    assert s.gain.estimate == pytest.approx(0.03) and s.full_gain.estimate == pytest.approx(0.01)
    assert s.full_gain.low < 0 < s.full_gain.high
    assert s.gap_closed is None and s.gap_note.startswith("undefined: full - seed is not above 0 at 95%")


def test_gap_closed_is_fieller_from_the_seed_moments():
    rng = np.random.default_rng(1)
    seeds, sers, fulls = [], [], []
    for _ in range(4):
        a = rng.random(300) < 0.55
        seeds.append(a)
        sers.append(a | (rng.random(300) < 0.10))
        fulls.append(a | (rng.random(300) < 0.20))
    s = across_seeds(seeds, sers, fulls)
    m = seed_moments([np.stack([b.astype(float) - a, f.astype(float) - a], 1) for a, b, f in zip(seeds, sers, fulls)])
    q = t_quantile(0.975, float(min(m.df)))
    lo, hi = fieller(m.estimate[0], m.estimate[1], m.cov[0, 0], m.cov[1, 1], m.cov[0, 1], q)
    assert s.gap_closed.estimate == pytest.approx(m.estimate[0] / m.estimate[1])
    assert (s.gap_closed.low, s.gap_closed.high) == pytest.approx((lo, hi))
    assert lo < s.gap_closed.estimate < hi


# -- verdicts, families, power ----------------------------------------------------------------------
def test_verdict_needs_the_exact_test():
    # 400 pairs, 4 discordant, all for SER: the percentile CI excludes 0 but McNemar's p = 2 / 2^4
    a, b = _pairs(200, 4, 0, 196)
    ci = paired_bootstrap(a, b)
    assert ci.low > 0 and ci.p == pytest.approx(0.125)
    line = verdict(ci, "SER final", test="McNemar exact p")
    assert line == ("SER final does not beat the seed RM at 95%: +1.0 [+0.2, +2.0] points, McNemar exact p = 0.12: "
                    "not below 0.05.")
    strong = paired_bootstrap(*_pairs(200, 12, 0, 188))  # p = 2 / 2^12
    assert verdict(strong, "SER final").startswith("SER final beats the seed RM at 95%")
    # a family: the Holm-adjusted p decides
    adj = verdict(strong, "SER final", holm_p=0.2, family="4 configurations")
    assert adj.startswith("SER final does not beat") and "p = 0.00049 (Holm-adjusted over 4 configurations: 0.2)" in adj


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> made non-decreasing
    assert holm([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == [] and holm([0.02]) == [0.02]


def test_power_by_hand():
    # the seeds score the same pairs and agree (no seed spread): a z-test, n = (1.96 + 0.84)^2 var / d^2
    n = power_pairs(0.02, 5, pair_var=0.15, seed_var=0.0, shared_var=0.15)
    assert n == math.ceil((1.959964 + 0.841621) ** 2 * 0.15 / 0.02 ** 2)
    assert power(0.02, n, 5, 0.15, 0.0, 0.15) >= 0.8 > power(0.02, n - 1, 5, 0.15, 0.0, 0.15)
    # own pairs per seed, no seed spread: k seeds of n pairs, t with k - 1 df
    n5 = power_pairs(0.04, 5, pair_var=0.15, seed_var=0.0)
    assert power(0.04, n5, 5, 0.15, 0.0) >= 0.8 > power(0.04, n5 - 1, 5, 0.15, 0.0)
    assert power_pairs(0.04, 10, 0.15, 0.0) < n5 < power_pairs(0.02, 5, 0.15, 0.0)
    # a seed spread of 3 points is not averaged away by more pairs with 3 seeds
    assert power_pairs(0.02, 3, 0.15, seed_var=0.03 ** 2) is None


def test_coverage_simulation_fast():
    """experiments/coverage.py in small: the interval used covers +3.0 about 95% of the time in both
    designs; the old independent bootstrap does not when the seeds share the test pairs."""
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("coverage_sim", ROOT / "experiments" / "coverage.py")
    cov = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cov)
    shared = cov.coverage(5, True, sims=300, n=200, n_boot=300, methods=("old", "t (used)"))
    assert 0.90 <= shared["t (used)"][0] <= 0.99
    assert shared["old"][0] < 0.90
    per_seed = cov.coverage(3, False, sims=300, n=200, methods=("t (used)",))
    assert 0.90 <= per_seed["t (used)"][0] <= 0.99

