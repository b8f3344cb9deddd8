"""ser.report / ser.cli on fake run folders written by hand (no training; expected numbers worked by hand)."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ser import cli
from ser.report import (ReportError, aggregate, find_runs, format_markdown, format_run_table, load_run, load_runs,
                        summary_rows, write_report)
from tests.conftest import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EDGES = [i / 20 for i in range(21)]
TH = {"rule": "paper", "tau_high": 0.55, "tau_low": 0.45, "tau_delta": 0.3, "min_count": 0.02,
      "centring": "labeled_mean"}


def diag(loop, acc, train_pairs, steps=10, label=None, stop=None, gaps=True):
    """One loop's diagnostics; ``label`` = (status, kept) when the pool was self-labeled after it."""
    d = {"loop": loop, "train_pairs": train_pairs, "steps": steps, "global_step": steps * (loop + 1),
         "train_s": 1.0, "val_acc": acc, "test_acc": acc, "eval_s": 0.5}
    if label:
        status, kept = label
        d.update({"pool": 1000, "status": status, "n_easy": kept, "n_hard": 0, "min_count": 20, "kept": kept,
                  "pseudo_label_precision": 0.9, "score_mean": 0.1, "score_std": 1.0, "centre": 0.1, "label_s": 0.2})
        if gaps:
            hist = [0] * 20
            hist[loop] += 600
            hist[19 - loop] += 400
            d.update({"gap_hist": hist, "gap_edges": EDGES})
    d["stop"] = stop
    return d


def phase(name, frac, loops):
    return {"phase": name, "labeled_fraction": frac, "counts": {"labeled": loops[0]["train_pairs"], "pool": 1000,
            "val": 50, "test": 100}, "dropped": {}, "formatting": {}, "test_acc": loops[-1]["test_acc"],
            "timings": {}, "export": None, "loops": loops}


def ser_loops(accs, statuses, gaps=True, stop="max_loops"):
    """accs[k] = test accuracy after loop k; statuses[k] = status decided after loop k (kept 100*(k+1))."""
    loops, pairs = [], 150
    for k, acc in enumerate(accs):
        last = k == len(accs) - 1
        label = (statuses[k], 100 * (k + 1)) if k < len(statuses) else None
        loops.append(diag(k, acc, pairs, label=label, gaps=gaps, stop=stop if last else None))
        if label:
            pairs += label[1]
    return loops


