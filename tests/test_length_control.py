"""Length-controlled accuracy (ser/length_control.py): every figure by hand on seven pairs, the
stratified bootstrap, the length-balanced selection, the per-loop fields, and a run's saved scores
read back into the lines under its table; label_pool with ``selection.length_balance``."""
from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from ser import length_control as lc
from ser import status as st
from ser.loop import label_pool

# seven pairs: chosen longer (1-4), chosen shorter (5, 6), equal lengths (7)
CHOSEN = [10, 8, 7, 9, 2, 3, 4]
REJECTED = [5, 2, 3, 1, 6, 9, 4]
A = [True, True, False, True, False, False, True]
B = [True, True, True, False, True, False, False]


def test_label_direction_by_hand():
    d = lc.label_direction([5, 5, 1, 3, 2], [1, 2, 4, 3, 1])  # longer, longer, shorter, equal, longer
    assert d == {"longer": 3, "shorter": 1, "equal": 1, "share_longer": 0.75, "direction": "longer"}
    assert lc.label_direction([1, 1], [2, 3])["direction"] == "shorter"
    # half and half, or nothing to go by: "longer"
    assert lc.label_direction([2, 1], [1, 2])["direction"] == "longer"
    assert lc.label_direction([2], [2]) == {"longer": 0, "shorter": 0, "equal": 1, "share_longer": None,
                                            "direction": "longer"}


def test_strata_and_baseline_by_hand():
    assert lc.strata(CHOSEN, REJECTED, "longer").tolist() == [1, 1, 1, 1, -1, -1, 0]
    assert lc.strata(CHOSEN, REJECTED, "shorter").tolist() == [-1, -1, -1, -1, 1, 1, 0]
    # right on 4, wrong on 2, the equal pair half right
    assert lc.length_baseline(CHOSEN, REJECTED, "longer") == pytest.approx(4.5 / 7)
    assert lc.length_baseline(CHOSEN, REJECTED, "shorter") == pytest.approx(2.5 / 7)
    assert lc.length_baseline([], [], "longer") is None
    with pytest.raises(ValueError):
        lc.strata(CHOSEN, REJECTED, "either")
    with pytest.raises(ValueError):
        lc.strata([1, 2], [1], "longer")
    # unsigned lengths (as saved: int32/uint) do not wrap around
    assert lc.strata(np.array([1], np.uint32), np.array([2], np.uint32), "longer").tolist() == [-1]


def test_strata_accuracy_balanced_and_preference_by_hand():
    sa = lc.stratum_accuracy(A, CHOSEN, REJECTED, "longer")
    assert sa == {"right_way": 0.75, "wrong_way": 0.0, "n_right_way": 4, "n_wrong_way": 2, "n_equal": 1}
    assert lc.stratum_accuracy(A, CHOSEN, REJECTED, "shorter")["wrong_way"] == 0.75
    assert lc.balanced_accuracy(A, CHOSEN, REJECTED) == pytest.approx(0.375)
    assert lc.balanced_accuracy(B, CHOSEN, REJECTED) == pytest.approx((0.75 + 0.5) / 2)
    # the longer answer won: A on pairs 1, 2, 4 (right, chosen longer) and 5, 6 (wrong, chosen shorter)
    assert lc.prefers_longer(A, CHOSEN, REJECTED) == pytest.approx(5 / 6)
    assert lc.prefers_longer(B, CHOSEN, REJECTED) == pytest.approx(4 / 6)  # 1, 2, 3 and 6
    # a stratum empty: undefined
    assert lc.balanced_accuracy([True, False], [3, 4], [1, 1]) is None
    assert lc.prefers_longer([True], [2], [2]) is None
    with pytest.raises(ValueError):
        lc.balanced_accuracy([True], CHOSEN, REJECTED)


def test_any_length_only_rule_scores_half_on_the_balanced_accuracy():
    rng = np.random.default_rng(0)
    c, r = rng.integers(1, 50, 200), rng.integers(1, 50, 200)
    for rule in (c > r, c < r, c >= r):  # prefer the longer, the shorter, the longer with ties to chosen
        assert lc.balanced_accuracy(rule, c, r) == pytest.approx(0.5)


