"""Offline replay of the saved pool scores: which ranking of the pool keeps more correct pseudo-labels?

Every self-labeling loop saves its pool scores (``<run>/ser/pool_scores_loopN.npz``: both answers'
scores, the paper's p, the hidden human label, the positions the run kept and, with
``selection.mc_passes``, the MC-dropout agreement). At the coverage k the run's own selection had
(its strategy: the paper's status machine by default), this compares the hidden-label precision of
the k pairs each ranking would keep, on the same pool:

- ``run``: the pairs the run kept;
- ``gap``: the top k by the paper's |p1 - p2|;
- ``pairwise``: the top k by pairwise confidence max(P, 1 - P), P = sigmoid((r1 - r2) / T) (the
  order does not depend on T: the top k by |r1 - r2|); ``precision_target`` ranks the same way;
- ``consistent``: the same among the pairs whose orientation also held at the previous loop;
- ``mc``: the same among the pairs every MC-dropout pass oriented alike (runs with mc_passes and
  ``selection.mc_scope=pool``: with the default ``candidates`` only the kept pairs are MC-scored).

:func:`replay_run` gives one row per loop; :func:`replay_summary` pools the rows of runs (seeds) into
the mean precision of each ranking and its difference from the run's own selection, with a 95% CI
that resamples runs, then pool pairs (Poisson weights) within each loop; :func:`curves` gives the
coverage/precision curves behind ``coverage_precision.png``. Hidden labels are only read to measure
precision: nothing here selects anything a run reports.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ser import status as st
from ser.selection import coverage_curve, previous_a1_better, top_k
from ser.significance import N_BOOT

RANKINGS = {"run": "the run's own selection", "gap": "top k by |p1 - p2| (paper's p)",
            "pairwise": "top k by pairwise confidence", "consistent": "top k, consistent with the previous loop",
            "mc": "top k, all MC-dropout passes agree"}


def _npz(path: Path) -> dict | None:
    if not path.exists():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _kept_positions(pool: dict, h: dict, thresholds: dict) -> np.ndarray | None:
    """Positions (in the saved pool) the run kept: saved since ``kept`` was added to the npz; for older
    runs of the paper's rule, recomputed from the saved p (pure ``ser.status``) and checked against
    the logged precision."""
    if "kept" in pool:
        return np.asarray(pool["kept"], dtype=np.int64)
    if h.get("selection", "status") != "status" or h.get("status") not in ("EASY", "HARD"):
        return None
    th = st.Thresholds(**{k: thresholds[k] for k in ("tau_high", "tau_low", "tau_delta", "min_count", "rule") if k in thresholds})
    sel = st.select_pairs(pool["p1"], pool["p2"], st.Status[h["status"]], th)
    hidden = pool["hidden_a1_better"].astype(bool)
    if len(sel.index) != h.get("kept") or not np.isclose(
            np.mean(np.asarray(sel.first_is_chosen) == hidden[sel.index]), h.get("pseudo_label_precision") or 0.0):
        return None
    return np.asarray(sel.index, dtype=np.int64)


def replay_run(run_dir, results: dict) -> list[dict]:
    """One row per self-labeling loop of the run's ser phase that kept pairs: ``{"loop", "pool", "k",
    "right": bool per pool pair, "sets": {ranking: positions of its k pairs}, "curves": {ranking:
    (coverage, precision)}}``."""
    phase = (results.get("phases") or {}).get("ser")
    if not phase or not phase.get("loops"):
        return []
    d = Path(run_dir) / "ser"
    out, prev = [], None
    for h in phase["loops"]:
        pool = _npz(d / f"pool_scores_loop{h['loop']}.npz")
        if pool is None:
            prev = None
            continue
        s1, s2 = pool["scores_a1"], pool["scores_a2"]
        right = (s1 > s2) == pool["hidden_a1_better"].astype(bool)  # the RM's orientation vs the hidden label
        conf = np.abs(s1 - s2)
        masks: dict[str, np.ndarray | None] = {"pairwise": None}
        if prev is not None:  # scored at the previous loop too, and ranked the same way
            before = previous_a1_better(prev, pool["pool_index"])
            masks["consistent"] = (before >= 0) & ((before == 1) == (s1 > s2))
        if "mc_agreement" in pool and not np.isnan(pool["mc_agreement"]).any():  # selection.mc_scope=pool
            masks["mc"] = pool["mc_agreement"] >= 1.0
        kept = _kept_positions(pool, h, results.get("thresholds") or {})
        k = int(h.get("kept") or 0)
        prev = pool
        if kept is None or k == 0:
            continue
        sets = {"run": kept, "gap": top_k(np.abs(pool["p1"] - pool["p2"]), k)}
        curves = {"gap": coverage_curve(np.abs(pool["p1"] - pool["p2"]), right)}
        for name, mask in masks.items():
            curves[name] = coverage_curve(conf, right, mask)
            if mask is None or mask.sum() >= k:
                sets[name] = top_k(conf, k, mask)
        out.append({"loop": h["loop"], "pool": len(s1), "k": k, "right": right, "sets": sets, "curves": curves,
                    "strategy": h.get("selection", "status")})
    return out


def replay_summary(per_run: Sequence[list[dict]], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Across runs (each a :func:`replay_run` list): per ranking, the mean precision of its k pairs
    over loops and the mean difference from the run's own selection on the same loops, with a 95% CI
    (resample runs, then Poisson-weight the pool pairs of each loop). ``{ranking: {"precision",
    "diff", "low", "high", "loops"}}``; rankings without a row are left out."""
    rng = np.random.default_rng(seed)
    runs = [rows for rows in per_run if rows]
    out: dict = {}
    if not runs:
        return out
    for name in RANKINGS:
        rows = [[r for r in rows if name in r["sets"]] for rows in runs]
        n_loops = sum(len(r) for r in rows)
        if not n_loops:
            continue
        prec = np.mean([r["right"][r["sets"][name]].mean() for rs in rows for r in rs])
        diff = np.mean([r["right"][r["sets"][name]].mean() - r["right"][r["sets"]["run"]].mean() for rs in rows for r in rs])
        # bootstrap: per run, the sum over its loops of the difference under n_boot Poisson weightings
        # of the pool pairs (only the pairs either set holds need a weight)
        sums, counts = [], []
        for rs in rows:
            if not rs:
                continue
            total = np.zeros(n_boot)
            for r in rs:
                a, b = np.asarray(r["sets"][name]), np.asarray(r["sets"]["run"])  # positions in the pool
                used = np.union1d(a, b)
                w = rng.poisson(1.0, size=(n_boot, len(used))).astype(float)
                right = r["right"][used].astype(float)
                ia, ib = np.searchsorted(used, a), np.searchsorted(used, b)
                pa = (w[:, ia] * right[ia]).sum(1) / np.maximum(w[:, ia].sum(1), 1e-12)
                pb = (w[:, ib] * right[ib]).sum(1) / np.maximum(w[:, ib].sum(1), 1e-12)
                total += pa - pb
            sums.append(total)
            counts.append(len(rs))
        sums, counts = np.array(sums), np.array(counts)  # runs x n_boot, runs
        pick = rng.integers(0, len(counts), size=(n_boot, len(counts)))
        draws = sums[pick, np.arange(n_boot)[:, None]].sum(1) / counts[pick].sum(1)
        low, high = np.percentile(draws, [2.5, 97.5])
        out[name] = {"precision": float(prec), "diff": float(diff), "low": float(low), "high": float(high),
                     "loops": n_loops, "runs": len(counts)}
    return out