def write_run(d: Path, overrides, seed, accs, statuses, full=None, rule="paper", gaps=True, stop="max_loops",
              main="ser"):
    d.mkdir(parents=True)
    phases = {main: phase(main, 0.15, ser_loops(accs, statuses, gaps, stop))}
    if full is not None:
        phases["full"] = phase("full", 1.0, [diag(0, full, 1150, stop="max_loops")])
    results = {"name": d.name, "model": "minilm", "data": "hh_rlhf", "seed": seed, "labeled_fraction": 0.15,
               "thresholds": dict(TH, rule=rule), "loop": {"max_loops": 2}, "wall_s": 42.0, "phases": phases}
    (d / "results.json").write_text(json.dumps(results))
    (d / ".hydra").mkdir()
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    for ph in phases:
        (d / ph).mkdir()
    return d


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A Hydra multirun folder: two seeds of one config, one other config, one unfinished run nested deeper."""
    s = tmp_path / "multirun" / "2024-01-01_00-00-00"
    s.mkdir(parents=True)
    (s / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    # the stop at the end of the last loop is max_loops: its status was not decided
    write_run(s / "0", ["loop.max_loops=2", "seed=0"], 0, [0.60, 0.65, 0.70], ["EASY", "HARD"], full=0.80)
    write_run(s / "1", ["loop.max_loops=2", "seed=1"], 1, [0.62, 0.66, 0.69], ["EASY", "HARD"], full=0.82)
    write_run(s / "2", ["loop.max_loops=2", "thresholds=authors", "seed=0"], 0, [0.61, 0.63], ["COMBINED", "STOP"],
              rule="authors", stop="stop_status")
    u = s / "late" / "3"  # nested one level deeper
    (u / ".hydra").mkdir(parents=True)
    (u / ".hydra" / "overrides.yaml").write_text("- loop.max_loops=5\n- seed=3\n")
    (u / "ser" / "checkpoints").mkdir(parents=True)
    (u / "ser" / "checkpoints" / "last.ckpt").write_bytes(b"fake")
    (u / "ser" / "loops.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in ser_loops([0.58, 0.61], ["EASY", "HARD"], stop=None)))
    return s


def test_find_runs_single_and_sweep(sweep):
    assert find_runs(sweep / "0") == [sweep / "0"]
    assert find_runs(sweep / "0" / "results.json") == [sweep / "0"]
    assert find_runs(sweep) == [sweep / "0", sweep / "1", sweep / "2", sweep / "late" / "3"]
    assert find_runs(sweep.parent.parent) == find_runs(sweep)  # the whole multirun/ folder
    assert find_runs(sweep / "late") == [sweep / "late" / "3"]


def test_find_runs_sorts_numbers_naturally(tmp_path):
    for i in (10, 2, 1):
        (tmp_path / str(i) / ".hydra").mkdir(parents=True)
    assert [p.name for p in find_runs(tmp_path)] == ["1", "2", "10"]


def test_a_sweep_folder_named_like_a_phase_is_not_a_run(tmp_path):
    """A recipe's sweep folder called ser/ (a Hydra multirun: multirun.yaml) beside others is searched,
    not taken for the phase folder of a run at the top."""
    for sub in ("ser", "other"):
        (tmp_path / sub / "a=1,seed=0" / ".hydra").mkdir(parents=True)
        (tmp_path / sub / "multirun.yaml").write_text("{}\n")
    assert find_runs(tmp_path) == [tmp_path / "other" / "a=1,seed=0", tmp_path / "ser" / "a=1,seed=0"]
    (tmp_path / "ser" / "multirun.yaml").unlink()  # then ser/ is a phase folder: tmp_path is a run
    assert tmp_path in find_runs(tmp_path)


def test_load_run_finished_and_unfinished(sweep):
    run = load_run(sweep / "0", root=sweep)
    assert run["status"] == "finished" and run["missing"] is None
    assert run["overrides"] == "loop.max_loops=2,seed=0"
    assert run["results"]["seed"] == 0
    u = load_run(sweep / "late" / "3", root=sweep)
    assert u["status"] == "unfinished" and u["results"] is None
    assert u["name"] == "late/3" and u["overrides"] == "loop.max_loops=5,seed=3"
    assert u["missing"].startswith("no results.json; 2 loops logged")
    assert "resumable from ser/checkpoints/last.ckpt" in u["missing"]


def test_unfinished_without_anything_logged(tmp_path):
    (tmp_path / "r" / ".hydra").mkdir(parents=True)
    u = load_run(tmp_path / "r")
    assert u["status"] == "unfinished" and "no phase started" in u["missing"]


def test_summary_rows_and_gap_closed(sweep):
    rows = summary_rows(load_runs(sweep))
    assert [r["run"] for r in rows] == ["0", "1", "2"]  # the unfinished run has no row
    r0, r1, r2 = rows
    assert r0["seed_acc"] == pytest.approx(0.60) and r0["ser_acc"] == pytest.approx(0.70)
    assert r0["full_acc"] == pytest.approx(0.80)
    assert r0["gap_closed"] == pytest.approx((0.70 - 0.60) / (0.80 - 0.60))  # 0.5
    assert r1["gap_closed"] == pytest.approx((0.69 - 0.62) / (0.82 - 0.62))  # 0.35
    assert r0["gain"] == pytest.approx(0.10)
    assert r0["n_loops"] == 2 and r0["kept"] == 100 + 200 and r0["statuses"] == "EASY>HARD"
    assert r0["group"] == "loop.max_loops=2" == r1["group"]
    assert (r0["rule"], r0["tau_high"], r0["tau_low"], r0["tau_delta"], r0["min_count"]) == ("paper", .55, .45, .3, .02)
    # authors run: no full phase; its STOP labeling kept nothing that was trained on
    assert r2["full_acc"] is None and r2["gap_closed"] is None
    assert r2["statuses"] == "COMBINED>STOP" and r2["kept"] == 100 and r2["stop"] == "stop_status"
    assert r2["group"] == "loop.max_loops=2,thresholds=authors"


def test_aggregate_by_hand(sweep):
    groups = aggregate(summary_rows(load_runs(sweep)))
    assert [g["group"] for g in groups] == ["loop.max_loops=2", "loop.max_loops=2,thresholds=authors"]
    g = groups[0]
    assert g["n"] == 2 and g["seeds"] == [0, 1]
    assert g["seed_acc"]["mean"] == pytest.approx(0.61)
    assert g["seed_acc"]["std"] == pytest.approx(math.sqrt((0.01 ** 2 + 0.01 ** 2) / 1))  # sample std, n-1
    assert g["ser_acc"]["mean"] == pytest.approx(0.695) and g["ser_acc"]["std"] == pytest.approx(0.005 * math.sqrt(2))
    assert g["full_acc"]["mean"] == pytest.approx(0.81) and g["full_acc"]["n"] == 2
    assert g["gain"]["mean"] == pytest.approx((0.10 + 0.07) / 2)
    assert g["gap_closed"]["mean"] == pytest.approx(0.425)
    assert g["gap_closed"]["std"] == pytest.approx(0.15 / math.sqrt(2))
    assert g["gap_closed_of_means"] == pytest.approx(0.085 / 0.20)  # mean gain / mean full-data gain
    assert [s["mean"] for s in g["loop_acc"]] == pytest.approx([0.61, 0.655, 0.695])
    assert g["loop_acc"][1]["std"] == pytest.approx(0.01 / math.sqrt(2))
    other = groups[1]
    assert other["n"] == 1 and other["seed_acc"]["std"] is None and other["full_acc"]["n"] == 0
    by_rule = aggregate(summary_rows(load_runs(sweep)), by="rule")
    assert {g["group"]: g["n"] for g in by_rule} == {"paper": 2, "authors": 1}


def test_markdown_table1_and_unfinished(sweep):
    md = format_markdown(load_runs(sweep), source=sweep)
    for row in ("| 15% seed |", "| loop 1 |", "| loop 2 |", "| SER final |", "| full 100% |"):
        assert row in md
    assert "| 15% seed | - | - | 61.00 ± 1.41 (2) |" in md
    assert "| loop 2 | HARD | 90.00 ± 0.00 (2) |" in md  # trained on the pairs the HARD status labeled
    assert "| SER final | - | - | 69.50 ± 0.71 (2) | +8.50 ± 2.12 (2) |" in md
    assert "| full 100% | - | - | 81.00 ± 1.41 (2) |" in md
    assert "gap closed: 42.5% of the mean gap (per run: 50%, 35%)" in md  # 0.085 / 0.20
    assert "## Unfinished runs" in md
    assert "late/3 (loop.max_loops=5,seed=3): no results.json; 2 loops logged" in md
    assert "EASY>HARD" in md and "COMBINED>STOP" in md


def test_write_report(sweep, tmp_path, capsys):
    out = write_report(sweep, tmp_path / "out")
    assert out == tmp_path / "out"
    printed = capsys.readouterr().out
    assert "| SER final |" in printed and (out / "report.md").read_text() in printed
    with open(out / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == ["0", "1", "2"]
    assert float(rows[0]["gap_closed"]) == pytest.approx(0.5) and rows[2]["full_acc"] == ""
    for name in ("accuracy_per_loop.png", "pairs_per_loop.png", "score_gaps.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, name


def test_default_out_dir_and_rerun(sweep, capsys):
    out = write_report(sweep)
    assert out == sweep / "report" and (out / "report.md").is_file()
    assert write_report(sweep) == out  # the report folder is not mistaken for a run
    assert len(find_runs(sweep)) == 4


def test_run_without_gap_data_skips_score_gaps(tmp_path, capsys):
    run = write_run(tmp_path / "seed_only", ["loop.max_loops=0"], 0, [0.6], [], main="seed", gaps=False)
    out = write_report(run)
    printed = capsys.readouterr().out
    assert "score_gaps.png skipped:" in printed
    assert not (out / "score_gaps.png").exists()
    assert (out / "accuracy_per_loop.png").read_bytes()[:8] == PNG_MAGIC
    assert "| 15% seed | - | - | 60.00 (1) |" in printed and "SER final" not in printed


def test_format_run_table_still_works(sweep):
    text = format_run_table(json.loads((sweep / "0" / "results.json").read_text()))
    assert "SER final" in text and "full (100% labeled)" in text


def test_missing_or_empty_path(tmp_path):
    with pytest.raises(ReportError, match="nowhere"):
        write_report(tmp_path / "nowhere")
    with pytest.raises(ReportError, match="nowhere"):
        find_runs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no runs found"):
        write_report(tmp_path / "empty")


def test_cli_report_subprocess(sweep, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "ser.cli", "report", str(sweep), "--out", str(tmp_path / "o")],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "| SER final | - | - | 69.50 ± 0.71 (2) |" in ok.stdout
    assert (tmp_path / "o" / "runs.csv").is_file()
    bad = subprocess.run([sys.executable, "-m", "ser.cli", "report", str(tmp_path / "missing")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "missing" in bad.stderr


def test_cli_train_execs_ser_train(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execv", lambda exe, args: calls.append((exe, args)))
    assert cli.main(["train", "seed=1", "--cfg", "job"]) == 0
    assert calls == [(sys.executable, [sys.executable, "-m", "ser.train", "seed=1", "--cfg", "job"])]
    assert {"report", "train"} <= set(cli.COMMANDS)


def _save_outcomes(d: Path, phase: str, loop: int, right: int, n: int = 100, extra: int | None = None,
                   keys: int | None = 0, discordant: int | None = None):
    """Per-pair scores where the first ``right`` of ``n`` test pairs are ranked right; on the 50
    pairs of set ``other``, the first ``extra`` at loop 0 and the last ``extra`` after it.

    ``keys``: pair keys ``keys + position`` are saved (as the loop does: ``{set}_key``, the same
    pairs in every run with the same ``keys``); None saves none (runs from before keys).
    ``discordant``: instead, the pairs right are ``discordant`` .. ``right`` - 1 at loop 0 and
    0 .. ``right`` - 1 after (SER alone right on ``discordant`` pairs)."""
    import numpy as np

    pos = np.arange(n)
    ok = pos < right if discordant is None or loop > 0 or phase != "ser" else (pos >= discordant) & (pos < right)
    chosen = np.where(ok, 1.0, -1.0).astype(np.float32)
    arrays = {"test_chosen": chosen, "test_rejected": np.zeros(n, np.float32),
              "val_chosen": np.ones(10, np.float32), "val_rejected": np.zeros(10, np.float32)}
    if extra is not None:
        order = np.arange(50) if loop == 0 else np.arange(50)[::-1]
        arrays.update({"other_chosen": np.where(order < extra, 1.0, -1.0), "other_rejected": np.zeros(50)})
    if keys is not None:
        arrays.update({f"{s}_key": (np.arange(len(arrays[f"{s}_chosen"])) + keys).astype(np.uint64)
                       for s in ("test", "val", "other") if f"{s}_chosen" in arrays})
    np.savez(d / phase / f"eval_scores_loop{loop}.npz", **arrays)


def test_paired_statistics_in_rows_groups_and_markdown(tmp_path):
    """Two seeds, each: seed RM right on pairs 0-49, SER (loop 2) on 0-59, full on 0-69 (nested), so
    SER - seed = +10 points with 10 discordant pairs all SER's: McNemar p = 2 / 2^10; gap closed 50%."""
    s = tmp_path / "sweep"
    for seed in (0, 1):
        d = write_run(s / str(seed), ["loop.max_loops=2", f"seed={seed}"], seed, [0.50, 0.55, 0.60], ["EASY", "HARD"],
                      full=0.70)
        for loop, right in ((0, 50), (1, 55), (2, 60)):
            _save_outcomes(d, "ser", loop, right, extra=25 + loop)
        _save_outcomes(d, "full", 0, 70, extra=30)
    rows = summary_rows(load_runs(s))
    r = rows[0]
    assert r["gain"] == pytest.approx(0.10) and r["gain_p"] == pytest.approx(2 / 2 ** 10)
    assert r["gain_low"] > 0 and r["gain_high"] < 0.2 and r["full_gain_low"] > 0.1
    assert r["best_val_loop"] == 2 and r["ser_best_val_acc"] == pytest.approx(0.60)  # fake val acc = test acc
    g = aggregate(rows)[0]
    test = g["paired"]["test"]
    assert test["runs"] == 2 and test["ser"]["gain"]["estimate"] == pytest.approx(0.10)
    assert test["ser"]["gap_closed"]["estimate"] == pytest.approx(0.5)
    assert test["ser"]["verdict"].startswith("SER final beats the seed RM at 95%: +10.0")
    assert g["paired"]["other"]["ser"]["gain"]["estimate"] == pytest.approx(0.04)  # 27 vs 25 of 50 right
    assert "does not beat" in g["paired"]["other"]["ser"]["verdict"]
    md = format_markdown(load_runs(s))
    assert "Paired over seeds and test pairs" in md and "gap closed 50%" in md
    assert "| SER final | - | - | 60.00 ± 0.00 (2) | +10.00 ± 0.00 (2) | +10.00 [" in md
    assert "| loop 1 | EASY | 90.00 ± 0.00 (2) | 55.00 ± 0.00 (2) |" in md
    assert "**other**: SER final does not beat the seed RM" in md


