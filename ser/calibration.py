"""Pairwise confidence and its calibration: pure functions over reward scores.

The paper's p = sigmoid(r) depends on the reward model's arbitrary score scale. A pairwise
probability does not need a scale of its own: P(a1 > a2) = sigmoid((r1 - r2) / T), with the
temperature T fitted by maximum likelihood on pairs whose order is known (temperature scaling,
Guo et al. 2017). The confidence of a pair is max(P, 1 - P), the probability that the RM's
orientation of it is right.

- :func:`fit_temperature`: T by maximum likelihood (golden-section search on log T);
  :func:`temperature_problem` says when T is undefined (no pairs, all ties, a NaN score).
- :func:`pair_probability`: P(a1 > a2) and the confidence.
- :func:`expected_calibration_error` and :func:`reliability`: the binned gap between confidence
  and accuracy (10 equal-width bins over [0.5, 1] by default), and the bins for a diagram.
- :func:`precision_threshold`: the lowest confidence cut whose kept labeled pairs are right at
  least ``target`` of the time (the cut of a precision-target selection).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _nll(diff: np.ndarray, t: float) -> float:
    """Negative log-likelihood of ``chosen > rejected`` for score differences chosen - rejected."""
    return float(np.logaddexp(0.0, -diff / t).sum())


def temperature_problem(diff: Sequence[float]) -> str | None:
    """Why no temperature can be fitted on these score differences; None when one can.

    No pairs, or every difference 0 (a collapsed RM: the likelihood is the same for every T), or a
    difference that is NaN or infinite (a diverged RM) leave T undefined.
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0:
        return "no pairs"
    bad = int(np.sum(~np.isfinite(d)))
    if bad:
        return f"{bad} of {d.size} score differences are NaN or infinite"
    if not np.any(d):
        return f"all {d.size} score differences are 0"
    return None


def fit_temperature(diff: Sequence[float], lo: float = 1e-4, hi: float = 1e4, iters: int = 100) -> float:
    """T maximising the likelihood of P(chosen > rejected) = sigmoid(diff / T) on labeled pairs.

    The NLL is convex in 1/T, so unimodal in log T; perfectly separated pairs push T to ``lo``.
    ValueError when T is undefined (:func:`temperature_problem`).
    """
    d = np.asarray(diff, dtype=np.float64)
    problem = temperature_problem(d)
    if problem is not None:
        raise ValueError(f"fit_temperature needs labeled pairs with finite, not all zero score differences: {problem}")
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, e = b - g * (b - a), a + g * (b - a)
    fc, fe = _nll(d, math.exp(c)), _nll(d, math.exp(e))
    for _ in range(iters):
        if fc <= fe:
            b, e, fe = e, c, fc
            c = b - g * (b - a)
            fc = _nll(d, math.exp(c))
        else:
            a, c, fc = c, e, fe
            e = a + g * (b - a)
            fe = _nll(d, math.exp(e))
    return math.exp((a + b) / 2)


def pair_probability(s1: Sequence[float], s2: Sequence[float], temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """``(P(a1 > a2), confidence = max(P, 1 - P))`` per pair."""
    z = (np.asarray(s1, dtype=np.float64) - np.asarray(s2, dtype=np.float64)) / temperature
    e = np.exp(-np.abs(z))  # in [0, 1]: no overflow for extreme score differences
    conf = 1.0 / (1.0 + e)  # sigmoid(|z|) = max(P, 1 - P), the same number for a pair and its swap
    return np.where(z >= 0, conf, e / (1.0 + e)), conf


def reliability(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10,
                lo: float = 0.5) -> list[dict]:
    """Equal-width confidence bins over [lo, 1]: ``{"low", "high", "n", "confidence", "accuracy"}``
    (the mean confidence and the accuracy of each non-empty bin; the last bin includes 1).
    A NaN confidence falls in no bin."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    known = ~np.isnan(conf)
    conf, ok = conf[known], ok[known]
    edges = np.linspace(lo, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(m.sum()),
                        "confidence": float(conf[m].mean()), "accuracy": float(ok[m].mean())})
    return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE: sum over bins of (bin share) * |accuracy - mean confidence|; NaN with no pairs or a NaN confidence."""
    n = len(confidence)
    if n == 0 or np.isnan(np.asarray(confidence, dtype=np.float64)).any():
        return float("nan")
    return float(sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability(confidence, correct, bins)))


def precision_threshold(confidence: Sequence[float], correct: Sequence[bool], target: float,
                        min_pairs: int = 20) -> float | None:
    """The lowest cut c such that the labeled pairs with confidence >= c are right at least
    ``target`` of the time (and at least ``min_pairs`` of them remain); None when no cut reaches it."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    order = np.argsort(-conf, kind="stable")
    hits = np.cumsum(ok[order])
    n = np.arange(1, len(conf) + 1)
    precision = hits / n
    good = (precision >= target) & (n >= min_pairs)
    # cuts fall on distinct confidence values: pairs tied with the cut are kept with it
    last_of_tie = np.r_[conf[order][1:] != conf[order][:-1], True]
    valid = np.flatnonzero(good & last_of_tie)
    if valid.size == 0:
        return None
    return float(conf[order][valid[-1]])


def cross_fitted(chosen: Sequence[float], rejected: Sequence[float], bins: int = 10, seed: int = 0) -> dict:
    """Calibration of the pairwise confidence on labeled pairs without fitting on what is measured:
    T fitted on one half, ECE and reliability bins measured on the other (2 folds, pooled).

    ``{"ece_raw": ECE of sigmoid(r1 - r2), "ece": ECE after temperature scaling, "temperature": T
    fitted on all pairs, "bins": reliability bins of the cross-fitted confidences, "note": None, or
    what could not be computed}``. A degenerate set (too few pairs, a half whose score differences
    are all 0, a NaN score) gives NaN for what it leaves undefined, never an error.
    """
    d = np.asarray(chosen, dtype=np.float64) - np.asarray(rejected, dtype=np.float64)
    _, conf_raw = pair_probability(d, np.zeros_like(d), 1.0)
    perm = np.random.default_rng(seed).permutation(len(d))
    conf = np.full_like(d, np.nan)
    half_problem = None
    for fit, test in ((perm[: len(d) // 2], perm[len(d) // 2:]), (perm[len(d) // 2:], perm[: len(d) // 2])):
        problem = temperature_problem(d[fit])
        if problem is None:
            _, conf[test] = pair_probability(d[test], np.zeros(len(test)), fit_temperature(d[fit]))
        elif len(test):
            half_problem = half_problem or f"a cross-fitting half of {len(fit)} pairs: {problem}"
    problem = temperature_problem(d)
    right = d > 0  # the pair is ranked as labeled
    ece = expected_calibration_error(conf, right, bins)
    return {"ece_raw": expected_calibration_error(conf_raw, right, bins), "ece": ece,
            "temperature": fit_temperature(d) if problem is None else float("nan"),
            "bins": reliability(conf, right, bins) if not math.isnan(ece) else [],
            "note": problem or half_problem}
