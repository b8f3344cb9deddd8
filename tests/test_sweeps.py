"""Hydra multirun over two threshold points, `ser report` on its folder, and the wandb logger."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ser.train import run
from tests.conftest import ROOT, compose
from tests.synthetic import tiny_overrides, write_pairs
from tests.wandb_records import read_finished_run


@pytest.mark.slow
def test_multirun_two_points_then_report(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "ser.train", "-m", "--config-dir", "multirun_sweeps", "--config-name", "rule_variants",
           *tiny_overrides(data, "loop.max_loops=2"), "thresholds.rule=paper,authors", "thresholds.centring=none",
           "seed=0", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.rglob("results.json"))
    assert len(runs) == 2
    assert {json.loads((r / "results.json").read_text())["thresholds"]["rule"] for r in runs} == {"paper", "authors"}
    assert all(len(r.name) <= 120 and r.parent == sweep for r in runs)  # bounded, flat folder names
    rep = subprocess.run([sys.executable, "-m", "ser.cli", "report", str(sweep)], cwd=ROOT, capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert "SER final" in rep.stdout and "thresholds.rule=authors" in rep.stdout
    assert "## Configurations compared" in rep.stdout and "vs thresholds.rule=paper" in rep.stdout  # paired, seed 0
    assert "Pseudo-label precision at matched coverage" in rep.stdout
    for f in ("report.md", "runs.csv", "accuracy_per_loop.png", "pairs_per_loop.png", "score_gaps.png",
              "coverage_precision.png"):
        assert (sweep / "report" / f).stat().st_size > 0
    assert len((sweep / "report" / "runs.csv").read_text().strip().splitlines()) == 3  # header + 2 runs


def test_wandb_offline_run_is_one_run_per_job_with_summary_and_flat_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    res = run(compose(tiny_overrides(data, "loop.max_loops=1", "compare_full=true", "logger=wandb"),
                      output_dir=tmp_path / "run"))
    runs = list((tmp_path / "run").rglob("offline-run-*"))
    assert len(runs) == 1, f"one wandb run per job, found {runs}"
    import wandb

    wandb.teardown()  # stop this process's wandb-core, which flushes and closes the run's log
    logged = read_finished_run(next(runs[0].glob("run-*.wandb")))
    summary, config = logged["summary"], logged["config"]
    ser = res["phases"]["ser"]
    assert summary["seed_acc"] == pytest.approx(100 * ser["loops"][0]["test_acc"])
    assert summary["ser_acc"] == pytest.approx(100 * ser["test_acc"])
    assert summary["full_acc"] == pytest.approx(100 * res["phases"]["full"]["test_acc"])
    assert summary["gain"] == pytest.approx(summary["ser_acc"] - summary["seed_acc"])
    ci = res["statistics"]["test"]["ser"]["ci"]
    assert summary["test/ser_minus_seed_low"] == pytest.approx(100 * ci["low"])
    assert summary["kept_pairs"] == ser["loops"][0]["kept"]
    assert summary["ser/loops/_type"] == summary["full/loops/_type"] == "table-file"  # the loop tables
    assert {"figures/accuracy_per_loop/_type", "figures/pairs_per_loop/_type"} <= set(summary)  # the run's plots
    assert config["thresholds.tau_high"] == 0.55 and config["loop.max_loops"] == 1  # flat keys
    assert config["ser/data/pool"] == ser["counts"]["pool"]  # each phase's split counts
    assert {"ser/loop/test_acc", "full/train/loss_step"} <= logged["history_keys"]  # phase-prefixed metrics


