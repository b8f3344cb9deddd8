"""`ser report`'s offline replay of pool scores (precision at matched coverage) and its paired
comparison of configurations, on hand-made runs."""
from __future__ import annotations

import numpy as np
import pytest

from ser.report.compare import compare_groups
from ser.report.replay import curves, replay_run, replay_summary


def _loop_row(right, run_set, pairwise_set, loop=0):
    right = np.array(right, dtype=bool)
    cov = np.arange(1, len(right) + 1) / len(right)
    return {"loop": loop, "pool": len(right), "k": len(run_set), "right": right,
            "sets": {"run": np.array(run_set), "pairwise": np.array(pairwise_set)},
            "curves": {"pairwise": (cov, np.cumsum(right) / np.arange(1, len(right) + 1))}}


def test_replay_summary_by_hand():
    # run A: the rule kept pairs 0,1 (1 right of 2), pairwise would keep 2,3 (both right): +0.5
    # run B: the rule kept 0,1 (both right), pairwise 0,2 (1 of 2): -0.5 ... mean diff 0
    a = _loop_row([True, False, True, True], [0, 1], [2, 3])
    b = _loop_row([True, True, False, False], [0, 1], [0, 2])
    s = replay_summary([[a], [b]], n_boot=400)
    assert s["run"]["precision"] == pytest.approx(0.75) and s["run"]["diff"] == 0
    assert s["pairwise"]["precision"] == pytest.approx(0.75) and s["pairwise"]["diff"] == pytest.approx(0.0)
    assert s["pairwise"]["low"] < 0 < s["pairwise"]["high"] and s["pairwise"]["loops"] == 2
    one = replay_summary([[a]], n_boot=400)["pairwise"]
    assert one["diff"] == pytest.approx(0.5) and one["low"] <= 0.5 <= one["high"]
    assert replay_summary([[], []]) == {}


def test_curves_average_runs_and_leave_unreached_coverage_nan():
    a = _loop_row([True, False, True, True], [0, 1], [2, 3])
    c = curves([[a]], loop=0, grid=np.array([0.25, 0.5, 1.0]))
    assert c["curves"]["pairwise"].tolist() == pytest.approx([1.0, 0.5, 0.75])
    assert c["points"] == [(0.5, 0.5)]
    short = dict(a, curves={"pairwise": (np.array([0.25, 0.5]), np.array([1.0, 0.5]))})
    c = curves([[short]], loop=0, grid=np.array([0.25, 1.0]))
    assert c["curves"]["pairwise"][0] == 1.0 and np.isnan(c["curves"]["pairwise"][1])


def test_replay_run_reads_saved_pool_scores(tmp_path):
    d = tmp_path / "ser"
    d.mkdir()
    # 4 pool pairs; the RM's orientation (a1 > a2) is right on pairs 0, 2, 3; the run kept 1 and 3
    np.savez(d / "pool_scores_loop0.npz", pool_index=np.arange(4), scores_a1=np.array([3.0, 1, 0, 2]),
             scores_a2=np.array([0.0, 0, 0.5, 0.5]), p1=np.array([0.9, 0.6, 0.4, 0.8]), p2=np.array([0.1, 0.5, 0.5, 0.6]),
             hidden_a1_better=np.array([True, False, False, True]), kept=np.array([1, 3]))
    results = {"phases": {"ser": {"loops": [{"loop": 0, "kept": 2, "status": "EASY"}, {"loop": 1}]}}}
    rows = replay_run(tmp_path, results)
    assert len(rows) == 1 and rows[0]["k"] == 2
    assert rows[0]["right"].tolist() == [True, False, True, True]
    assert rows[0]["sets"]["run"].tolist() == [1, 3]
    assert rows[0]["sets"]["pairwise"].tolist() == [0, 3]  # |r1 - r2|: 3, 1, 0.5, 1.5
    assert rows[0]["sets"]["gap"].tolist() == [0, 3]  # |p1 - p2|: 0.8, 0.1, 0.1, 0.2


