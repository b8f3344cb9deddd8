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
    for f in ("report.md", "runs.csv", "accuracy_per_loop.png", "pairs_per_loop.png", "score_gaps.png"):
        assert (sweep / "report" / f).stat().st_size > 0
    assert len((sweep / "report" / "runs.csv").read_text().strip().splitlines()) == 3  # header + 2 runs


def test_wandb_offline_run_logs_loops(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    res = run(compose(tiny_overrides(data, "loop.max_loops=1", "logger=wandb"), output_dir=tmp_path / "run"))
    assert res["phases"]["ser"]["loops"][0]["status"] in ("EASY", "HARD")
    runs = list((tmp_path / "run" / "ser").rglob("offline-run-*"))
    assert runs, "wandb wrote no offline run"
    history = list(runs[0].glob("*.wandb"))
    assert history and history[0].stat().st_size > 0
    raw = history[0].read_bytes()
    assert b"loop/test_acc" in raw and b"ser/loops" in raw  # per-loop metrics and the loop table
