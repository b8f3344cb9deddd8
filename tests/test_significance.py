"""Paired statistics on hand-made outcomes (ser/significance.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ser.significance import Interval, mcnemar_exact, paired_bootstrap, seed_bootstrap, verdict


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
    assert s.gain.estimate == 0.0 and s.gain.n == 2
    assert (s.gain.low, s.gain.high) == (-1.0, 1.0)
    assert s.full_gain is None and s.gap_closed is None


def test_seed_bootstrap_one_run_is_the_paired_bootstrap():
    a, b = _pairs(50, 20, 10, 20)
    s = seed_bootstrap([a], [b], n_boot=20_000)
    p = paired_bootstrap(a, b, n_boot=20_000)
    assert s.gain.estimate == p.estimate
    assert s.gain.low == pytest.approx(p.low, abs=0.01) and s.gain.high == pytest.approx(p.high, abs=0.01)


def test_gap_closed_by_hand():
    # 100 pairs per run: seed right on 50, SER on 55, full on 60 (nested): gap closed 0.5
    seed = [1] * 50 + [0] * 50
    ser = [1] * 55 + [0] * 45
    full = [1] * 60 + [0] * 40
    s = seed_bootstrap([seed, seed], [ser, ser], [full, full], n_boot=5000)
    assert s.gain.estimate == pytest.approx(0.05) and s.full_gain.estimate == pytest.approx(0.10)
    assert s.gap_closed.estimate == pytest.approx(0.5)
    assert s.gap_closed.low < 0.5 < s.gap_closed.high and s.gap_undefined < 0.01
    flat = seed_bootstrap([seed], [ser], [seed])  # full no better than the seed: no gap to close
    assert flat.gap_closed is None and flat.gap_undefined == 1.0


def test_verdict_lines():
    assert verdict(Interval(0.034, 0.009, 0.058, 5)).startswith("SER beats the seed RM at 95%: +3.4 [+0.9, +5.8]")
    assert "does not beat" in verdict(Interval(0.01, -0.02, 0.04, 5))
    assert "is worse" in verdict(Interval(-0.05, -0.08, -0.02, 5))


def test_bootstrap_is_reproducible():
    rng = np.random.default_rng(3)
    a, b = rng.random(200) < 0.6, rng.random(200) < 0.65
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
