"""Length control in ``ser report`` (ser.report.length) on run folders written by hand; the numbers by hand.

The test set is one block of 8 pairs repeated 25 times (200 pairs, keys 0..199, the same in every run).
Answer lengths in tokens, chosen vs rejected: pairs 0-4 10 vs 5 (chosen longer), 5-6 5 vs 10
(chosen shorter), 7 7 vs 7 (equal). In characters 5x the tokens, but pair 7 is 36 vs 35 (chosen
longer). Per block, right on:

- seed RM: 0-3, 5, 7: accuracy 6/8 = 75%; length-balanced (4/5 + 1/2) / 2 = 65%; wrong-way 1/2;
  prefers the longer answer in 5 of the 7 pairs of unequal length (0-3 and 6);
- SER final: 0-5, 7: 87.5%; balanced (1 + 1/2) / 2 = 75%; gain +12.5, balanced gain +10.0 (80%);
- full data: 0-6: 87.5%; balanced (1 + 1) / 2 = 100%.

The length-only rule "prefer the longer" scores (5 + 0.5) / 8 = 68.75% (pair 7 half right);
"prefer the shorter" (2 + 0.5) / 8 = 31.25%.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ser import length_control as lc
from ser.report import aggregate, format_markdown, load_runs, summary_rows, write_report
from ser.report.length import FALLBACK, TRAINING, balanced_difference, run_direction
from ser.significance import seed_moments
from tests.test_report import PNG_MAGIC, write_run

REPS = 25
TOKENS = (np.array([10, 10, 10, 10, 10, 5, 5, 7]), np.array([5, 5, 5, 5, 5, 10, 10, 7]))
CHARS = (np.array([50, 50, 50, 50, 50, 25, 25, 36]), np.array([25, 25, 25, 25, 25, 50, 50, 35]))
RIGHT = {"seed": [0, 1, 2, 3, 5, 7], "ser": [0, 1, 2, 3, 4, 5, 7], "full": [0, 1, 2, 3, 4, 5, 6]}
#: training labels' direction as results.json records it (share of chosen-longer labelled pairs)
DIRECTION = {u: {"longer": 60, "shorter": 40, "equal": 0, "share_longer": 0.6, "direction": "longer"}
             for u in ("tokens", "chars")}


def block(right) -> np.ndarray:
    return np.tile(np.isin(np.arange(8), right), REPS)


def save_eval(d: Path, phase: str, loop: int, right) -> None:
    """A loop's eval_scores npz: chosen scored 1 (right) or -1 (wrong) against 0, keys and lengths."""
    ok = block(right)
    z = {"test_chosen": np.where(ok, 1.0, -1.0).astype(np.float32), "test_rejected": np.zeros(len(ok), np.float32),
         "test_key": np.arange(len(ok), dtype=np.uint64)}
    for unit, (c, r) in (("tokens", TOKENS), ("chars", CHARS)):
        z[f"test_chosen_{unit}"], z[f"test_rejected_{unit}"] = np.tile(c, REPS), np.tile(r, REPS)
    np.savez(d / phase / f"eval_scores_loop{loop}.npz", **z)


