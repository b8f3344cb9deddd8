"""`ser report` on runs with acquisition: the human-labels table and the accuracy-vs-labels figure."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from ser.report import write_report
from ser.report.acquisition import accuracy_interval, row_fields
from ser.train import run
from tests.conftest import compose
from tests.synthetic import tiny_overrides, write_pairs

ASK = ("acquisition.per_loop=5", "acquisition.budget=12")


def test_accuracy_interval_is_the_mean_over_seeds():
    runs = [{"test": {"ser": np.array([1, 1, 0, 1], bool)}}, {"test": {"ser": np.array([1, 0, 0, 1], bool)}}]
    iv = accuracy_interval(runs, "ser")
    assert iv.estimate == pytest.approx(0.625) and iv.n == 2 and iv.low < 0.625 < iv.high
    assert accuracy_interval(runs, "full") is None


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
    with open(out / "runs.csv") as fh:
        got = {r["run"]: r for r in csv.DictReader(fh)}
    assert got["acquisition=uncertain,seed=0"]["human_labels"] == str(n_seed + 10)
    assert got["acquisition=uncertain,seed=0"]["method"] == "SER + uncertain"
