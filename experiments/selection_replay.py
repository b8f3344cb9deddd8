"""Offline replay of the saved pool scores: which ranking of the pool keeps more correct pseudo-labels?

For every finished run and every self-labeled loop, the paper's rule kept k pairs (its status and
thresholds). At the same coverage k, this compares the hidden-label precision of:

- ``rule``: the pairs the run's rule actually kept (the paper's status machine, or the authors' rule);
- ``|p1-p2|``: the top k by the gap of the paper's per-answer p = sigmoid(centred, scaled r);
- ``pairwise``: the top k by the pairwise confidence max(P, 1-P), P = sigmoid((r1 - r2) / T) (the
  ranking does not depend on T: it is the top k by |r1 - r2|);
- ``consistent``: the top k by pairwise confidence among pairs whose orientation also held at the
  previous loop (CREAM-style; from loop 1 on, pairs still in the pool then).

It also prints the calibration of the pairwise confidence on the validation split, T fitted by
maximum likelihood on one half of it and the ECE measured on the other (2-fold, averaged), next to
the ECE of the uncalibrated sigmoid(r1 - r2). Nothing here trains or selects a reported result;
hidden labels are only read to measure precision.

    python experiments/selection_replay.py multirun/table1_cpu
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from ser.calibration import cross_fitted
from ser.report import load_runs


def _npz(path: Path) -> dict | None:
    if not path.exists():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _top_precision(score: np.ndarray, right: np.ndarray, k: int, mask: np.ndarray | None = None) -> float | None:
    idx = np.flatnonzero(mask) if mask is not None else np.arange(len(score))
    if k == 0 or len(idx) < k:
        return None
    top = idx[np.argsort(-score[idx], kind="stable")[:k]]
    return float(right[top].mean())


def replay(run: dict) -> list[dict]:
    phase = run["results"]["phases"].get("ser")
    if not phase:
        return []
    d = Path(run["path"]) / "ser"
    out, prev = [], None
    for h in phase["loops"]:
        pool = _npz(d / f"pool_scores_loop{h['loop']}.npz")
        ev = _npz(d / f"eval_scores_loop{h['loop']}.npz")
        if pool is None or not h.get("kept"):
            prev = pool
            continue
        s1, s2, hidden = pool["scores_a1"], pool["scores_a2"], pool["hidden_a1_better"].astype(bool)
        right = (s1 > s2) == hidden  # the RM's orientation agrees with the hidden human label
        k = int(h["kept"])
        gap = np.abs(pool["p1"] - pool["p2"])
        conf = np.abs(s1 - s2)
        row = {"loop": h["loop"], "pool": len(s1), "k": k, "rule": h.get("pseudo_label_precision"),
               "gap": _top_precision(gap, right, k), "pairwise": _top_precision(conf, right, k), "consistent": None}
        if prev is not None:
            where = {int(i): j for j, i in enumerate(prev["pool_index"])}
            j = np.array([where.get(int(i), -1) for i in pool["pool_index"]])
            same = j >= 0
            agree = np.zeros(len(s1), dtype=bool)
            agree[same] = (prev["scores_a1"][j[same]] > prev["scores_a2"][j[same]]) == (s1[same] > s2[same])
            row["consistent"] = _top_precision(conf, right, k, agree)
            row["consistent_share"] = float(agree.mean())
        if ev is not None and "val_chosen" in ev:
            cal = cross_fitted(ev["val_chosen"], ev["val_rejected"])
            row["ece_raw"], row["ece_T"] = cal["ece_raw"], cal["ece"]
        out.append(row)
        prev = pool
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    args = ap.parse_args()
    by_data: dict[str, list[dict]] = defaultdict(list)
    for run in load_runs(Path(args.path)):
        if run["status"] == "finished":
            by_data[str(run["results"].get("data"))] += replay(run)
    if not by_data:
        raise SystemExit(f"{args.path}: no finished run with saved pool scores")
    for data, rows in by_data.items():
        print(f"## {data}: {len(rows)} self-labeled loops")
        print("| ranking | precision of the k kept (mean over loops) | loops |")
        print("|---|---|---|")
        for key, label in (("rule", "the run's rule (paper status machine)"), ("gap", "top k by |p1 - p2|"),
                           ("pairwise", "top k by pairwise confidence"), ("consistent", "top k consistent with the previous loop")):
            vals = [r[key] for r in rows if r.get(key) is not None]
            if vals:
                print(f"| {label} | {100 * np.mean(vals):.1f} ± {100 * np.std(vals, ddof=1) if len(vals) > 1 else 0:.1f} | {len(vals)} |")
        paired = [(r["pairwise"], r["rule"]) for r in rows if r.get("pairwise") is not None and r.get("rule") is not None]
        if paired:
            diff = np.array([a - b for a, b in paired])
            print(f"pairwise - rule at matched coverage: {100 * diff.mean():+.1f} pts (per loop: "
                  f"{', '.join(f'{100 * x:+.1f}' for x in diff)})")
        ece = [(r["ece_raw"], r["ece_T"]) for r in rows if "ece_raw" in r]
        if ece:
            raw, cal = np.mean(ece, axis=0)
            print(f"ECE on validation: sigmoid(r1 - r2) {100 * raw:.1f} pts; temperature-scaled (2-fold) {100 * cal:.1f} pts")
        share = [r["consistent_share"] for r in rows if "consistent_share" in r]
        if share:
            print(f"pairs whose orientation held since the previous loop: {100 * np.mean(share):.0f}%")
        print()


if __name__ == "__main__":
    main()
