"""How good are the pseudo-labels the filter would keep, under each score normalisation?

Reads the pool scores a finished (or running) SER run saved at each loop
(`<run>/ser/pool_scores_loop<N>.npz`) and, for p = sigmoid(normalised score) with
normalisation none / pool_mean / pool_std and the paper's and the authors' rules, prints the
status, the number of kept pairs and their precision against the hidden labels, plus the
precision of the RM's orientation as a function of the score gap. No model is run.

    python experiments/filter_precision.py outputs/ser_hh_minilm [--loop 0] [--min-count 0.02]
"""
from __future__ import annotations

import argparse
import glob
import os

import numpy as np

from ser import status as st


def analyse(path: str, min_count: float) -> None:
    z = np.load(path)
    s1, s2, hidden = z["scores_a1"], z["scores_a2"], z["hidden_a1_better"]
    scores, n = np.concatenate([s1, s2]), len(s1)
    print(f"{path}: pool {n} pairs, RM orientation right on {np.mean((s1 > s2) == hidden):.1%}, score std {scores.std():.4f}")
    print(f"  {'normalisation':14s} {'rule':8s} {'status':9s} {'easy':>5s} {'hard':>5s} {'kept':>5s} precision")
    for mode in ("none", "pool_mean", "pool_std"):
        centred = st.centre_scores(scores, "none" if mode == "none" else "pool_mean")
        p = st.probabilities(st.scale_scores(centred, "pool_std" if mode == "pool_std" else "none", scores))
        for rule in ("paper", "authors"):
            th = st.Thresholds(rule=rule, min_count=min_count)
            d = st.decide_status(p[:n], p[n:], th)
            sel = st.select_pairs(p[:n], p[n:], d.status, th)
            prec = st.pseudo_label_precision(sel, hidden)
            print(f"  {mode:14s} {rule:8s} {d.status.name:9s} {d.n_easy:5d} {d.n_hard:5d} {len(sel):5d} "
                  f"{'-' if prec is None else f'{prec:.1%}'}")
    gap = np.abs(s1 - s2)
    for share in (1.0, 0.5, 0.2, 0.1, 0.05):
        keep = gap >= np.quantile(gap, 1 - share)
        print(f"  largest {share:>4.0%} of |r1 - r2|: {keep.sum():5d} pairs, orientation right on {np.mean(((s1 > s2) == hidden)[keep]):.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_or_sweep")
    ap.add_argument("--loop", type=int, default=0)
    ap.add_argument("--min-count", type=float, default=0.02)
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.run_or_sweep, "**", f"pool_scores_loop{a.loop}.npz"), recursive=True))
    if not files:
        raise SystemExit(f"error: no pool_scores_loop{a.loop}.npz under {a.run_or_sweep} (a run with loop.max_loops > 0 writes them)")
    for f in files:
        analyse(f, a.min_count)


if __name__ == "__main__":
    main()