def _row(group, seed, ser_correct, val):
    return {"group": group, "seed": seed, "outcomes": {"test": {"ser": np.array(ser_correct, dtype=bool)}},
            "ser_val_acc": val}


def _group(group, rows, data="hh"):
    stat = lambda xs: {"mean": float(np.mean(xs)), "std": None, "n": len(xs)}  # noqa: E731
    rs = [r for r in rows if r["group"] == group]
    return {"group": group, "n": len(rs), "model": "m", "data": data, "ser_val_acc": stat([r["ser_val_acc"] for r in rs]),
            "ser_acc": stat([np.mean(r["outcomes"]["test"]["ser"]) for r in rs]), "gain": stat([0.0]),
            "kept": stat([1.0]), "kept_precision": stat([1.0])}


def test_compare_groups_pairs_seeds_and_chooses_on_validation():
    ref, alt = "experiment=x,selection=status", "experiment=x,selection=pairwise"
    rows = [_row(ref, 0, [1, 0, 0, 1], 0.50), _row(ref, 1, [1, 1, 0, 0], 0.60),
            _row(alt, 0, [1, 1, 0, 1], 0.40), _row(alt, 1, [1, 1, 1, 0], 0.55), _row(alt, 2, [1, 1, 1, 1], 0.9)]
    groups = [_group(ref, rows), _group(alt, rows)]
    [c] = compare_groups(rows, groups, n_boot=500)
    assert c["key"] == "selection" and c["reference"] == "status" and c["context"] == "experiment=x"
    vs = c["entries"][1]["vs_reference"]
    assert c["entries"][0]["vs_reference"] is None
    assert c["entries"][1]["paired_seeds"] == 2  # seed 2 has no reference run
    assert vs["estimate"] == pytest.approx(0.25)  # seed 0: +1/4, seed 1: +1/4
    # validation decides, even though seed 2's 0.9 lifts the alternative's mean: (0.4+0.55+0.9)/3 > 0.55
    assert c["chosen_on_val"] == "pairwise"
    # groups on different data are never paired
    other = [_row("experiment=y,selection=status", 0, [1, 0], 0.5)]
    assert compare_groups(rows + other, groups + [_group("experiment=y,selection=status", other, data="tldr")],
                          n_boot=100)[0]["key"] == "selection"
    assert all(c["key"] != "experiment" for c in compare_groups(rows + other, groups + [
        _group("experiment=y,selection=status", other, data="tldr")], n_boot=100))


def test_sweep_order_reads_multirun_yaml_and_orders_the_reference_first(tmp_path):
    from ser.report.runs import sweep_order

    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      selection: status,pairwise\n      seed: 0,1\n"
        "  overrides:\n    task: [experiment=x, 'thresholds.rule=paper,authors', 'data.files=[a,b]']\n")
    assert sweep_order(tmp_path) == {"selection": ["status", "pairwise"], "seed": ["0", "1"],
                                     "thresholds.rule": ["paper", "authors"]}
    assert sweep_order(tmp_path / "missing") == {}
    ref, alt = "selection=status", "selection=pairwise"
    rows = [_row(alt, 0, [1, 1], 0.5), _row(ref, 0, [1, 0], 0.5)]
    groups = [_group(alt, rows), _group(ref, rows)]  # the report met the alternative first
    assert compare_groups(rows, groups, n_boot=50)[0]["reference"] == "pairwise"
    assert compare_groups(rows, groups, sweep_order(tmp_path), n_boot=50)[0]["reference"] == "status"


def test_group_key_leaves_out_seed_and_settings_that_change_no_result():
    from ser.report.stats import group_key

    run = {"name": "x", "override_list": ["experiment=ser_hh_minilm", "seed=3", "reuse.dir=/tmp/c", "reuse.enabled=false",
                                          "logger=wandb", "trainer.enable_progress_bar=false", "selection=pairwise"]}
    assert group_key(run) == "experiment=ser_hh_minilm,selection=pairwise"
