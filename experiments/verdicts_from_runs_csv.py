"""Re-derive, with the current statistics, the across-seed verdicts of reports whose run folders are
gone but whose ``runs.csv`` is published (docs/results/*/runs.csv, written before per-run bundles).

Valid only where every seed scores its own test pairs (HH and summarize carve a test split per
seed): there the across-seed interval of ``ser.significance.across_seeds`` is the t-interval of the
per-seed differences (s / sqrt(k), k - 1 df), which needs only each run's accuracies. (It leaves out
the small floor on s that ``seed_moments`` adds from the per-pair noise, which needs the pairs.)
Families are Holm-adjusted: every configuration vs the seed RM, and every configuration vs the
reference (the first value of the sweep).

    python experiments/verdicts_from_runs_csv.py docs/results/selection_strategies_hh/runs.csv [--reference selection=status]
"""
from __future__ import annotations

import argparse
import re

import numpy as np
import pandas as pd

from ser.significance import holm, t_interval


def interval(diffs: np.ndarray):
    k = len(diffs)
    se = float(np.std(diffs, ddof=1) / np.sqrt(k)) if k > 1 else 0.0
    return t_interval(float(np.mean(diffs)), se, k - 1, n=k)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs_csv")
    ap.add_argument("--reference", default=None, help="the group item of the reference, e.g. selection=status")
    args = ap.parse_args()
    df = pd.read_csv(args.runs_csv)
    df["config"] = [",".join(i for i in g.split(",") if not i.startswith("experiment=")) or g for g in df["group"]]
    configs = list(dict.fromkeys(df["config"]))
    ref = args.reference or configs[0]
    rows = []
    for c in configs:
        d = df[df["config"] == c].sort_values("seed")
        rows.append((c, "SER - seed", interval((d["ser_acc"] - d["seed_acc"]).to_numpy())))
    base = df[df["config"] == ref].set_index("seed")["ser_acc"]
    for c in configs:
        if c == ref:
            continue
        d = df[df["config"] == c].set_index("seed")["ser_acc"]
        common = sorted(set(d.index) & set(base.index))
        rows.append((c, f"vs {ref}", interval((d[common] - base[common]).to_numpy())))
    for family in ("SER - seed", f"vs {ref}"):
        fam = [r for r in rows if r[1] == family]
        adj = holm([r[2].p for r in fam])
        print(f"\n{family} (Holm family of {len(fam)}; t-interval over seeds, k - 1 df):")
        print("| configuration | seeds | difference, pts [95% CI] | p | p Holm | verdict at 95% (Holm) |")
        print("|---|---|---|---|---|---|")
        for (c, _, iv), pa in zip(fam, adj):
            word = "beats" if iv.estimate > 0 and pa < 0.05 else "worse" if iv.estimate < 0 and pa < 0.05 else "no difference shown"
            print(f"| {re.sub(r'^selection=', '', c)} | {iv.n} | {iv.fmt()} | {iv.p:.3f} | {pa:.3f} | {word} |")


if __name__ == "__main__":
    main()