def test_balanced_pair_values_average_to_the_balanced_accuracy():
    v = lc.balanced_pair_values(A, CHOSEN, REJECTED)
    assert v.tolist() == pytest.approx([7 / 8, 7 / 8, 0, 7 / 8, 0, 0, 0])  # n / (2 n_s); equal pair 0
    assert v.mean() == pytest.approx(0.375)
    d = lc.balanced_pair_values(np.array(B, float) - np.array(A, float), CHOSEN, REJECTED)
    assert d.mean() == pytest.approx(0.625 - 0.375)
    with pytest.raises(ValueError):
        lc.balanced_pair_values([True, True], [2, 3], [1, 1])


def test_length_summary_with_and_without_a_direction():
    s = lc.length_summary(A, CHOSEN, REJECTED, "longer")
    assert s == {"n": 7, "accuracy": pytest.approx(4 / 7), "direction": "longer", "balanced": pytest.approx(0.375),
                 "prefers_longer": pytest.approx(5 / 6), "baseline": pytest.approx(4.5 / 7), "right_way": 0.75,
                 "wrong_way": 0.0, "n_right_way": 4, "n_wrong_way": 2, "n_equal": 1}
    none = lc.length_summary(A, CHOSEN, REJECTED, None)
    assert none["balanced"] == pytest.approx(0.375) and none["baseline"] is None and none["wrong_way"] is None


def test_stratified_bootstrap_keeps_the_strata_sizes():
    # right on every right-way pair, wrong on every wrong-way pair: resampling within strata can only
    # give 1 and 0, so the balanced accuracy is 1/2 in every resample (pooled resampling would not)
    c, r = [5, 6, 7, 1, 2], [1, 1, 1, 9, 9]
    ok = [True, True, True, False, False]
    ci = lc.length_cis(ok, c, r, "longer", n_boot=2000)
    assert (ci["balanced"].estimate, ci["balanced"].low, ci["balanced"].high, ci["balanced"].n) == (0.5, 0.5, 0.5, 5)
    assert (ci["right_way"].low, ci["wrong_way"].high) == (1.0, 0.0)
    # seeded, and the estimate inside its CI
    a1 = lc.length_cis(A, CHOSEN, REJECTED, "longer", n_boot=3000, seed=3)
    a2 = lc.length_cis(A, CHOSEN, REJECTED, "longer", n_boot=3000, seed=3)
    assert a1 == a2 and a1["balanced"].low <= 0.375 <= a1["balanced"].high and a1["balanced"].level == 0.95
    # two wrong-way pairs, both wrong: that stratum is 0 in every resample; the right-way stratum
    # (3 of 4 right) resamples to 0.25 .. 1, so the balanced accuracy stays in [0.125, 0.5]
    assert a1["wrong_way"].low == a1["wrong_way"].high == 0.0
    assert 0.125 <= a1["balanced"].low and a1["balanced"].high <= 0.5
    assert lc.length_cis([True], [3], [1], "longer")["balanced"] is None


def test_paired_cis_by_hand():
    ci = lc.paired_length_cis(A, B, CHOSEN, REJECTED, "longer", n_boot=4000)
    assert ci["balanced"].estimate == pytest.approx(0.25)
    assert ci["wrong_way"].estimate == pytest.approx(0.5) and ci["wrong_way"].n == 2
    assert ci["right_way"].estimate == 0.0 and ci["right_way"].n == 4
    # wrong-way differences (B - A) are +1 and 0: resamples 0, 0.5 or 1
    assert (ci["wrong_way"].low, ci["wrong_way"].high) == (0.0, 1.0)
    assert ci["balanced"].low <= 0.25 <= ci["balanced"].high
    # the same model on both sides: exactly 0
    same = lc.paired_length_cis(A, A, CHOSEN, REJECTED, "longer", n_boot=100)["balanced"]
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    # the direction swaps which stratum is the wrong way
    assert lc.paired_length_cis(A, B, CHOSEN, REJECTED, "shorter", n_boot=100)["wrong_way"].n == 4


def test_baseline_cis_by_hand():
    ci = lc.baseline_cis(A, CHOSEN, REJECTED, "longer", n_boot=2000)
    assert ci["baseline"].estimate == pytest.approx(4.5 / 7)
    # per pair model - baseline: 0, 0, -1, 0, 0, 0, +0.5
    assert ci["model_minus_baseline"].estimate == pytest.approx(-0.5 / 7)
    assert ci["baseline"].low <= ci["baseline"].estimate <= ci["baseline"].high
    # every pair of equal length: the baseline is exactly one half
    flat = lc.baseline_cis([True, False], [2, 3], [2, 3], "longer", n_boot=100)["baseline"]
    assert (flat.estimate, flat.low, flat.high) == (0.5, 0.5, 0.5)


