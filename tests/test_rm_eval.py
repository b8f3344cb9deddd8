"""`ser evaluate-rm`: the figures by hand (bootstrap CI, best-of-N, RewardBench sections, length bias,
ECE)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ser.rm_metrics import (PRIOR, REWARDBENCH_COUNTS, REWARDBENCH_SECTIONS, best_of_n_correct, bootstrap_accuracy,
                            length_bias, pair_calibration, rewardbench_sections, subset_accuracy, summarize)

# --------------------------------------------------------------------------------------------
# The figures, by hand
# --------------------------------------------------------------------------------------------


def test_bootstrap_accuracy_by_hand():
    a = bootstrap_accuracy([True] * 7)
    assert (a.estimate, a.low, a.high, a.n) == (1.0, 1.0, 1.0, 7)
    # two items, one right: a resample is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4
    b = bootstrap_accuracy([True, False], level=0.4)  # quantiles 0.3 and 0.7: both 1/2
    assert (b.estimate, b.low, b.high) == (0.5, 0.5, 0.5)
    b = bootstrap_accuracy([True, False], level=0.95)
    assert (b.low, b.high) == (0.0, 1.0)
    # 400 items, 300 right: the normal approximation gives 0.75 -+ 1.96 * sqrt(0.75 * 0.25 / 400) = -+0.0424
    c = bootstrap_accuracy([True] * 300 + [False] * 100, seed=3)
    assert c.estimate == 0.75
    assert c.low == pytest.approx(0.7076, abs=0.008) and c.high == pytest.approx(0.7924, abs=0.008)
    assert bootstrap_accuracy([True] * 300 + [False] * 100, seed=3) == c  # seeded: reproducible
    assert bootstrap_accuracy([True] * 300 + [False] * 100, seed=4) != c
    with pytest.raises(ValueError):
        bootstrap_accuracy([])


def test_bootstrap_resamples_rows_together():
    # 100 rows of 4 pairs each, a row all right or all wrong: 100 independent outcomes, not 400,
    # so the CI is twice as wide (sqrt 4) as when the 400 pairs are taken as independent
    right = np.repeat([True] * 60 + [False] * 40, 4)
    rows = np.repeat(np.arange(100), 4)
    flat, grouped = bootstrap_accuracy(right), bootstrap_accuracy(right, rows)
    assert flat.estimate == grouped.estimate == 0.6 and grouped.n == 400
    ratio = (grouped.high - grouped.low) / (flat.high - flat.low)
    assert 1.7 < ratio < 2.3
    # rows of unequal size: the accuracy is right pairs over pairs (3/4 + 0/1 -> 3/5), not a mean of rows
    g = bootstrap_accuracy([True, True, True, False, False], [0, 0, 0, 0, 1])
    assert g.estimate == 0.6 and g.low == 0.0 and g.high == 0.75


def test_best_of_n_needs_the_chosen_strictly_above_every_rejected():
    got = best_of_n_correct([3.0, 1.0, 2.0, 0.5], [[1.0, 2.0, 2.9], [0.0, 1.0], [2.0, -1.0], [0.4]])
    assert got.tolist() == [True, False, False, True]  # a tie at the top is wrong


def test_subset_accuracy_by_hand():
    t = subset_accuracy(["b", "a", "b", "b", "a"], [True, False, True, False, False])
    assert list(t) == ["a", "b"]
    assert t["a"] == {"n": 2, "accuracy": 0.0} and t["b"]["n"] == 3 and t["b"]["accuracy"] == pytest.approx(2 / 3)


def test_rewardbench_sections_by_hand():
    acc = {"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5, "math-prm": 0.5, "hep-python": 1.0, "shp": 0.6,
           "summarize": 0.8, "my-own-set": 0.0}
    r = rewardbench_sections(acc)
    chat = (100 * 1.0 + 28 * 0.5) / (100 + 28)  # weighted by RewardBench's example counts
    reasoning = (984 * 0.5 + 164 * 1.0) / (984 + 164)  # math-prm counts 984 (upweighted to equal code)
    prior = (0.6 + 0.8) / 2  # the prior sets: a plain mean
    assert r["sections"] == pytest.approx({"Chat": chat, "Reasoning": reasoning, PRIOR: prior})
    assert chat == pytest.approx(0.890625) and reasoning == pytest.approx(656 / 1148)
    assert r["score"] == pytest.approx((2 * chat + 2 * reasoning + 1 * prior) / 5)  # prior sets weigh half
    full = {s: 1.0 for subsets in REWARDBENCH_SECTIONS.values() for s in subsets}
    full["xstest-should-refuse"] = 0.0
    safety = rewardbench_sections(full)["sections"]["Safety"]
    assert safety == pytest.approx(1 - 154 / (100 + 100 + 154 + 250 + 136))
    assert rewardbench_sections({"my-own-set": 0.7}) is None
    assert sum(len(v) for v in REWARDBENCH_SECTIONS.values()) == len(REWARDBENCH_COUNTS) == 23


def test_length_bias_by_hand():
    # pairs: chosen longer (right, right, wrong), chosen shorter (wrong, right), same length (right)
    lb = length_bias([10, 9, 8, 2, 3, 5], [1, 1, 1, 4, 6, 5], [True, True, False, False, True, True])
    assert lb["chosen_longer"] == {"n": 3, "accuracy": pytest.approx(2 / 3)}
    assert lb["chosen_shorter"] == {"n": 2, "accuracy": 0.5}
    assert lb["same_length"] == {"n": 1, "accuracy": 1.0}
    # the longer answer won: 2 chosen-longer pairs right + 1 chosen-shorter pair wrong, of 5 unequal pairs
    assert lb["prefers_longer"] == pytest.approx(3 / 5) and lb["unit"] == "characters"
    empty = length_bias([3, 4], [3, 4], [True, False])
    assert empty["chosen_longer"] == {"n": 0, "accuracy": None} and empty["prefers_longer"] is None


def test_pair_calibration_by_hand():
    ln3 = math.log(3.0)
    # sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25, sigmoid(ln 9) = 0.9: confidences .75 .75 .75 .9
    c = pair_calibration([ln3, ln3, 0.0, math.log(9.0)], [0.0, 0.0, ln3, 0.0])
    # bin of .75: 3 pairs, 2 right -> |2/3 - .75| * 3/4 = 0.0625; bin of .9: 1 pair, right -> .1 * 1/4
    assert c["ece"] == pytest.approx(0.0625 + 0.025)
    assert c["mean_confidence"] == pytest.approx(0.7875) and c["accuracy"] == 0.75 and c["bins"] == 10
    assert [b["n"] for b in c["reliability"]] == [3, 1]
    tie = pair_calibration([1.0], [1.0])  # p = 0.5: confidence 0.5 and wrong
    assert tie["ece"] == pytest.approx(0.5) and tie["accuracy"] == 0.0
    assert pair_calibration([1e4], [-1e4])["ece"] == pytest.approx(0.0)  # no overflow


def test_summarize_pairs_and_best_of_n_rows_by_hand():
    chosen = [2.0, 0.0, 1.0, 5.0]
    rejected = [[1.0], [1.0], [0.5, 2.0, -1.0], [1.0, 2.0, 3.0]]
    ctext = ["aaaa", "bb", "cc", "dddd"]
    rtext = [["a"], ["bbbb"], ["c", "c", "ccc"], ["d", "d", "d"]]
    r = summarize(chosen, rejected, ctext, rtext, ["x", "x", "y", "y"], n_boot=500)
    # pairs: right, wrong, (right, wrong, right), (right, right, right): 6 of 8
    assert r["rows"] == 4 and r["pairs"] == 8 and r["ties"] == 0
    assert r["accuracy"]["estimate"] == 0.75 and r["accuracy"]["resampled"] == "rows"
    assert r["best_of_n"]["n"] == 2 and r["best_of_n"]["estimate"] == 0.5  # row 3 loses to 2.0, row 4 wins
    assert r["best_of_n"]["answers_per_row"] == [4] and r["best_of_n"]["chance"] == 0.25
    assert r["subsets"] == {"x": {"n": 2, "accuracy": 0.5, "kind": "pairs"},
                            "y": {"n": 2, "accuracy": 0.5, "kind": "best-of-N"}}
    assert r["subset_mean"] == 0.5 and r["rewardbench"] is None
    assert r["length_bias"]["chosen_longer"] == {"n": 6, "accuracy": pytest.approx(5 / 6)}
    assert r["length_bias"]["chosen_shorter"] == {"n": 2, "accuracy": 0.5}  # row 2 wrong, row 3 vs "ccc" right
    plain = summarize([1.0, 0.0], [[0.0], [0.0]], ["a", "b"], [["b"], ["a"]], [None, None], n_boot=100)
    assert plain["subsets"] is None and plain["best_of_n"] is None and plain["ties"] == 1
    assert plain["accuracy"]["resampled"] == "pairs" and plain["accuracy"]["estimate"] == 0.5