def test_run_table_prints_paired_statistics(tmp_path):
    from ser.report.paired import run_outcomes, run_statistics

    d = write_run(tmp_path / "run", ["seed=0"], 0, [0.50, 0.55, 0.60], ["EASY", "HARD"], full=0.70)
    for loop, right in ((0, 50), (1, 55), (2, 60)):
        _save_outcomes(d, "ser", loop, right)
    _save_outcomes(d, "full", 0, 70)
    results = json.loads((d / "results.json").read_text())
    results["statistics"] = run_statistics(run_outcomes(d, results))
    table = format_run_table(results)
    assert "SER final - seed on test (100 pairs): +10.0 [" in table
    assert "McNemar exact p = 0.00195 (10 pairs right only with SER final, 0 only with the seed RM)" in table
    assert "full data - seed on test (100 pairs): +20.0 [" in table
    assert "verdict (test, this run): SER final beats the seed RM at 95%" in table


def test_sweep_figure_against_each_swept_value(sweep, tmp_path):
    from ser.report import aggregate
    from ser.report.plots import plot_sweep, swept_values

    groups = aggregate(summary_rows(load_runs(sweep)))
    # the two configurations differ by thresholds=authors (set in one, absent in the other)
    assert swept_values(groups) == {"thresholds": [None, "authors"]}
    assert groups[0]["kept_precision"]["mean"] == pytest.approx(0.9)  # every labeled loop had precision 0.9
    assert plot_sweep([], groups, tmp_path / "sweep.png") is None
    assert (tmp_path / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    assert plot_sweep([], groups[:1], tmp_path / "one.png") == "not a sweep (one configuration)"


def test_reliability_diagram_from_logged_bins(tmp_path):
    from ser.report import aggregate
    from ser.report.plots import _pooled_bins, plot_reliability

    assert _pooled_bins([[{"low": 0.5, "confidence": 0.52, "accuracy": 1.0, "n": 1}],
                         [{"low": 0.5, "confidence": 0.56, "accuracy": 0.0, "n": 3}]]) == ([0.55], [0.25], [4])
    d = write_run(tmp_path / "run", ["seed=0"], 0, [0.5, 0.6], ["EASY"])
    results = json.loads((d / "results.json").read_text())
    for h in results["phases"]["ser"]["loops"]:
        h["reliability"] = [{"low": 0.5, "high": 0.55, "n": 10, "confidence": 0.52, "accuracy": 0.5},
                            {"low": 0.9, "high": 0.95, "n": 5, "confidence": 0.92, "accuracy": 0.8}]
        h["val_ece"] = 0.05
    (d / "results.json").write_text(json.dumps(results))
    rows = summary_rows(load_runs(d))
    assert plot_reliability(rows, aggregate(rows), tmp_path / "rel.png") is None
    assert (tmp_path / "rel.png").read_bytes()[:8] == PNG_MAGIC
    plain = summary_rows(load_runs(write_run(tmp_path / "old", ["seed=1"], 1, [0.5, 0.6], ["EASY"])))
    assert "no run logged reliability bins" in plot_reliability(plain, aggregate(plain), tmp_path / "x.png")


def test_a_ser_run_stopped_at_loop0_counts_as_no_gain(tmp_path):
    from ser.report.paired import group_statistics, run_outcomes

    s = tmp_path / "sweep"
    d0 = write_run(s / "0", ["seed=0"], 0, [0.50, 0.60], ["EASY"], full=0.70)
    for loop, right in ((0, 50), (1, 60)):
        _save_outcomes(d0, "ser", loop, right)
    d1 = write_run(s / "1", ["seed=1"], 1, [0.50], [], full=0.70, stop="stop_status")  # stopped at loop 0
    _save_outcomes(d1, "ser", 0, 50)
    outs = [run_outcomes(d, json.loads((d / "results.json").read_text())) for d in (d0, d1)]
    assert "ser" in outs[1]["test"] and np.array_equal(outs[1]["test"]["ser"], outs[1]["test"]["seed"])
    g = group_statistics(outs, n_boot=500)["test"]
    assert g["runs"] == 2 and g["ser"]["gain"]["estimate"] == pytest.approx(0.05)  # (+10 + 0) / 2


def test_run_table_verdict_agrees_with_mcnemar(tmp_path):
    """400 pairs, SER alone right on 4: the bootstrap CI excludes 0 but McNemar's exact p = 0.125,
    so the run's verdict must not say "beats"."""
    from ser.report.paired import run_outcomes, run_statistics

    d = write_run(tmp_path / "run", ["seed=0"], 0, [0.50, 0.51], ["EASY"])
    _save_outcomes(d, "ser", 0, 204, n=400, discordant=4)
    _save_outcomes(d, "ser", 1, 204, n=400)
    results = json.loads((d / "results.json").read_text())
    results["statistics"] = run_statistics(run_outcomes(d, results))
    table = format_run_table(results)
    assert "SER final - seed on test (400 pairs): +1.0 [+0.2" in table  # the percentile CI excludes 0
    assert "McNemar exact p = 0.125 (4 pairs right only with SER final, 0 only with the seed RM)" in table
    assert "verdict (test, this run): SER final does not beat the seed RM at 95%" in table


def _three_seeds(root: Path, keys):
    """Three seeds scoring the same 200 test pairs with the same outcomes (seed RM right on 10-119,
    SER on 0-119: +5.0 points), saved with pair keys (``keys`` = 0) or without (None)."""
    for seed in (0, 1, 2):
        d = write_run(root / str(seed), [f"seed={seed}"], seed, [0.55, 0.60], ["EASY"])
        _save_outcomes(d, "ser", 0, 120, n=200, discordant=10, keys=keys)
        _save_outcomes(d, "ser", 1, 120, n=200, keys=keys)
    return aggregate(summary_rows(load_runs(root)))[0]


def test_seeds_that_share_test_pairs_get_one_runs_ci(tmp_path):
    shared = _three_seeds(tmp_path / "keys", 0)
    single = summary_rows(load_runs(tmp_path / "keys" / "0"))[0]
    ci = shared["paired"]["test"]["ser"]["gain"]
    assert ci["estimate"] == pytest.approx(0.05) and shared["paired"]["test"]["shared"] == 200
    # the noise of the 200 shared pairs does not average out over the three copies
    assert ci["high"] - ci["low"] == pytest.approx(single["gain_high"] - single["gain_low"], rel=0.1)
    md = format_markdown(load_runs(tmp_path / "keys"))
    assert "200 test pairs are scored by more than one seed: their noise is counted once" in md
    keyless = _three_seeds(tmp_path / "nokeys", None)
    narrow = keyless["paired"]["test"]["ser"]["gain"]
    assert narrow["high"] - narrow["low"] < (ci["high"] - ci["low"]) / 2  # taken as independent: too narrow
    md = format_markdown(load_runs(tmp_path / "nokeys"))
    assert "3 of 3 runs saved no pair keys: their test pairs are taken to be their own" in md


@pytest.fixture
def strategy_sweep(tmp_path) -> Path:
    """Three selection strategies x three seeds on the same 200 test pairs (keys saved). Seed RM right
    on pairs d..119, SER final on 0..119+e (gain d + e pairs); full right on 0..149 (status,
    pairwise), or on the seed's pairs plus pair 120 (consistent: full - seed is 1 pair more than SER)."""
    s = tmp_path / "sweep"
    s.mkdir()
    (s / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - selection=status,pairwise,consistent\n")
    plan = {"status": ((8, 10, 12), (0, 0, 0)), "pairwise": ((6, 9, 12), (1, 0, 2)),
            "consistent": ((1, 2, 0), (-8, -9, -10))}
    for sel, (ds, es) in plan.items():
        for seed, (dd, e) in enumerate(zip(ds, es)):
            d = write_run(s / f"{sel}_{seed}", [f"selection={sel}", f"seed={seed}"], seed,
                          [(120 - dd) / 200, (120 + e) / 200], ["EASY"], full=0.75)
            _save_outcomes(d, "ser", 0, 120, n=200, discordant=dd)
            _save_outcomes(d, "ser", 1, 120 + e, n=200)
            if sel == "consistent":
                _save_outcomes(d, "full", 0, 121, n=200, discordant=dd)  # hypothetical: reuse the seed's pairs
                z = dict(np.load(d / "full" / "eval_scores_loop0.npz"))
                z["test_chosen"][:dd] = -1.0  # full right on dd..120: the seed's pairs and pair 120
                np.savez(d / "full" / "eval_scores_loop0.npz", **z)
            else:
                _save_outcomes(d, "full", 0, 150, n=200)
    return s


def test_holm_families_and_gap_closed_in_a_sweep(strategy_sweep, tmp_path):
    md = format_markdown(load_runs(strategy_sweep), source=strategy_sweep, n_boot=500)
    assert md.startswith("# SER report: sweep\n") and str(tmp_path) not in md
    assert "verdicts Holm-adjusted over the 3 configurations of this report" in md
    assert "(Holm-adjusted over 3 configurations: " in md
    # status: +5.0 points on 3 seeds sharing 200 pairs; full - seed +20: gap closed by Fieller
    groups = {g["group"]: g for g in aggregate(summary_rows(load_runs(strategy_sweep)))}
    status = groups["selection=status"]["paired"]["test"]["ser"]
    assert status["gain"]["estimate"] == pytest.approx(0.05) and status["family"] == 3
    assert status["p_holm"] >= status["gain"]["p"]
    assert status["gap_closed"]["low"] < status["gap_closed"]["estimate"] < status["gap_closed"]["high"]
    consistent = groups["selection=consistent"]["paired"]["test"]["ser"]
    assert consistent["gap_closed"] is None and consistent["gap_note"].startswith("undefined: full - seed is not above 0")
    assert "gap closed undefined: full - seed is not above 0 at 95%" in md
    # the strategies against the reference (the first in multirun.yaml): one Holm family of 2
    assert "| selection | runs | val acc % (SER final) | test acc % (SER final) | SER - seed (pts) | " \
           "vs selection=status (pts, 95% CI) | p (Holm, 2 tests) |" in md
    assert "Holm family: the 2 configurations compared with selection=status; different from it at 95% after the " \
           "adjustment: selection=consistent (-4.50 pts)" in md


def test_report_paths_power_and_n_boot_from_the_cli(strategy_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["report", str(strategy_sweep), "--out", str(out), "--n-boot", "500", "--power"]) == 0
    md = (out / "report.md").read_text()
    assert str(tmp_path) not in md and md.startswith("# SER report: sweep")
    with open(out / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows][:2] == ["consistent_0", "consistent_1"]
    assert str(tmp_path) not in (out / "runs.csv").read_text()
    assert "## Power: test pairs x seeds" in md and "the seeds score the same test pairs" in md
    assert "| seeds | +2 pts | +4 pts |" in md and "| 10 |" in md
    from ser.report.power import measure, power_table

    m = measure(summary_rows(load_runs(strategy_sweep)))
    assert m["runs"] == 9 and m["groups"] == 3 and m["shared"] and m["seed_var"] is not None
    assert "| 3 |" in power_table(strategy_sweep)


def test_compare_matches_pairs_by_key(tmp_path):
    """Two configurations whose runs saved the same test pairs in a different order: compared pair by pair."""
    from ser.report.compare import compare_groups

    s = tmp_path / "sweep"
    for sel, right in (("a", 60), ("b", 70)):
        d = write_run(s / sel, [f"selection={sel}", "seed=0"], 0, [0.5, right / 100], ["EASY"])
        _save_outcomes(d, "ser", 0, 50)
        _save_outcomes(d, "ser", 1, right)
        if sel == "b":  # pairs saved in reverse order
            for loop in (0, 1):
                f = d / "ser" / f"eval_scores_loop{loop}.npz"
                z = {k: v[::-1].copy() for k, v in np.load(f).items()}
                np.savez(f, **z)
    rows = summary_rows(load_runs(s))
    comp = compare_groups(rows, aggregate(rows))[0]
    vs = comp["entries"][1]["vs_reference"]
    assert vs["estimate"] == pytest.approx(0.10) and vs["p"] == pytest.approx(2 / 2 ** 10)  # one seed: McNemar
    assert comp["family"] == 1