def test_balance_by_length_by_hand():
    first = [True, False, True, True, False, True]
    l1 = [10, 10, 3, 8, 2, 1]
    l2 = [5, 5, 3, 2, 8, 4]
    margin = [0.9, 0.5, 0.1, 0.7, 0.95, 0.2]
    # chosen longer: 0 (.9), 3 (.7), 4 (.95, a2 chosen and longer); shorter: 1 (.5), 5 (.2); equal: 2
    keep = lc.balance_by_length(first, margin, l1, l2)
    assert keep.tolist() == [True, True, True, False, True, True]  # the two most confident longer ones
    # nothing on one side: only the equal-length pairs stay
    assert lc.balance_by_length([True, True, True], [1, 2, 3], [5, 5, 2], [1, 1, 2]).tolist() == [False, False, True]
    # ties in margin keep the earlier pair
    assert lc.balance_by_length([True, True, False], [0.5, 0.5, 0.1], [3, 3, 3], [1, 1, 1]).tolist() == [True, False, True]
    assert lc.balance_by_length([], [], [], []).tolist() == []
    with pytest.raises(ValueError):
        lc.balance_by_length([True], [0.1, 0.2], [1], [2])


def test_pool_and_test_fields_by_hand():
    s1, s2 = np.array([2.0, 0.0, 1.0, 5.0]), np.array([1.0, 3.0, 1.0, 0.0])
    l1, l2 = np.array([10, 10, 4, 3]), np.array([5, 5, 4, 9])
    hidden = np.array([True, False, True, True])
    f = lc.pool_fields(s1, s2, l1, l2, kept=np.array([0, 1, 3]), first_is_chosen=np.array([True, False, True]),
                       hidden_a1_better=hidden)
    # unequal pairs 0, 1, 3: the longer (a1, a1, a2) scores higher in pair 0 only
    assert f["pool_prefers_longer"] == pytest.approx(1 / 3)
    # kept: pair 0 chosen a1 (longer), pair 1 chosen a2 (shorter), pair 3 chosen a1 (shorter)
    assert f["kept_prefers_longer"] == pytest.approx(1 / 3)
    # hidden better is the longer in pair 0 (a1), pair 1 (a2 better, a1 longer: no), pair 3 (a1, shorter: no)
    assert f["pool_labels_longer"] == pytest.approx(1 / 3)
    empty = lc.pool_fields(s1, s2, l1, l2, np.zeros(0, int), np.zeros(0, bool), hidden)
    assert empty["kept_prefers_longer"] is None
    t = lc.loop_test_fields(np.array([1.0, 2, 0, 3, 0, 0, 5]), np.zeros(7), CHOSEN, REJECTED, "longer")
    assert t == {"test_length_balanced": pytest.approx(0.375), "test_wrong_way": 0.0,
                 "test_prefers_longer": pytest.approx(5 / 6)}


# -- label_pool with selection.length_balance -------------------------------------------------------
TH = st.Thresholds(tau_high=0.55, tau_low=0.45, tau_delta=0.3, min_count=1)


def _pool():
    # 6 pool pairs, all confident: a1 clearly better in 0-3, a2 in 4, 5
    s1 = np.array([3.0, 2.5, 2.0, 1.5, -2.0, -3.0])
    s2 = -s1
    lengths = {"a1_tokens": np.array([10, 9, 8, 2, 9, 3]), "a2_tokens": np.array([1, 1, 1, 7, 2, 3]),
               "a1_chars": np.zeros(6, int), "a2_chars": np.zeros(6, int)}
    return np.r_[s1, s2], lengths


