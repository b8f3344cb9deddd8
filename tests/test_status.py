"""Unit tests for ser.status on small hand-made arrays (expected values worked by hand)."""

import math

import numpy as np
import pytest
import torch

from ser.status import (
    Selection,
    Status,
    Thresholds,
    centre_scores,
    combined_mask,
    decide_status,
    easy_mask,
    gap_histogram,
    gap_mask_for_filter,
    gap_mask_for_status,
    probabilities,
    scale_scores,
    pseudo_label_precision,
    resolve_min_count,
    select_pairs,
)

TH = Thresholds()  # 0.55 / 0.45 / 0.3, min_count 0.05, rule "paper"


def abs_th(n: float, rule: str = "paper") -> Thresholds:
    return Thresholds(min_count=n, rule=rule)


# --------------------------------------------------------------------------- masks


def test_easy_mask_boundaries():
    # pair 0: 0.55 is not > 0.55                 -> False
    # pair 1: 0.45 is not < 0.45                 -> False
    # pair 2: 0.56 > 0.55 and 0.44 < 0.45        -> True
    # pair 3: swapped of pair 2                  -> True
    # pair 4: swapped of pair 0 (0.40, 0.55)     -> False
    # pair 5: both high                          -> False
    p1 = np.array([0.55, 0.56, 0.56, 0.44, 0.40, 0.90])
    p2 = np.array([0.40, 0.45, 0.44, 0.56, 0.55, 0.80])
    assert easy_mask(p1, p2, TH).tolist() == [False, False, True, True, False, False]


def test_gap_masks_at_tau_delta():
    # |0.5 - 0.2| == 0.3 exactly in float64; |0.6 - 0.3| == 0.3 too (swapped order in pair 1)
    # pair 2: gap 0.31; pair 3: gap 0.29
    p1 = np.array([0.5, 0.3, 0.61, 0.59])
    p2 = np.array([0.2, 0.6, 0.30, 0.30])
    assert abs(p1[0] - p2[0]) == 0.3 and abs(p1[1] - p2[1]) == 0.3
    # status (Eq. 3, >=): exact 0.3 counts
    assert gap_mask_for_status(p1, p2, TH).tolist() == [True, True, True, False]
    # filter (Eq. 4, >): exact 0.3 not kept
    assert gap_mask_for_filter(p1, p2, TH).tolist() == [False, False, True, False]


def test_masks_accept_torch_and_lists():
    p1 = torch.tensor([0.9, 0.5], dtype=torch.float32)
    p2 = [0.1, 0.5]
    assert easy_mask(p1, p2, TH).tolist() == [True, False]
    assert combined_mask(p1, np.array(p2), TH).tolist() == [True, False]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        easy_mask(np.zeros(3), np.zeros(2), TH)


# -------------------------------------------------------------------- min count


def test_resolve_min_count_absolute_and_fraction():
    assert resolve_min_count(600, 10_000) == 600
    assert resolve_min_count(2.7, 10) == 2  # absolute -> int()
    assert resolve_min_count(1, 0) == 1
    assert resolve_min_count(0.05, 100) == 5  # 0.05 * 100 = 5
    assert resolve_min_count(0.05, 101) == 6  # 5.05 -> ceil 6
    assert resolve_min_count(0.05, 10) == 1  # 0.5 -> ceil 1
    assert resolve_min_count(0.05, 0) == 1  # at least 1


# --------------------------------------------------------------------- status


def test_empty_pool_is_stop():
    d = decide_status(np.array([]), np.array([]), TH)
    assert d.status == Status.STOP and d.pool_size == 0 and d.n_easy == 0 and d.n_hard == 0
    d = decide_status(np.array([]), np.array([]), abs_th(1, "authors"))
    assert d.status == Status.STOP


def test_easy_wins_over_hard():
    # 2 easy pairs (each also has gap >= 0.3), 1 more hard-only pair (0.5, 0.2) -> n_easy 2, n_hard 3
    p1 = np.array([0.9, 0.1, 0.5, 0.5])
    p2 = np.array([0.1, 0.9, 0.2, 0.5])
    d = decide_status(p1, p2, abs_th(2))
    assert (d.status, d.n_easy, d.n_hard, d.min_count, d.pool_size) == (Status.EASY, 2, 3, 2, 4)


def test_hard_when_not_enough_easy():
    # easy: pair 0 only (1); hard (>=0.3): pairs 0, 1 (exact 0.3), 2 -> 3; min 2 -> HARD
    p1 = np.array([0.9, 0.5, 0.95, 0.5])
    p2 = np.array([0.1, 0.2, 0.60, 0.5])
    d = decide_status(p1, p2, abs_th(2))
    assert (d.status, d.n_easy, d.n_hard) == (Status.HARD, 1, 3)


def test_stop_when_neither_has_enough():
    # same pool, min 4 -> 1 easy < 4, 3 hard < 4 -> STOP
    p1 = np.array([0.9, 0.5, 0.95, 0.5])
    p2 = np.array([0.1, 0.2, 0.60, 0.5])
    assert decide_status(p1, p2, abs_th(4)).status == Status.STOP


