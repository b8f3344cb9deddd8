"""`ser report` on runs with acquisition: the human-labels table and the accuracy-vs-labels figure."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from ser.report import write_report
from ser.report.acquisition import accuracy_interval, acquisition_comparisons, row_fields
from ser.train import run
from tests.conftest import compose
from tests.synthetic import tiny_overrides, write_pairs

ASK = ("acquisition.per_loop=5", "acquisition.budget=12")


def test_accuracy_interval_is_the_mean_over_seeds():
    runs = [{"test": {"ser": np.array([1, 1, 0, 1], bool)}}, {"test": {"ser": np.array([1, 0, 0, 1], bool)}}]
    iv = accuracy_interval(runs, "ser")
    assert iv.estimate == pytest.approx(0.625) and iv.n == 2 and iv.low < 0.625 < iv.high
    assert accuracy_interval(runs, "full") is None


def _row(group, method, budget, seed, ser, keys):
    return {"run": f"{group},seed={seed}", "group": group, "seed": seed, "method": method, "budget": budget,
            "human_seed": 40, "human_acquired": 0, "human_labels": 40,
            "outcomes": {"test": {"ser": np.array(ser, bool), "key": np.array(keys, np.uint64)}}}


def test_comparisons_are_paired_by_seed_and_pair_and_holm_adjusted():
    keys = {0: [1, 2, 3, 4], 1: [5, 6, 7, 8]}  # each seed its own test pairs, listed in another order below
    rows = [_row("none", "SER", None, 0, [1, 0, 1, 0], keys[0]), _row("none", "SER", None, 1, [0, 0, 1, 1], keys[1]),
            # seed 0's pairs in reverse order: matched by key, +1 of 4 pairs; seed 1: +2 of 4
            _row("unc", "SER + uncertain", 0.02, 0, [0, 1, 1, 1], keys[0][::-1]),
            _row("unc", "SER + uncertain", 0.02, 1, [1, 1, 1, 1], keys[1]),
            _row("rnd", "SER + random", 0.02, 0, [1, 0, 1, 0], keys[0]),
            _row("rnd", "SER + random", 0.02, 1, [0, 0, 1, 1], keys[1])]
    groups = [{"group": g, "runs": [r["run"] for r in rows if r["group"] == g], "data": "hh"} for g in ("none", "unc", "rnd")]
    comps = acquisition_comparisons(rows, groups, n_boot=100)
    got = {(c["method"], c["reference"]): c for c in comps}
    assert set(got) == {("SER + uncertain", "SER"), ("SER + random", "SER"), ("SER + uncertain", "SER + random")}
    d = got[("SER + uncertain", "SER")]["diff"]
    # per-seed differences +0.25 and +0.5 on disjoint pairs: mean 0.375, SE = sd / sqrt(2) = 0.125, t with 1 df
    assert d.estimate == pytest.approx(0.375) and d.n == 2 and got[("SER + uncertain", "SER")]["seeds"] == 2
    assert d.high - d.estimate == pytest.approx(12.7062 * 0.125, rel=1e-4)
    assert got[("SER + uncertain", "SER + random")]["diff"].estimate == pytest.approx(0.375)
    assert got[("SER + random", "SER")]["diff"].estimate == 0
    # one family of the three p-values: Holm multiplies the smallest by 3
    ps = sorted(c["diff"].p for c in comps if c["diff"].p is not None)
    assert min(c["p_holm"] for c in comps) == pytest.approx(min(1.0, 3 * ps[0]))


def test_row_fields_name_the_method_and_count_the_labels():
    ser = {"phases": {"ser": {"counts": {"labeled": 40}, "human_labels": {"seed": 40, "acquired": 12}}},
           "acquisition": {"rule": "uncertain", "budget": 0.02, "self_label": True}}
    assert row_fields(ser) == {"human_seed": 40, "human_acquired": 12, "human_labels": 52, "method": "SER + uncertain",
                               "budget": 0.02, "uses_acquisition": True}
    ser["acquisition"]["self_label"] = False
    assert row_fields(ser)["method"] == "seed + uncertain (no self-labels)"
    plain = {"phases": {"seed": {"counts": {"labeled": 40}}}}
    assert row_fields(plain)["method"] == "seed only" and row_fields(plain)["human_labels"] == 40


def test_report_has_the_labels_table_and_figure(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=200)
    base = ("loop.max_loops=2", "loop.epochs_per_loop=1", "optim.lr=2e-3", "thresholds.scaling=labeled_std",
            "thresholds.min_count=1", "thresholds.tau_high=0.7", "thresholds.tau_low=0.3", "thresholds.tau_delta=0.5")
    configs = {"acquisition=none": ("compare_full=true",), "acquisition=uncertain": ASK,
               "acquisition=random": ASK, "acquisition=random,acquisition.self_label=false": ASK}
    root = tmp_path / "sweep"
    for name, extra in configs.items():
        for seed in (0, 1):
            over = [*name.split(","), *extra] if name != "acquisition=none" else [name, *extra]
            run(compose(tiny_overrides(data, *base, *over, f"seed={seed}"), output_dir=root / f"{name},seed={seed}"))
    out = write_report(root, n_boot=200)
    md = (out / "report.md").read_text()
    assert "## Human labels and test accuracy (acquisition)" in md
    section = md.split("## Human labels and test accuracy (acquisition)")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| acquisition=")]
    assert len(rows) == 5
    by_method = {line.split(" | ")[1]: line for line in rows}
    assert set(by_method) == {"SER", "seed RM", "SER + uncertain", "SER + random", "seed + random (no self-labels)"}
    cells = lambda m: [c.strip() for c in by_method[m].split("|")]  # noqa: E731
    n_seed = int(cells("SER")[6])
    # two loops ask (the last loop of max_loops=2 scores no pool): 5 + 5 of the budget of 12
    assert cells("SER")[7] == "0" and int(cells("SER + uncertain")[8]) == n_seed + 10
    assert cells("seed RM")[8] == str(n_seed)
    assert cells("SER + random")[7] == "10" and "[" in cells("SER + uncertain")[9]
    assert "[" in cells("SER")[10]  # the full-data RM of the runs that trained it
    assert (out / "accuracy_vs_human_labels.png").stat().st_size > 1000
    assert "Measured on: " in md and "(8 runs)" in md  # the CPU every finished run recorded
    # the paired table: three methods minus SER alone, uncertain minus random; one family of 4
    paired = [line for line in section.splitlines() if "(of " in line]
    assert len(paired) == 4 and all("(of 4)" in line and " | 12 | " in line for line in paired)
    assert {tuple(c.strip() for c in line.split("|")[3:5]) for line in paired} == {
        ("SER + uncertain", "SER"), ("SER + random", "SER"), ("seed + random (no self-labels)", "SER"),
        ("SER + uncertain", "SER + random")}
    with open(out / "runs.csv") as fh:
        got = {r["run"]: r for r in csv.DictReader(fh)}
    assert got["acquisition=uncertain,seed=0"]["human_labels"] == str(n_seed + 10)
    assert got["acquisition=uncertain,seed=0"]["method"] == "SER + uncertain"