@pytest.mark.parametrize("strategy", ["status", "pairwise"])
def test_label_pool_balances_the_kept_pairs_by_length(strategy):
    scores, lengths = _pool()
    alive, hidden = np.arange(6), np.ones(6, bool)
    sel = OmegaConf.create({"strategy": strategy, "confidence": 0.6, "target_precision": 0.65, "min_pairs": 1,
                            "length_balance": True})
    val = {"val_chosen": np.array([1.0, 2.0, 0.5, -0.2]), "val_rejected": np.array([0.0, 0.0, 1.0, 0.1])}
    plain = label_pool(scores, None, alive, hidden, TH, "none", "none", OmegaConf.merge(sel, {"length_balance": False}),
                       val, lengths=lengths)
    lab = label_pool(scores, None, alive, hidden, TH, "none", "none", sel, val, lengths=lengths)
    assert plain.pool_index.tolist() == [0, 1, 2, 3, 4, 5]
    # chosen by the RM: a1 in 0-3, a2 in 4, 5. Longer: 0, 1, 2 (a1), shorter: 3 (a1), 4 (a2); equal: 5
    # keep the two most confident longer ones (0, 1: the largest margins), 3 and 4, and the equal pair
    assert lab.pool_index.tolist() == [0, 1, 3, 4, 5]
    assert lab.first_is_chosen.tolist() == [True, True, True, False, False]
    assert lab.arrays["kept"].tolist() == [0, 1, 3, 4, 5] and lab.arrays["kept_unbalanced"].tolist() == [0, 1, 2, 3, 4, 5]
    assert lab.fields["length_balance_dropped"] == 1 and lab.fields["kept"] == 5
    assert lab.fields["kept_prefers_longer"] == 0.5 and plain.fields["kept_prefers_longer"] == pytest.approx(3 / 5)
    assert plain.fields["pool_prefers_longer"] == pytest.approx(3 / 5)
    assert "kept_unbalanced" not in plain.arrays and "length_balance_dropped" not in plain.fields
    # the option needs the lengths; without the option they are optional (no length fields then)
    with pytest.raises(ValueError):
        label_pool(scores, None, alive, hidden, TH, "none", "none", sel, val)
    assert "pool_prefers_longer" not in label_pool(scores, None, alive, hidden, TH, "none", "none").fields


def test_label_pool_balance_reads_the_alive_pairs_lengths():
    scores, lengths = _pool()
    alive = np.array([1, 3, 4])  # pool positions; the lengths are indexed like the whole pool
    sub = np.r_[scores[:6][alive], scores[6:][alive]]
    sel = OmegaConf.create({"strategy": "status", "length_balance": True})
    lab = label_pool(sub, None, alive, np.ones(6, bool), TH, "none", "none", sel, lengths=lengths)
    # 1: chosen a1, longer; 3: chosen a1, shorter (|r1 - r2| = 3); 4: chosen a2, shorter (4): keep 1 and 4
    assert lab.pool_index.tolist() == [1, 4]


def test_nothing_balanced_left_stops_the_loop():
    s1 = np.array([3.0, 2.5])
    lengths = {"a1_tokens": np.array([9, 9]), "a2_tokens": np.array([1, 1])}
    sel = OmegaConf.create({"strategy": "status", "length_balance": True})
    lab = label_pool(np.r_[s1, -s1], None, np.arange(2), np.ones(2, bool), TH, "none", "none", sel, lengths=lengths)
    assert lab.stop and lab.fields["kept"] == 0 and lab.fields["length_balance_dropped"] == 2


# -- a run's saved scores ---------------------------------------------------------------------------
def _save(d, phase, loop, correct, chars=None):
    d = d / phase
    d.mkdir(parents=True, exist_ok=True)
    ok = np.asarray(correct)
    np.savez(d / f"eval_scores_loop{loop}.npz", test_chosen=ok.astype(np.float32), test_rejected=np.full(len(ok), 0.5),
             test_key=np.arange(len(ok), dtype=np.uint64), test_chosen_tokens=np.array(CHOSEN, np.int32),
             test_rejected_tokens=np.array(REJECTED, np.int32),
             test_chosen_chars=np.array(chars or CHOSEN, np.int32), test_rejected_chars=np.array(REJECTED, np.int32))


def _results(direction="longer"):
    d = {"longer": 3, "shorter": 1, "equal": 0, "share_longer": 0.75, "direction": direction}
    loops = [{"loop": 0, "test_acc": 4 / 7}, {"loop": 1, "test_acc": 4 / 7}]
    return {"phases": {"ser": {"loops": loops, "selected_loop": 1, "length_direction": {"tokens": d, "chars": d}},
                       "full": {"loops": [{"loop": 0}], "selected_loop": 0}}}


