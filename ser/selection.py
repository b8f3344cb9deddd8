"""Selection strategies beyond the paper's status machine: pure functions over reward scores.

``selection.strategy`` (conf/selection/):

- ``status`` (default): the paper's learning status and thresholds (``ser.status``, the
  ``thresholds`` group), or the authors' combined rule.
- ``pairwise``: P(a1 > a2) = sigmoid((r1 - r2) / T), T fitted by maximum likelihood on this loop's
  validation pairs (temperature scaling: fitted on validation, so never on the pool it scores);
  keep the pairs with confidence max(P, 1 - P) >= ``selection.confidence``.
- ``precision_target``: the same confidence, cut where the validation pairs above the cut are right
  at least ``selection.target_precision`` of the time (the estimate is logged beside the
  hidden-label precision); no cut reaching the target stops the loop.
- ``consistent``: ``pairwise``, keeping only pairs whose orientation also held at the previous
  loop (CREAM-style agreement between rounds); at loop 0 there is no previous loop: ``pairwise``.

With no temperature to fit (no validation pairs, or all their score differences 0: a collapsed RM)
a confidence strategy keeps nothing and says why (``fields["note"]``, logged): the loop stops.

With ``selection.mc_passes > 0`` any of these also drops the pairs whose orientation changes under
Monte Carlo dropout (:func:`mc_agreement`: the share of dropout passes agreeing with the
deterministic scores), an ensemble-disagreement signal (Coste et al.) at the cost of the passes.

:func:`select` returns the chosen pool positions, their orientation and its diagnostics.

Comparing rankings at matched coverage (``ser report``'s offline replay of the saved pool scores):
:func:`top_k_precision` and :func:`coverage_curve` (the precision of the k highest-ranked pairs,
for one k or every k).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ser.calibration import fit_temperature, pair_probability, precision_threshold, temperature_problem

STRATEGIES = ("status", "pairwise", "precision_target", "consistent")


def mc_agreement(s1: np.ndarray, s2: np.ndarray, passes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per pair, the share of dropout passes ``(a1 scores, a2 scores)`` that rank it as ``s1`` vs ``s2``."""
    first = np.asarray(s1) > np.asarray(s2)
    return np.mean([(np.asarray(a) > np.asarray(b)) == first for a, b in passes], axis=0)


def previous_a1_better(previous: dict, pool_index: np.ndarray) -> np.ndarray:
    """Per pair of ``pool_index``: 1 if the previous loop's saved pool scores (``pool_index``,
    ``scores_a1``, ``scores_a2``) ranked a1 first, 0 if second, -1 if it did not score the pair."""
    where = {int(i): j for j, i in enumerate(previous["pool_index"])}
    a1_first = np.asarray(previous["scores_a1"]) > np.asarray(previous["scores_a2"])
    return np.array([int(a1_first[where[int(i)]]) if int(i) in where else -1 for i in pool_index], dtype=np.int64)


def top_k_precision(score: np.ndarray, right: np.ndarray, k: int, mask: np.ndarray | None = None) -> float | None:
    """Share of ``right`` among the ``k`` pairs with the highest ``score`` (only pairs where ``mask``
    holds; ties keep pool order); None when k is 0 or fewer than k pairs qualify."""
    idx = np.flatnonzero(mask) if mask is not None else np.arange(len(score))
    if k <= 0 or len(idx) < k:
        return None
    return float(np.asarray(right, bool)[top_k(score, k, mask)].mean())


def top_k(score: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``k`` highest ``score`` (among ``mask``), highest first, ties in pool order."""
    idx = np.flatnonzero(mask) if mask is not None else np.arange(len(score))
    return idx[np.argsort(-np.asarray(score)[idx], kind="stable")[:k]]


def coverage_curve(score: np.ndarray, right: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(coverage, precision)``: for k = 1..(pairs in ``mask``), k / len(score) and the precision of
    the top k by ``score``: the precision a cut on ``score`` buys at each coverage of the pool."""
    order = top_k(score, len(score), mask)
    k = np.arange(1, len(order) + 1)
    return k / len(score), np.cumsum(np.asarray(right, bool)[order]) / k


@dataclass
class ConfidenceSelection:
    index: np.ndarray  # positions in the scored pool (alive pairs)
    first_is_chosen: np.ndarray
    fields: dict  # temperature, cut, estimated precision, strategy
    p: np.ndarray | None = None  # P(a1 > a2) of every pool pair (None: no temperature could be fitted)


def select(strategy: str, s1: np.ndarray, s2: np.ndarray, val_chosen: np.ndarray, val_rejected: np.ndarray,
           confidence: float = 0.8, target_precision: float = 0.8, min_pairs: int = 20,
           previous_a1_better: np.ndarray | None = None, mc_agreement: np.ndarray | None = None,
           mc_min_agreement: float = 1.0) -> ConfidenceSelection:
    """Pairs of the pool (scores ``s1``, ``s2`` of its two answers) kept by a confidence strategy.

    ``previous_a1_better``: per pool pair, whether the previous loop ranked a1 first (1), second
    (0) or did not score it (-1); only ``consistent`` reads it. ``mc_agreement``: per pool pair,
    the share of MC-dropout passes that ranked it as the deterministic scores do; pairs below
    ``mc_min_agreement`` are left out (any strategy).
    """
    if strategy not in STRATEGIES[1:]:
        raise ValueError(f"selection.strategy='{strategy}' is not a confidence strategy ({', '.join(STRATEGIES[1:])})")
    val_diff = np.asarray(val_chosen, float) - np.asarray(val_rejected, float)
    problem = temperature_problem(val_diff)
    if problem is not None:  # no temperature, so no confidence: nothing is kept (the caller logs the note)
        note = f"no temperature can be fitted on the validation pairs ({problem}): nothing selected"
        fields = {"selection": strategy, "temperature": float("nan"), "cut": None, "estimated_precision": None,
                  "note": note}
        return ConfidenceSelection(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), fields)
    t = fit_temperature(val_diff)
    p, conf = pair_probability(s1, s2, t)
    val_p, val_conf = pair_probability(val_chosen, val_rejected, t)
    val_right = val_p > 0.5
    cut: float | None = confidence
    if strategy == "precision_target":
        cut = precision_threshold(val_conf, val_right, target_precision, min_pairs)
    keep = conf >= cut if cut is not None else np.zeros(len(conf), dtype=bool)
    if strategy == "consistent" and previous_a1_better is not None:
        keep &= (previous_a1_better >= 0) & ((previous_a1_better == 1) == (p > 0.5))
    if mc_agreement is not None:
        keep &= np.asarray(mc_agreement) >= mc_min_agreement
    above = val_conf >= cut if cut is not None else np.zeros(len(val_conf), dtype=bool)
    fields = {"selection": strategy, "temperature": t, "cut": cut,
              "estimated_precision": float(val_right[above].mean()) if above.any() else None}
    index = np.flatnonzero(keep)
    return ConfidenceSelection(index, p[index] > 0.5, fields, p)