# a pool of 10 pairs: a1 vs a2 in tokens; the hidden label's better answer is the longer in 6 of the
# 9 pairs of unequal length (0-4, 8); the RM scores the longer higher in 8 of 9 (not pair 2); it keeps
# 0, 2, 7, 9 (oriented as it scored them: longer, shorter, longer, equal): 2 of 3 chosen longer
POOL_A1 = np.array([9, 9, 9, 9, 9, 9, 9, 3, 3, 5])
POOL_A2 = np.array([3, 3, 3, 3, 3, 3, 3, 9, 9, 5])
HIDDEN = np.array([1, 1, 1, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
RM_A1 = np.array([1, 1, 0, 1, 1, 1, 1, 0, 0, 1], dtype=bool)


def save_pool(d: Path, loop: int, hidden=HIDDEN) -> None:
    s1, s2 = np.where(RM_A1, 1.0, -1.0), np.where(RM_A1, -1.0, 1.0)
    p = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.savez(d / "ser" / f"pool_scores_loop{loop}.npz", pool_index=np.arange(10), scores_a1=s1, scores_a2=s2,
             p1=p(s1), p2=p(s2), hidden_a1_better=hidden, kept=np.array([0, 2, 7, 9]), a1_tokens=POOL_A1,
             a2_tokens=POOL_A2, a1_chars=5 * POOL_A1, a2_chars=5 * POOL_A2)


def make_run(root: Path, seed: int, overrides=(), recorded: bool = True, full: bool = True,
             ser_right=RIGHT["ser"], hidden=HIDDEN) -> Path:
    """A SER run (seed RM at loop 0, SER final at loop 1) with a full-data phase. ``recorded``: the
    run recorded the training labels' direction and the loops' length fields (else: an older run)."""
    d = write_run(root / f"{'_'.join(overrides) or 'run'}_{seed}", [*overrides, f"seed={seed}"], seed,
                  [0.75, 0.875], ["EASY"], full=0.875 if full else None)
    save_eval(d, "ser", 0, RIGHT["seed"])
    save_eval(d, "ser", 1, ser_right)
    save_pool(d, 0, hidden)
    if full:
        save_eval(d, "full", 0, RIGHT["full"])
    if recorded:
        results = json.loads((d / "results.json").read_text())
        results["phases"]["ser"]["length_direction"] = DIRECTION
        results["phases"]["ser"]["loops"][1]["test_prefers_longer"] = 0.123  # logged: used as it is
        (d / "results.json").write_text(json.dumps(results))
    return d


def test_one_run_by_hand(tmp_path):
    d = make_run(tmp_path, 0)
    row = summary_rows(load_runs(d))[0]
    assert row["length_baseline"] == pytest.approx(5.5 / 8)
    assert (row["seed_balanced"], row["ser_balanced"], row["full_balanced"]) == pytest.approx((0.65, 0.75, 1.0))
    assert (row["seed_wrong_way"], row["ser_wrong_way"]) == pytest.approx((0.5, 0.5))
    assert row["length_direction"] == "longer" and row["length_direction_source"] == TRAINING
    # characters: pair 7 is chosen-longer (6 vs 2 pairs): seed (5/6 + 1/2) / 2
    assert row["seed_balanced_chars"] == pytest.approx((5 / 6 + 0.5) / 2)
    assert row["length_baseline_chars"] == pytest.approx(6 / 8)
    t = row["length"]["test"]["tokens"]["models"]
    assert t["seed"]["prefers_longer"] == pytest.approx(5 / 7) and t["ser_best_val"]["accuracy"] == pytest.approx(0.875)
    g = aggregate([row])[0]["length"]
    ser = g["units"]["tokens"]["paired"]["ser"]
    assert ser["plain"] == pytest.approx(0.125) and ser["balanced"]["estimate"] == pytest.approx(0.10)
    assert g["units"]["tokens"]["paired"]["full"]["balanced"]["estimate"] == pytest.approx(0.35)
    assert g["family"] == 2 and ser["family"] == 2 and ser["p_holm"] >= ser["balanced"]["p"]
    # per loop: the logged field is used as it is, the others come from the saved scores
    loops = g["loops"]
    assert loops[1]["test_prefers_longer"]["mean"] == pytest.approx(0.123)
    assert loops[0]["test_prefers_longer"]["mean"] == pytest.approx(5 / 7)
    assert loops[0]["test_length_balanced"]["mean"] == pytest.approx(0.65)
    assert loops[1]["test_wrong_way"]["mean"] == pytest.approx(0.5)
    assert loops[0]["pool_prefers_longer"]["mean"] == pytest.approx(8 / 9)
    assert loops[0]["kept_prefers_longer"]["mean"] == pytest.approx(2 / 3)
    assert loops[0]["pool_labels_longer"]["mean"] == pytest.approx(6 / 9)
    assert loops[1]["pool_prefers_longer"]["n"] == 0  # loop 1 labelled nothing


def test_balanced_pair_values_give_the_stratified_estimate_and_about_its_ci():
    """One run: the mean of the stratum-weighted per-pair differences is the difference of the
    balanced accuracies (the stratified estimate); its normal CI is close to the stratified
    bootstrap's and not narrower than it by more than resampling noise (the strata sizes are fixed
    there, free here: a little wider when the strata differ in their gains)."""
    rng = np.random.default_rng(0)
    n = 2000
    chosen, rejected = rng.integers(1, 50, n), rng.integers(1, 50, n)
    longer = chosen > rejected
    a = rng.random(n) < np.where(longer, 0.8, 0.4)
    b = rng.random(n) < np.where(longer, 0.9, 0.35)
    boot = lc.paired_length_cis(a, b, chosen, rejected, "longer", n_boot=4000)["balanced"]
    diff = balanced_difference([a], [b], [chosen], [rejected], [None])
    iv = diff["balanced"]
    assert iv["estimate"] == pytest.approx(boot.estimate)
    assert iv["estimate"] == pytest.approx(lc.balanced_accuracy(b, chosen, rejected) - lc.balanced_accuracy(a, chosen, rejected))
    assert diff["plain"] == pytest.approx(b.mean() - a.mean())
    width, boot_width = iv["high"] - iv["low"], boot.high - boot.low
    assert 0.95 * boot_width < width < 1.15 * boot_width
    # several runs on the same pairs: the seeds' per-pair values go to seed_moments as they are
    vals = [np.column_stack([b - a.astype(float), lc.balanced_pair_values(b.astype(float) - a, chosen, rejected)])] * 3
    three = balanced_difference([a] * 3, [b] * 3, [chosen] * 3, [rejected] * 3, [np.arange(n, dtype=np.uint64)] * 3)
    assert three["balanced"]["estimate"] == pytest.approx(seed_moments(vals, [np.arange(n)] * 3).estimate[1])
    assert three["balanced"]["high"] - three["balanced"]["low"] == pytest.approx(width, rel=0.2)  # shared: one run's CI


def test_older_runs_take_the_direction_from_the_pools_hidden_labels(tmp_path):
    d = make_run(tmp_path, 0, recorded=False)
    results = json.loads((d / "results.json").read_text())
    direction, source = run_direction(d, results)
    assert source == FALLBACK and direction["tokens"]["direction"] == "longer"
    assert direction["tokens"]["share_longer"] == pytest.approx(6 / 9) and direction["tokens"]["equal"] == 1
    row = summary_rows(load_runs(d))[0]
    assert row["length_direction_source"] == FALLBACK and row["length_baseline"] == pytest.approx(5.5 / 8)
    md = format_markdown(load_runs(d))
    assert 'length-only baseline "prefer the longer", direction from the pool hidden labels (fallback) (1 run)' in md
    # the pool's hidden labels favour the shorter answer: the rule and its strata flip
    flipped = make_run(tmp_path / "short", 0, recorded=False, hidden=~HIDDEN)
    row = summary_rows(load_runs(flipped))[0]
    assert row["length_direction"] == "shorter" and row["length_baseline"] == pytest.approx(2.5 / 8)
    assert row["seed_wrong_way"] == pytest.approx(4 / 5)  # wrong way now: the chosen-longer pairs
    assert row["seed_balanced"] == pytest.approx(0.65)  # the balanced accuracy has no direction
    # nothing to take it from (no training direction, no pool scores): no baseline, no wrong-way
    bare = make_run(tmp_path / "bare", 0, recorded=False)
    (bare / "ser" / "pool_scores_loop0.npz").unlink()
    row = summary_rows(load_runs(bare))[0]
    assert row["length_direction"] is None and row["length_baseline"] is None and row["seed_wrong_way"] is None
    assert row["seed_balanced"] == pytest.approx(0.65)


def test_report_sections_csv_and_figure(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path / "runs", seed, recorded=seed == 0)
    out = write_report(tmp_path / "runs", tmp_path / "out", n_boot=200)
    md = (out / "report.md").read_text()
    assert "**Length control on test** (tokens; length-only baseline \"prefer the longer\", direction from the " \
           "training labels (1 run), pool hidden labels (fallback) (1 run); 2 runs, mean ± std):" in md
    assert "| length-only baseline | 68.75 ± 0.00 (2) | 50 (chance) | 0 | - |" in md
    assert "| 15% seed | 75.00 ± 0.00 (2) | 65.00 ± 0.00 (2) | 50.00 ± 0.00 (2) | 71.43 ± 0.00 (2) |" in md
    assert "| SER final | 87.50 ± 0.00 (2) | 75.00 ± 0.00 (2) | 50.00 ± 0.00 (2) |" in md
    assert "| full 100% | 87.50 ± 0.00 (2) | 100.00 ± 0.00 (2) | 100.00 ± 0.00 (2) |" in md
    assert "- SER final beats the seed RM on length-balanced accuracy at 95%: +10.0 [" in md
    assert "Plain gain on the same runs and pairs: +12.5 [" in md and "pts; 80% of it survives length control." in md
    assert "- full 100% beats the seed RM on length-balanced accuracy at 95%: +35.0 [" in md
    assert "(Holm-adjusted over 2 tests, family 'length-balanced vs seed': " in md
    assert "Holm family 'length-balanced vs seed': 2 tests" in md
    assert "- in characters: baseline 75.00 ± 0.00 (2)" in md and "length-balanced seed RM / SER final" in md
    assert "**Length preference per loop**" in md and "2 runs had some missing from the loop diagnostics" in md
    assert "| 0 | 88.89 ± 0.00 (2) | 66.67 ± 0.00 (2) | 66.67 ± 0.00 (2) | 71.43 ± 0.00 (2) | 65.00 ± 0.00 (2) |" in md
    with open(out / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["length_direction_source"] for r in rows] == [TRAINING, FALLBACK]
    assert float(rows[0]["length_baseline"]) == pytest.approx(0.6875)
    assert float(rows[1]["ser_balanced"]) == pytest.approx(0.75) and float(rows[1]["full_balanced"]) == 1.0
    assert float(rows[0]["seed_wrong_way"]) == 0.5 and rows[0]["length_direction"] == "longer"
    data = (out / "length_per_loop.png").read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_runs_without_lengths_skip_the_figure(tmp_path, capsys):
    d = write_run(tmp_path / "old", ["seed=0"], 0, [0.5, 0.6], ["EASY"])
    out = write_report(d, tmp_path / "out", n_boot=200)
    assert "length_per_loop.png skipped: no run has length figures per loop" in capsys.readouterr().out
    assert not (out / "length_per_loop.png").exists()
    assert "Length control" not in (out / "report.md").read_text()


def test_a_length_balance_sweep_compares_the_balanced_accuracy(tmp_path):
    """selection.length_balance=false (the reference) vs true, two seeds each on the same pairs: with
    the option SER final is right on 0-3, 5-7 (chosen-shorter pair 6 instead of chosen-longer 4):
    the same plain accuracy (87.5%) but balanced (4/5 + 1) / 2 = 90% against 75%: +15 points."""
    s = tmp_path / "sweep"
    s.mkdir()
    (s / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - selection.length_balance=false,true\n")
    for value, right in (("false", RIGHT["ser"]), ("true", [0, 1, 2, 3, 5, 6, 7])):
        for seed in (0, 1):
            make_run(s, seed, [f"selection.length_balance={value}"], ser_right=right, full=False)
    md = format_markdown(load_runs(s), source=s, n_boot=200)
    assert "| vs selection.length_balance=false (pts, 95% CI) | p (Holm, 1 test) | kept pairs | kept precision % | " \
           "length-balanced % (SER final) | length-balanced vs selection.length_balance=false (pts, 95% CI) | " \
           "p (Holm, 1 test) |" in md
    assert "| false | 2 |" in md and "| 75.00 ± 0.00 (2) | reference | - |" in md
    assert "| true | 2 |" in md and "| +0.00 [" in md and "| 90.00 ± 0.00 (2) | +15.00 [" in md
    assert "Holm family 'length-balanced vs selection.length_balance=false' (tokens; " in md
    assert "after the adjustment: selection.length_balance=true (+15.00 pts)" in md
    # the report's own family: SER final - seed in each of the two configurations (no full phase)
    assert "Holm family 'length-balanced vs seed': 2 tests" in md
