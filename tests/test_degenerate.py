"""Degenerate inputs end to end with the tiny model: each is logged and the run goes on.

No validation split, an empty pool, a collapsed reward model (every score tied) on a validation
split of 2 pairs: the run finishes and says what it could not compute.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest

import ser.loop
from ser.train import run
from tests.conftest import compose
from tests.synthetic import tiny_overrides, write_pairs

FAST = ("loop.max_loops=1", "loop.epochs_per_loop=1")


def test_no_validation_split_runs_without_val_metrics(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=60)
    res = run(compose(tiny_overrides(data, *FAST, "data.val_fraction=0"), output_dir=tmp_path / "run"))
    ser_phase = res["phases"]["ser"]
    assert ser_phase["counts"]["val"] == 0
    for h in ser_phase["loops"]:
        assert "val_acc" not in h and "val_ece" not in h and math.isfinite(h["test_acc"])


def test_empty_pool_stops_after_the_seed_loop(tmp_path, caplog):
    data = write_pairs(tmp_path / "pairs.jsonl", n=60)
    with caplog.at_level(logging.INFO, logger="ser.loop"):
        res = run(compose(tiny_overrides(data, *FAST, "labeled_fraction=1.0"), output_dir=tmp_path / "run"))
    ser_phase = res["phases"]["ser"]
    assert ser_phase["counts"]["pool"] == 0
    assert [h["stop"] for h in ser_phase["loops"]] == ["empty_pool"]
    assert "'stop': 'empty_pool'" in caplog.text


@pytest.mark.parametrize("selection", ["status", "pairwise"])
def test_collapsed_reward_model_on_a_tiny_validation_split_is_logged_and_survived(tmp_path, monkeypatch, caplog, selection):
    """Every score the same (a collapsed RM) and 2 validation pairs: the cross-fitted calibration and
    the validation temperature are undefined; they are NaN, a warning says so, nothing is selected."""
    data = write_pairs(tmp_path / "pairs.jsonl", n=60)
    monkeypatch.setattr(ser.loop, "score_sequences", lambda model, seqs, *a, **kw: np.zeros(len(seqs)))
    cfg = compose(tiny_overrides(data, *FAST, "data.val_fraction=0.04", f"selection={selection}"),
                  output_dir=tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="ser.loop"):
        res = run(cfg)
    ser_phase = res["phases"]["ser"]
    assert ser_phase["counts"]["val"] == 2
    (h,) = ser_phase["loops"]
    assert math.isnan(h["val_ece"]) and math.isnan(h["val_temperature"]) and h["reliability"] == []
    assert h["status"] == "STOP" and h["kept"] == 0 and h["stop"] == "stop_status"
    assert "validation calibration is undefined (all 2 score differences are 0)" in caplog.text
    if selection == "pairwise":
        assert math.isnan(h["temperature"])
        assert "selection.strategy=pairwise: no temperature can be fitted on the validation pairs" in caplog.text


@pytest.mark.parametrize("centring,scaling", [("none", "none"), ("pool_mean", "pool_std"), ("labeled_mean", "labeled_std")])
def test_nan_pool_scores_are_logged_and_never_selected(caplog, centring, scaling):
    """A diverged RM (NaN scores) labels nothing it cannot order, says so, and raises nothing."""
    from ser import status as st
    from ser.loop import label_pool

    s1 = np.array([3.0, np.nan, 2.0, -1.0])
    s2 = np.array([-3.0, 0.0, np.nan, 1.0])
    with caplog.at_level(logging.WARNING, logger="ser.loop"):
        lab = label_pool(np.r_[s1, s2], np.array([1.0, -1.0]), np.arange(4), np.ones(4, bool),
                         st.Thresholds(min_count=1), centring, scaling)
    assert "2 of 8 pool scores are NaN or infinite" in caplog.text
    assert not {1, 2} & set(lab.pool_index.tolist())


def test_best_val_without_validation_pairs_keeps_the_last_loop_and_says_so(tmp_path, monkeypatch, caplog):
    """data.val_fraction > 0 but no validation pair survived formatting (e.g. all over-length, dropped)."""
    from ser.data.datamodule import PreferenceDataModule

    real = PreferenceDataModule.evaluation_sets
    monkeypatch.setattr(PreferenceDataModule, "evaluation_sets",
                        lambda self: {k: v for k, v in real(self).items() if k != "val"})
    data = write_pairs(tmp_path / "pairs.jsonl", n=60)
    with caplog.at_level(logging.WARNING, logger="ser.loop"):
        res = run(compose(tiny_overrides(data, *FAST, "loop.select=best_val"), output_dir=tmp_path / "run"))
    ser_phase = res["phases"]["ser"]
    assert ser_phase["selected_loop"] == ser_phase["loops"][-1]["loop"]
    assert "loop.select=best_val: no validation pairs are left" in caplog.text
