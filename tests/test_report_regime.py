"""`ser report` on a sweep over the data's size (issue 22): the data-regime table and figure."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ser.report import write_report
from ser.report.regime import swept_size_keys
from ser.train import run
from tests.conftest import compose
from tests.synthetic import tiny_overrides, write_pairs


def test_size_keys_are_found_only_when_they_vary():
    groups = [{"group": "data.limit=100,x=1"}, {"group": "data.limit=200,x=1"}]
    assert swept_size_keys(groups) == ["data.limit"]
    assert swept_size_keys([{"group": "x=1"}, {"group": "x=2"}]) == []
    assert swept_size_keys([{"group": "labeled_fraction=0.1"}, {"group": "labeled_fraction=0.2"}]) == ["labeled_fraction"]


def test_report_draws_the_differences_against_the_seed_size(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=240)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for i in range(0, len(rows), 3):  # a third of the labels flipped: accuracies below 100%, differences not all 0
        rows[i]["chosen"], rows[i]["rejected"] = rows[i]["rejected"], rows[i]["chosen"]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = tmp_path / "sweep"
    for limit in (120, 240):
        for seed in (0, 1):
            name = f"data.limit={limit},seed={seed}"
            run(compose(tiny_overrides(data, "loop.max_loops=1", "compare_full=true", f"data.limit={limit}",
                                       f"seed={seed}"), output_dir=root / name))
    out = write_report(root, n_boot=200)
    md = (out / "report.md").read_text()
    section = md.split("## Data regime: the seed's size")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if "data.limit=" in line]
    assert len(rows) == 2
    cells = [[c.strip() for c in line.split("|")] for line in rows]
    assert [c[2] for c in cells] == ["data.limit=120", "data.limit=240"]  # ordered by labelled pairs
    labelled = [int(c[4]) for c in cells]
    assert labelled[1] > labelled[0] > 0
    # SER - seed: the mean over the seeds of each run's own difference (each size has its own test pairs)
    with open(out / "runs.csv") as fh:
        got = list(csv.DictReader(fh))
    for c, limit in zip(cells, (120, 240)):
        gains = [float(r["gain"]) for r in got if f"data.limit={limit}," in r["run"]]
        assert float(c[8].split(" ")[0]) == pytest.approx(100 * np.mean(gains), abs=0.051)
        assert c[3] == "2" and "[" in c[9]  # full - seed with its CI
    assert (out / "data_regime.png").stat().st_size > 1000