def test_run_length_statistics_and_lines(tmp_path):
    _save(tmp_path, "ser", 0, A)
    _save(tmp_path, "ser", 1, B)
    _save(tmp_path, "full", 0, [True] * 7)
    res = lc.run_length_statistics(tmp_path, _results(), n_boot=500)
    t = res["test"]["tokens"]
    assert set(res["test"]) == {"tokens", "chars"} and t["direction"]["direction"] == "longer"
    assert t["models"]["seed"]["balanced"] == pytest.approx(0.375) and t["models"]["ser"]["balanced"] == pytest.approx(0.625)
    assert t["models"]["full"]["wrong_way"] == 1.0 and t["models"]["seed"]["baseline"] == pytest.approx(4.5 / 7)
    assert t["paired"]["ser-seed"]["balanced"]["estimate"] == pytest.approx(0.25)
    assert t["paired"]["ser-seed"]["wrong_way"]["estimate"] == pytest.approx(0.5)
    assert t["paired"]["ser-full"]["balanced"]["estimate"] == pytest.approx(0.625 - 1.0)
    json.dumps(res)  # goes into results.json
    lines = lc.length_lines(res)
    text = "\n".join(lines)
    assert "length control on test (tokens)" in text and "length control on test (characters)" in text
    assert '"prefer the longer": 64.3% on these 7 pairs (4 where length points to the chosen answer, 2 to the ' \
           'rejected, 1 of equal length counted half right)' in text
    assert "  seed RM: accuracy 57.1%, length-balanced 37.5% [" in text and "wrong-way 0.0%" in text
    assert "  SER final - seed RM: length-balanced +25.0 [" in text and "; wrong-way +50.0 [" in text
    f = lc.summary_figures(res)
    assert f["test/ser_minus_seed_length_balanced"] == pytest.approx(25.0)
    assert f["test/length_baseline"] == pytest.approx(100 * 4.5 / 7) and f["test/seed_wrong_way"] == 0.0
    assert "test/ser_minus_seed_length_balanced_low" in f


def test_run_length_statistics_of_older_runs(tmp_path):
    _save(tmp_path, "ser", 0, A)
    _save(tmp_path, "ser", 1, B)
    r = _results()
    del r["phases"]["ser"]["length_direction"], r["phases"]["full"]  # no direction recorded, no full phase
    res = lc.run_length_statistics(tmp_path, r, n_boot=100)
    t = res["test"]["tokens"]
    assert t["direction"] is None and t["models"]["seed"]["baseline"] is None
    assert t["models"]["ser"]["balanced"] == pytest.approx(0.625) and t["paired"]["ser-seed"]["wrong_way"] is None
    assert list(t["paired"]) == ["ser-seed"]
    text = "\n".join(lc.length_lines(res))
    assert "no training-label direction recorded" in text and ", wrong-way" not in text and "; wrong-way" not in text
    # runs without saved lengths or scores: nothing
    np.savez(tmp_path / "ser" / "eval_scores_loop0.npz", test_chosen=np.ones(2), test_rejected=np.zeros(2))
    assert lc.run_length_statistics(tmp_path, r) == {}
    assert lc.run_length_statistics(tmp_path / "none", r) == {}
    assert lc.length_lines({}) == [] and lc.summary_figures(None) == {}


def test_evaluation_report_and_lines():
    d = {"longer": 1, "shorter": 3, "equal": 0, "share_longer": 0.25, "direction": "shorter"}
    r = lc.evaluation_report(A, CHOSEN, REJECTED, training=d, n_boot=500)
    assert r["direction"] == "shorter" and r["direction_source"] == "training labels"
    assert r["baseline"] == pytest.approx(2.5 / 7) and r["wrong_way"] == 0.75 and r["share_longer_here"] == pytest.approx(4 / 6)
    assert r["ci"]["balanced"]["estimate"] == pytest.approx(0.375)
    assert r["ci"]["model_minus_baseline"]["estimate"] == pytest.approx(4 / 7 - 2.5 / 7)
    own = lc.evaluation_report(A, CHOSEN, REJECTED, n_boot=100)
    assert own["direction"] == "longer" and own["direction_source"] == "these pairs"
    lines = lc.evaluation_lines(r, "tokens")
    assert lines[0].startswith('length control (tokens): length-only baseline "prefer the shorter" (from the '
                               'training labels) 35.7% [')
    assert "length-balanced accuracy 37.5% [" in lines[1] and "of 4 pairs, right-way 0.0% of 2" in lines[1]
    assert "an upper bound" in lc.evaluation_lines(own, "chars")[0]