def test_min_count_fraction_uses_ceil():
    # pool of 21 pairs, 0.1 * 21 = 2.1 -> ceil 3. 2 easy pairs -> not EASY; 3 hard -> HARD
    p1 = np.full(21, 0.5)
    p2 = np.full(21, 0.5)
    p1[:2], p2[:2] = 0.9, 0.1  # easy (and gap 0.8)
    p1[2], p2[2] = 0.95, 0.6  # hard only (gap 0.35, both high)
    d = decide_status(p1, p2, Thresholds(min_count=0.1))
    assert (d.min_count, d.n_easy, d.n_hard, d.status) == (3, 2, 3, Status.HARD)
    # with 0.09 * 21 = 1.89 -> ceil 2 -> 2 easy are enough
    assert decide_status(p1, p2, Thresholds(min_count=0.09)).status == Status.EASY


# ----------------------------------------------------------------- selection


def test_select_easy_orientation():
    # pair 0 easy, first higher -> chosen True; pair 1 easy, second higher -> False;
    # pair 2 hard only (not kept under EASY)
    p1 = np.array([0.9, 0.2, 0.95])
    p2 = np.array([0.1, 0.7, 0.60])
    sel = select_pairs(p1, p2, Status.EASY, TH)
    assert sel.index.dtype == np.int64
    assert sel.index.tolist() == [0, 1]
    assert sel.first_is_chosen.tolist() == [True, False]


def test_select_hard_is_strict():
    # HARD filter keeps gap > 0.3: pair 0 (exact 0.3) dropped, pair 1 (0.35) kept,
    # pair 2 (0.2 vs 0.9, gap 0.7, p2 higher) kept with first_is_chosen False
    p1 = np.array([0.5, 0.95, 0.2])
    p2 = np.array([0.2, 0.60, 0.9])
    sel = select_pairs(p1, p2, Status.HARD, TH)
    assert sel.index.tolist() == [1, 2]
    assert sel.first_is_chosen.tolist() == [True, False]


def test_select_stop_keeps_nothing():
    sel = select_pairs(np.array([0.9]), np.array([0.1]), Status.STOP, TH)
    assert len(sel) == 0 and sel.index.dtype == np.int64 and sel.first_is_chosen.dtype == bool


def test_authors_rule_combined_and_swapped_no_min_count():
    # pair 0: easy (p1 high, p2 low)               -> kept, True
    # pair 1: swapped easy                         -> kept, False
    # pair 2: p1 - p2 = 0.35 > 0.3, both high      -> kept, True
    # pair 3: p2 - p1 = 0.35 (swapped gap)         -> kept, False
    # pair 4: gap exactly 0.3, not easy            -> dropped (strict >)
    # pair 5: 0.5 / 0.5                            -> dropped
    p1 = np.array([0.6, 0.4, 0.95, 0.60, 0.5, 0.5])
    p2 = np.array([0.4, 0.6, 0.60, 0.95, 0.2, 0.5])
    th = abs_th(1000, "authors")  # huge min_count is ignored by the authors' rule
    d = decide_status(p1, p2, th)
    assert d.status == Status.COMBINED and d.min_count == 0 and d.pool_size == 6
    assert (d.n_easy, d.n_hard) == (2, 2)  # n_hard uses strict > for "authors"
    sel = select_pairs(p1, p2, d.status, th)
    assert sel.index.tolist() == [0, 1, 2, 3]
    assert sel.first_is_chosen.tolist() == [True, False, True, False]
    # same pool with the paper rule and min 1000 -> STOP
    assert decide_status(p1, p2, abs_th(1000)).status == Status.STOP


def test_authors_rule_stop_when_nothing_passes():
    # single pair with gap exactly 0.3 and not easy -> nothing passes -> STOP
    d = decide_status(np.array([0.5]), np.array([0.2]), abs_th(1, "authors"))
    assert d.status == Status.STOP


@pytest.mark.parametrize("status", [Status.EASY, Status.HARD, Status.COMBINED])
def test_exact_ties_are_never_kept(status):
    # (0.5, 0.5) and (0.9, 0.9): gap 0 and never one-high-one-low -> only pair 2 (0.9, 0.1) kept
    sel = select_pairs(np.array([0.5, 0.9, 0.9]), np.array([0.5, 0.9, 0.1]), status, TH)
    assert sel.index.tolist() == [2] and sel.first_is_chosen.tolist() == [True]


# ------------------------------------------------------------------ centring / sigmoid


def test_centre_scores_modes():
    s = np.array([1.0, 2.0, 6.0])  # mean 3
    assert centre_scores(s, "none").tolist() == [1.0, 2.0, 6.0]
    assert centre_scores(s, "pool_mean").tolist() == [-2.0, -1.0, 3.0]
    # labeled mean of [0, 4] = 2
    assert centre_scores(s, "labeled_mean", np.array([0.0, 4.0])).tolist() == [-1.0, 0.0, 4.0]
    assert centre_scores(torch.tensor([1.0, 3.0]), "pool_mean").tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="labeled_scores"):
        centre_scores(s, "labeled_mean")
    with pytest.raises(ValueError, match="mode"):
        centre_scores(s, "median")