def curves(per_run: Sequence[list[dict]], loop: int = 0, grid: np.ndarray | None = None) -> dict:
    """Mean coverage/precision curve of each ranking at ``loop`` over runs (interpolated on ``grid``
    coverages), and the runs' own (coverage, precision) points: ``{"grid", "curves": {ranking:
    precision per grid point (nan past a ranking's reach)}, "points": [(coverage, precision)]}``."""
    grid = np.linspace(0.01, 1.0, 100) if grid is None else grid
    acc: dict[str, list[np.ndarray]] = {}
    points = []
    for rows in per_run:
        for r in rows:
            if r["loop"] != loop:
                continue
            points.append((r["k"] / r["pool"], float(r["right"][r["sets"]["run"]].mean())))
            for name, (cov, prec) in r["curves"].items():
                acc.setdefault(name, []).append(np.where(grid <= cov[-1] + 1e-12, np.interp(grid, cov, prec), np.nan)
                                                if len(cov) else np.full(len(grid), np.nan))
    with warnings.catch_warnings():  # a coverage no run reaches is nan, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = {name: np.nanmean(np.vstack(v), axis=0) for name, v in acc.items()}
    return {"grid": grid, "curves": mean, "points": points}


def replay_lines(summary: dict) -> list[str]:
    """Under a group's Table 1: each ranking's precision at the run's own coverage, and its difference."""
    if not summary or "run" not in summary:
        return []
    out = ["", "Pseudo-label precision at matched coverage (offline replay of the pool scores; the k pairs each ranking "
           "would keep where the run kept k; 95% CI resampling runs, then pool pairs):", "",
           "| ranking | precision % | minus the run's selection (pts, 95% CI) | loops |", "|---|---|---|---|"]
    for name, label in RANKINGS.items():
        s = summary.get(name)
        if not s:
            continue
        diff = "-" if name == "run" else f"{100 * s['diff']:+.1f} [{100 * s['low']:+.1f}, {100 * s['high']:+.1f}]"
        out.append(f"| {label.replace('|', chr(92) + '|')} | {100 * s['precision']:.1f} | {diff} | {s['loops']} |")
    return out