# -- end to end: a tiny run with the option, cold and reusing loop 0 --------------------------------
def _mixed_pairs(path, n: int = 150):
    """'yes ...' (chosen) against 'no ...' with random lengths: the chosen answer is the longer in
    about half of the pairs, so both length strata are populated."""
    import random

    from tests.synthetic import TOPICS

    rng = random.Random(0)
    words = lambda: " ".join(rng.choice(TOPICS) for _ in range(rng.randint(1, 8)))  # noqa: E731
    rows = [{"prompt": f"question {i}: tell me about {TOPICS[i % len(TOPICS)]}", "chosen": f"yes, {words()}",
             "rejected": f"no. {words()}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_length_balanced_run_logs_length_figures_and_reuses_loop0(tmp_path, capsys):
    from ser.train import run
    from tests.conftest import compose
    from tests.loop_utils import selections
    from tests.synthetic import tiny_overrides

    data = _mixed_pairs(tmp_path / "pairs.jsonl")
    base = tiny_overrides(data, "loop.max_loops=1", "loop.epochs_per_loop=1", "thresholds.min_count=1",
                          "thresholds.scaling=labeled_std", "reuse.enabled=true", f"reuse.dir={tmp_path / 'cache'}")
    run(compose(base, output_dir=tmp_path / "first"))  # publishes loop 0 (the paper's rule)
    capsys.readouterr()
    balanced = [*base, "selection.length_balance=true"]
    reused = run(compose(balanced, output_dir=tmp_path / "reused"))
    printed = capsys.readouterr().out
    cold = run(compose([*balanced, "reuse.enabled=false"], output_dir=tmp_path / "cold"))
    r, c = reused["phases"]["ser"], cold["phases"]["ser"]
    assert r["loops"][0]["reused"] and selections(tmp_path / "reused") == selections(tmp_path / "cold")
    keys = ("kept", "length_balance_dropped", "kept_prefers_longer", "pool_prefers_longer", "pool_labels_longer",
            "test_length_balanced", "test_wrong_way", "test_prefers_longer", "test_acc")
    assert [{k: h.get(k) for k in keys} for h in r["loops"]] == [{k: h.get(k) for k in keys} for h in c["loops"]]
    h0 = c["loops"][0]
    for k in keys[2:]:
        assert h0[k] is None or 0 <= h0[k] <= 1, k
    assert 0.3 < h0["pool_labels_longer"] < 0.7 and h0["kept"] > 0 and h0["length_balance_dropped"] > 0
    assert h0["kept_prefers_longer"] == 0.5
    # the kept pairs: as many chosen-by-RM longer as shorter (equal lengths aside)
    with np.load(tmp_path / "cold" / "ser" / "pool_scores_loop0.npz") as z:
        kept, a1, a2 = z["kept"], z["a1_tokens"], z["a2_tokens"]
        first = z["scores_a1"][kept] >= z["scores_a2"][kept]
        assert "kept_unbalanced" in z.files and len(z["kept_unbalanced"]) - len(kept) == h0["length_balance_dropped"]
    longer = np.where(first, a1[kept] > a2[kept], a2[kept] > a1[kept])
    shorter = np.where(first, a1[kept] < a2[kept], a2[kept] < a1[kept])
    assert longer.sum() == shorter.sum()
    # the direction of the training labels is recorded; the run's table ends with the length lines
    assert set(c["length_direction"]) == {"chars", "tokens"} and cold["selection"]["length_balance"] is True
    t = cold["length"]["test"]["tokens"]
    assert set(t["models"]) == {"seed", "ser"} and t["models"]["seed"]["accuracy"] == pytest.approx(h0["test_acc"])
    assert t["models"]["seed"]["balanced"] == pytest.approx(h0["test_length_balanced"])
    assert "length control on test (tokens)" in printed and "SER final - seed RM: length-balanced" in printed
    assert "length control on test (tokens)" in (tmp_path / "cold" / "results.md").read_text()
    meta = json.loads((tmp_path / "cold" / "ser" / "reward_model" / "ser_reward.json").read_text())
    assert meta["length_direction"] == c["length_direction"]
    from ser.tracking import summary

    assert "test/ser_minus_seed_length_balanced" in summary(cold)