def test_probabilities_stable():
    p = probabilities(np.array([0.0, math.log(3.0), -math.log(3.0), 1000.0, -1000.0]))
    # sigmoid(0)=0.5, sigmoid(ln 3)=3/4, sigmoid(-ln 3)=1/4, saturates without overflow
    np.testing.assert_allclose(p, [0.5, 0.75, 0.25, 1.0, 0.0], atol=1e-12)
    assert p.dtype == np.float64 and np.all(np.isfinite(p))


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(tau_low=0.7), "thresholds.tau_low"),
        (dict(tau_low=0.0), "thresholds.tau_low"),
        (dict(tau_high=1.0), "thresholds.tau_high"),
        (dict(tau_delta=0.0), "thresholds.tau_delta"),
        (dict(tau_delta=1.5), "thresholds.tau_delta"),
        (dict(min_count=0), "thresholds.min_count"),
        (dict(min_count=-3), "thresholds.min_count"),
        (dict(rule="ours"), "thresholds.rule"),
    ],
)
def test_thresholds_validation_names_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        Thresholds(**kwargs)


def test_thresholds_low_gt_high_message():
    with pytest.raises(ValueError) as e:
        Thresholds(tau_low=0.7)
    assert str(e.value) == "thresholds.tau_low=0.7 must be <= thresholds.tau_high=0.55"


def test_thresholds_equal_low_high_ok():
    Thresholds(tau_low=0.5, tau_high=0.5)


# ------------------------------------------------------------------ reporting


def test_pseudo_label_precision():
    # pool of 4; kept pairs 0, 2, 3 oriented True, False, True
    # hidden labels: pair0 True (agree), pair2 True (disagree), pair3 True (agree) -> 2/3
    sel = Selection(index=np.array([0, 2, 3], dtype=np.int64),
                    first_is_chosen=np.array([True, False, True]))
    hidden = np.array([True, False, True, True])
    assert pseudo_label_precision(sel, hidden) == pytest.approx(2 / 3)
    assert pseudo_label_precision(sel, torch.tensor([1, 0, 0, 1])) == pytest.approx(1.0)
    empty = Selection(index=np.zeros(0, dtype=np.int64), first_is_chosen=np.zeros(0, dtype=bool))
    assert pseudo_label_precision(empty, hidden) is None


def test_gap_histogram():
    # gaps: 0.02, 0.3 (0.5-0.2 exact), 0.8, 1.0 ; 10 bins of width 0.1
    p1 = np.array([0.51, 0.5, 0.9, 1.0])
    p2 = np.array([0.49, 0.2, 0.1, 0.0])
    counts, edges = gap_histogram(p1, p2, bins=10)
    assert counts.sum() == 4 and len(edges) == 11
    assert edges[0] == 0.0 and edges[-1] == 1.0
    # 0.02 -> bin 0; 0.3 -> bin 3; 0.8 -> bin 8 (edge 0.8 is float 0.8); 1.0 -> last bin 9
    assert counts[0] == 1 and counts[9] == 1
    assert counts.sum() - counts[0] - counts[9] == 2
    counts20, _ = gap_histogram(p1, p2)
    assert counts20.sum() == 4 and len(counts20) == 20




def test_scale_scores_by_labeled_std():
    # labeled scores [0.0, 0.02, 0.04, 0.06]: mean 0.03, population std sqrt(0.0005) = 0.0223607
    labeled = np.array([0.0, 0.02, 0.04, 0.06])
    centred = np.array([0.03, -0.0223607, 0.0])
    out = scale_scores(centred, "labeled_std", raw_scores=None, labeled_scores=labeled)
    assert out == pytest.approx([1.3416408, -1.0, 0.0], abs=1e-6)  # 0.03/0.0223607 = 1.34164
    # with p = sigmoid(z): z = 0.2 is the paper's 0.55 threshold (sigmoid(0.2) = 0.549834)
    assert probabilities(np.array([0.2]))[0] == pytest.approx(0.549834, abs=1e-6)


def test_scale_scores_by_pool_std_and_none():
    raw = np.array([1.0, 3.0])  # std 1.0
    assert scale_scores(np.array([-1.0, 1.0]), "pool_std", raw_scores=raw).tolist() == [-1.0, 1.0]
    raw = np.array([0.0, 0.5])  # std 0.25
    assert scale_scores(np.array([-0.25, 0.25]), "pool_std", raw_scores=raw).tolist() == [-1.0, 1.0]
    assert scale_scores(np.array([0.5, -0.5]), "none").tolist() == [0.5, -0.5]
    with pytest.raises(ValueError, match="scale mode"):
        scale_scores(np.array([1.0]), "median")
    with pytest.raises(ValueError, match="at least 2"):
        scale_scores(np.array([1.0, 2.0]), "labeled_std", labeled_scores=np.array([1.0]))
