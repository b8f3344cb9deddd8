"""Selection strategies (ser/selection.py) on hand-made scores, and each one end to end."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ser.selection import select
from ser.train import run
from tests.conftest import compose
from tests.synthetic import tiny_overrides, write_pairs

# validation: 3 pairs ranked right by 2, 1 wrong by 2: T = 2 / ln 3, so a gap of 4 gives P = 0.9
VAL_C, VAL_R = np.array([2.0, 2, 2, 0]), np.array([0.0, 0, 0, 2])
S1, S2 = np.array([4.0, 0.0, 1.0]), np.array([0.0, 4.0, 0.9])


def test_pairwise_by_hand():
    sel = select("pairwise", S1, S2, VAL_C, VAL_R, confidence=0.8)
    assert sel.fields["temperature"] == pytest.approx(2 / math.log(3), rel=1e-5)
    assert sel.index.tolist() == [0, 1] and sel.first_is_chosen.tolist() == [True, False]
    assert sel.fields["estimated_precision"] is None  # no validation pair reaches confidence 0.8 (all 0.75)
    assert select("pairwise", S1, S2, VAL_C, VAL_R, confidence=0.95).index.tolist() == []


def test_precision_target_by_hand():
    # every validation pair has confidence 0.75 and 3 of 4 are right: precision 0.75 at the cut 0.75
    sel = select("precision_target", S1, S2, VAL_C, VAL_R, target_precision=0.7, min_pairs=1)
    assert sel.fields["cut"] == pytest.approx(0.75) and sel.fields["estimated_precision"] == pytest.approx(0.75)
    assert sel.index.tolist() == [0, 1]
    none = select("precision_target", S1, S2, VAL_C, VAL_R, target_precision=0.8, min_pairs=1)
    assert none.fields["cut"] is None and none.index.tolist() == []


def test_consistent_by_hand():
    sel = select("consistent", S1, S2, VAL_C, VAL_R, confidence=0.8, previous_a1_better=np.array([1, 1, -1]))
    assert sel.index.tolist() == [0]  # pair 1 flipped since the previous loop, pair 2 was not scored then
    assert select("consistent", S1, S2, VAL_C, VAL_R, confidence=0.8).index.tolist() == [0, 1]  # loop 0
    with pytest.raises(ValueError, match="not a confidence strategy"):
        select("status", S1, S2, VAL_C, VAL_R)


@pytest.mark.parametrize("strategy", ["pairwise", "precision_target", "consistent"])
def test_each_strategy_runs_end_to_end(tmp_path, strategy):
    data = write_pairs(tmp_path / "pairs.jsonl", n=200)
    res = run(compose(tiny_overrides(data, "loop.max_loops=2", "loop.epochs_per_loop=1", "optim.lr=2e-3",
                                     f"selection={strategy}", "selection.confidence=0.6",
                                     "selection.target_precision=0.6", "selection.min_pairs=2", "data.val_fraction=0.2"),
                      output_dir=tmp_path / "run"))
    hist = res["phases"]["ser"]["loops"]
    first = hist[0]
    assert first["selection"] == strategy and first["temperature"] > 0
    assert first["status"] in (strategy.upper(), "STOP")
    for h in hist:  # calibration diagnostics every loop
        assert 0 <= h["val_ece"] <= 1 and h["reliability"] and h["val_temperature"] > 0
    if first["kept"]:
        assert hist[1]["train_pairs"] == first["train_pairs"] + first["kept"]
        assert 0 <= first["pseudo_label_precision"] <= 1


def test_unknown_strategy_is_one_clear_error(tmp_path):
    from ser.errors import ConfigError

    data = write_pairs(tmp_path / "pairs.jsonl", n=60)
    with pytest.raises(ConfigError, match="selection.strategy='best' must be one of status, pairwise"):
        run(compose(tiny_overrides(data, "loop.max_loops=1", "selection.strategy=best"), output_dir=tmp_path / "run"))


def test_mc_dropout_agreement_by_hand():
    from ser.selection import mc_agreement

    passes = [(np.array([4.0, 0.0, 0.8]), np.array([0.0, 4.0, 0.9])),  # pair 2 flips in this pass
              (np.array([3.0, 1.0, 1.2]), np.array([0.5, 3.0, 0.9]))]
    agree = mc_agreement(S1, S2, passes)
    assert agree.tolist() == [1.0, 1.0, 0.5]
    sel = select("pairwise", S1, S2, VAL_C, VAL_R, confidence=0.5, mc_agreement=agree, mc_min_agreement=1.0)
    assert sel.index.tolist() == [0, 1]  # pair 2 passes the confidence cut but not the dropout agreement
    assert select("pairwise", S1, S2, VAL_C, VAL_R, confidence=0.5).index.tolist() == [0, 1, 2]


def test_mc_agreement_of_the_candidates_alone_selects_the_same_pairs():
    """selection.mc_scope=candidates scores with dropout only the pairs the strategy keeps without
    MC (the others get nan): the selection equals the one from the agreement of every pair."""
    rng = np.random.default_rng(0)
    s1, s2 = rng.normal(size=50), rng.normal(size=50)
    agree = rng.choice([0.0, 0.5, 1.0], size=50)
    for strategy in ("pairwise", "precision_target"):
        kw = dict(confidence=0.55, target_precision=0.6, min_pairs=2)
        candidates = select(strategy, s1, s2, VAL_C, VAL_R, **kw).index
        partial = np.full(50, np.nan)
        partial[candidates] = agree[candidates]
        full = select(strategy, s1, s2, VAL_C, VAL_R, mc_agreement=agree, **kw).index
        assert 0 < len(full) < len(candidates)
        assert select(strategy, s1, s2, VAL_C, VAL_R, mc_agreement=partial, **kw).index.tolist() == full.tolist()


@pytest.mark.parametrize("scope", ["candidates", "pool"])
def test_mc_dropout_passes_end_to_end(tmp_path, scope):
    data = write_pairs(tmp_path / "pairs.jsonl", n=200)
    over = lambda *o: tiny_overrides(data, "loop.max_loops=1", "loop.epochs_per_loop=1", "optim.lr=3e-4",  # noqa: E731
                                     "selection=pairwise", "data.val_fraction=0.2", *o)
    # a cut that half the pool passes: the median confidence of loop 0 (its training ignores selection)
    ref = run(compose(over("selection.confidence=0.5"), output_dir=tmp_path / "ref"))["phases"]["ser"]["loops"][0]
    ref_pool = np.load(tmp_path / "ref" / "ser" / "pool_scores_loop0.npz")
    d = (ref_pool["scores_a1"] - ref_pool["scores_a2"]) / ref["temperature"]
    cut = float(np.median(1 / (1 + np.exp(-np.abs(d)))))
    res = run(compose(over(f"selection.confidence={cut}", "selection.mc_passes=2", f"selection.mc_scope={scope}"),
                      output_dir=tmp_path / "run"))
    first = res["phases"]["ser"]["loops"][0]
    assert first["mc_s"] > 0  # the passes' cost, logged every loop
    pool = np.load(tmp_path / "run" / "ser" / "pool_scores_loop0.npz")
    scored = ~np.isnan(pool["mc_agreement"])
    assert first["mc_scored"] == scored.sum()
    if scope == "pool":
        assert scored.all()
    else:  # only the pairs past the confidence cut were scored with dropout; the run kept those that agreed
        past_cut = 1 / (1 + np.exp(-np.abs(d))) >= first["cut"]
        assert 0 < past_cut.sum() < len(past_cut)
        assert scored.tolist() == past_cut.tolist()
        assert (pool["mc_agreement"][pool["kept"]] == 1.0).all()
    with pytest.raises(Exception, match="mc_passes works with the confidence strategies"):
        run(compose(tiny_overrides(data, "loop.max_loops=1", "selection.mc_passes=2"), output_dir=tmp_path / "bad"))


def test_scoring_with_dropout_differs_and_restores_the_mode():
    from omegaconf import OmegaConf

    from ser.data import Formatter
    from ser.model import build_hf_model, load_tokenizer, score_sequences
    from tests.conftest import CONF

    cfg = OmegaConf.load(CONF / "model" / "tiny.yaml")
    tok = load_tokenizer(cfg)
    net = build_hf_model(cfg, tok).eval()
    fmt = Formatter(tok, max_length=32)
    seqs = [fmt.encode([{"role": "user", "content": f"q{i}"}], f"answer {i} " * (i + 1))[0] for i in range(8)]
    plain = score_sequences(net, seqs, tok.pad_token_id)
    assert np.array_equal(plain, score_sequences(net, seqs, tok.pad_token_id))  # deterministic without dropout
    assert not np.allclose(plain, score_sequences(net, seqs, tok.pad_token_id, dropout=True))
    assert not net.training  # the mode it came in


def test_top_k_precision_and_coverage_curve_by_hand():
    from ser.selection import coverage_curve, top_k_precision

    score = np.array([0.9, 0.1, 0.5, 0.7, 0.5])
    right = np.array([True, False, False, True, True])
    # ranked: 0 (R), 3 (R), 2 (W, first of the tied 0.5s), 4 (R), 1 (W)
    assert top_k_precision(score, right, 2) == 1.0
    assert top_k_precision(score, right, 3) == pytest.approx(2 / 3)
    assert top_k_precision(score, right, 0) is None and top_k_precision(score, right, 6) is None
    mask = np.array([False, True, True, True, True])
    assert top_k_precision(score, right, 2, mask) == 0.5  # 3 (R), 2 (W)
    assert top_k_precision(score, right, 5, mask) is None
    cov, prec = coverage_curve(score, right)
    assert cov.tolist() == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert prec.tolist() == pytest.approx([1, 1, 2 / 3, 3 / 4, 3 / 5])
    cov, prec = coverage_curve(score, right, mask)
    assert cov.tolist() == [0.2, 0.4, 0.6, 0.8] and prec.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 1 / 2])


def test_previous_orientation_by_hand():
    from ser.selection import previous_a1_better

    prev = {"pool_index": np.array([5, 7, 9]), "scores_a1": np.array([1.0, 0.0, 2.0]), "scores_a2": np.array([0.0, 1.0, 3.0])}
    assert previous_a1_better(prev, np.array([9, 5, 8, 7])).tolist() == [0, 1, -1, 0]
