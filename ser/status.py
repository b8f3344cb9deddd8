"""Learning-status machine of SER (Self-Evolved Reward Learning, arXiv 2411.00418).

Pure functions: scores/probabilities come in as numpy arrays, torch tensors or
sequences, are converted to numpy float64, and plain results come out.

Pipeline of one self-labeling loop (see docs/method.md, "The loop"):

1. ``centre_scores`` (optional) then ``probabilities`` turn RM scores into ``p``.
2. ``decide_status`` picks EASY (paper's Status 1), HARD (Status 2) or STOP;
   with ``rule="authors"`` there is no status machine and it returns COMBINED
   or STOP.
3. ``select_pairs`` keeps the pairs for that status and orients them by the RM.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = [
    "Status",
    "Thresholds",
    "StatusDecision",
    "Selection",
    "as_float_array",
    "centre_scores",
    "scale_scores",
    "probabilities",
    "resolve_min_count",
    "easy_mask",
    "gap_mask_for_status",
    "gap_mask_for_filter",
    "combined_mask",
    "decide_status",
    "select_pairs",
    "pseudo_label_precision",
    "gap_histogram",
]

RULES = ("paper", "authors")
CENTRE_MODES = ("none", "labeled_mean", "pool_mean")


class Status(enum.IntEnum):
    """Learning status of the reward model."""

    STOP = 0  #: nothing confident left: stop self-labeling
    EASY = 1  #: paper's Status 1: one answer p > tau_high, the other p < tau_low
    HARD = 2  #: paper's Status 2: |p1 - p2| >= tau_delta
    COMBINED = 3  #: authors' combined rule, no status machine, no min count


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of the status machine.

    ``min_count`` is an absolute pair count when >= 1 and a fraction of the pool
    size when 0 < min_count < 1 (see ``resolve_min_count``). ``rule`` is
    ``"paper"`` (status machine, Eq. 3/4) or ``"authors"`` (the authors' combined
    filter, no status machine and no minimum count).
    """

    tau_high: float = 0.55
    tau_low: float = 0.45
    tau_delta: float = 0.3
    min_count: float = 0.05
    rule: str = "paper"

    def __post_init__(self) -> None:
        if not 0.0 < self.tau_low < 1.0:
            raise ValueError(f"thresholds.tau_low={self.tau_low} must be in (0, 1)")
        if not 0.0 < self.tau_high < 1.0:
            raise ValueError(f"thresholds.tau_high={self.tau_high} must be in (0, 1)")
        if self.tau_low > self.tau_high:
            raise ValueError(
                f"thresholds.tau_low={self.tau_low} must be <= "
                f"thresholds.tau_high={self.tau_high}"
            )
        if not 0.0 < self.tau_delta < 1.0:
            raise ValueError(f"thresholds.tau_delta={self.tau_delta} must be in (0, 1)")
        if not self.min_count > 0:  # also rejects NaN
            raise ValueError(f"thresholds.min_count={self.min_count} must be > 0")
        if self.rule not in RULES:
            raise ValueError(f"thresholds.rule={self.rule!r} must be one of {RULES}")


@dataclass(frozen=True)
class StatusDecision:
    """Outcome of ``decide_status``.

    ``n_easy`` counts pairs passing ``easy_mask``; ``n_hard`` counts pairs
    passing ``gap_mask_for_status`` (rule "paper") or ``gap_mask_for_filter``
    (rule "authors"). The two sets may overlap. ``min_count`` is the resolved
    minimum count (0 for rule "authors", where none applies).
    """

    status: Status
    n_easy: int
    n_hard: int
    min_count: int
    pool_size: int


@dataclass(frozen=True)
class Selection:
    """Pairs kept by ``select_pairs``.

    ``index``: int64 positions of the kept pairs in the pool arrays.
    ``first_is_chosen``: bool, same length; True when the first answer of the
    kept pair becomes "chosen" (p1 > p2, and on an exact tie p1 == p2).
    """

    index: np.ndarray
    first_is_chosen: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])


def as_float_array(x: Any) -> np.ndarray:
    """Convert a numpy array, torch tensor or sequence to a numpy float64 array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, no torch import
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(p1: Any, p2: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_float_array(p1), as_float_array(p2)
    if a.shape != b.shape:
        raise ValueError(f"p1 shape {a.shape} != p2 shape {b.shape}")
    if a.ndim != 1:
        raise ValueError(f"p1/p2 must be 1-D, got shape {a.shape}")
    return a, b


def centre_scores(scores: Any, mode: str, labeled_scores: Any = None) -> np.ndarray:
    """Shift raw RM scores before the sigmoid.

    ``"none"``: unchanged; ``"labeled_mean"``: subtract the mean of
    ``labeled_scores`` (required); ``"pool_mean"``: subtract the mean of
    ``scores`` itself. Means are taken over all elements (any shape).
    """
    s = as_float_array(scores)
    if mode == "none":
        return s.copy()
    if mode == "pool_mean":
        return s - s.mean() if s.size else s.copy()
    if mode == "labeled_mean":
        if labeled_scores is None:
            raise ValueError("centre mode 'labeled_mean' requires labeled_scores")
        ref = as_float_array(labeled_scores)
        if ref.size == 0:
            raise ValueError("centre mode 'labeled_mean' got empty labeled_scores")
        return s - ref.mean()
    raise ValueError(f"centre mode={mode!r} must be one of {CENTRE_MODES}")


SCALE_MODES = ("none", "labeled_std", "pool_std")


def scale_scores(centred: Any, mode: str, raw_scores: Any = None, labeled_scores: Any = None) -> np.ndarray:
    """Divide centred scores by a score spread before the sigmoid: ``p = sigmoid((r - c) / s)``.

    ``"none"``: the paper's ``p = sigmoid(r)``, which assumes scores of order 1. A reward model
    trained briefly (a small model, few seed pairs) has scores spread by a few hundredths, every
    ``p`` is then ~0.5 and the status machine stops at once. ``"labeled_std"`` divides by the
    standard deviation of the labeled set's scores, ``"pool_std"`` by that of ``raw_scores``
    (the pool), putting the thresholds on a z-score scale (``p > 0.55`` <=> ``z > 0.2``).
    """
    c = as_float_array(centred)
    if mode == "none":
        return c.copy()
    if mode not in SCALE_MODES:
        raise ValueError(f"scale mode={mode!r} must be one of {SCALE_MODES}")
    ref = as_float_array(labeled_scores if mode == "labeled_std" else raw_scores if raw_scores is not None else c)
    if ref.size < 2:
        raise ValueError(f"scale mode {mode!r} needs at least 2 reference scores")
    sd = float(ref.std())
    return c / sd if sd > 0 else c.copy()


def probabilities(scores: Any) -> np.ndarray:
    """Numerically stable sigmoid of ``scores`` (no overflow for large |x|)."""
    x = as_float_array(scores)
    e = np.exp(-np.abs(x))  # in (0, 1], never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def resolve_min_count(min_count: float, pool_size: int) -> int:
    """Absolute minimum pair count: ``int(min_count)`` when >= 1, else
    ``ceil(min_count * pool_size)``; never below 1."""
    if min_count <= 0:
        raise ValueError(f"min_count={min_count} must be > 0")
    if min_count >= 1:
        n = int(min_count)
    else:
        n = math.ceil(min_count * pool_size)
    return max(1, n)


def easy_mask(p1: Any, p2: Any, th: Thresholds) -> np.ndarray:
    """Status 1 rule: one answer p > tau_high and the other p < tau_low (strict)."""
    a, b = _pair(p1, p2)
    return ((a > th.tau_high) & (b < th.tau_low)) | ((b > th.tau_high) & (a < th.tau_low))


def gap_mask_for_status(p1: Any, p2: Any, th: Thresholds) -> np.ndarray:
    """``|p1 - p2| >= tau_delta``: the paper's Eq. 3 uses >= to *decide* Status 2.

    Note the asymmetry with ``gap_mask_for_filter`` (Eq. 4, strict >): a pair
    with gap exactly tau_delta counts towards Status 2 but is not kept.
    """
    a, b = _pair(p1, p2)
    return np.abs(a - b) >= th.tau_delta


def gap_mask_for_filter(p1: Any, p2: Any, th: Thresholds) -> np.ndarray:
    """``|p1 - p2| > tau_delta``: the paper's Eq. 4 uses strict > to *filter*.

    See ``gap_mask_for_status`` (>=) for the decision side.
    """
    a, b = _pair(p1, p2)
    return np.abs(a - b) > th.tau_delta


def combined_mask(p1: Any, p2: Any, th: Thresholds) -> np.ndarray:
    """Authors' combined rule: ``(p1 > tau_high and p2 < tau_low) or
    (p1 - p2 > tau_delta)``, and the same with the answers swapped."""
    return easy_mask(p1, p2, th) | gap_mask_for_filter(p1, p2, th)


def decide_status(p1: Any, p2: Any, th: Thresholds) -> StatusDecision:
    """Decide the learning status of the pool ``(p1[i], p2[i])``.

    Rule "paper": EASY if n_easy >= min_count, else HARD if n_hard >= min_count
    (n_hard uses >= tau_delta), else STOP. Rule "authors": COMBINED if at least
    one pair passes ``combined_mask`` (no min count), else STOP. An empty pool
    is always STOP.
    """
    a, b = _pair(p1, p2)
    n = int(a.shape[0])
    n_easy = int(easy_mask(a, b, th).sum())
    if th.rule == "authors":
        n_hard = int(gap_mask_for_filter(a, b, th).sum())
        keep = n > 0 and bool(combined_mask(a, b, th).any())
        return StatusDecision(Status.COMBINED if keep else Status.STOP, n_easy, n_hard, 0, n)
    n_hard = int(gap_mask_for_status(a, b, th).sum())
    m = resolve_min_count(th.min_count, n)
    if n == 0:
        status = Status.STOP
    elif n_easy >= m:
        status = Status.EASY
    elif n_hard >= m:
        status = Status.HARD
    else:
        status = Status.STOP
    return StatusDecision(status, n_easy, n_hard, m, n)


def select_pairs(p1: Any, p2: Any, status: Status, th: Thresholds) -> Selection:
    """Keep the pairs for ``status`` and orient them by the RM.

    EASY -> ``easy_mask``; HARD -> ``gap_mask_for_filter`` (strict >);
    COMBINED -> ``combined_mask``; STOP -> nothing. ``first_is_chosen`` is
    ``p1 >= p2``: the higher-p answer is chosen and an exact tie picks the first
    answer (no kept pair can be a tie under these rules, so this is only a
    convention).
    """
    a, b = _pair(p1, p2)
    status = Status(status)
    if status == Status.EASY:
        mask = easy_mask(a, b, th)
    elif status == Status.HARD:
        mask = gap_mask_for_filter(a, b, th)
    elif status == Status.COMBINED:
        mask = combined_mask(a, b, th)
    else:
        mask = np.zeros(a.shape, dtype=bool)
    index = np.flatnonzero(mask).astype(np.int64)
    return Selection(index=index, first_is_chosen=a[index] >= b[index])


def pseudo_label_precision(selection: Selection, hidden_first_is_better: Any) -> Optional[float]:
    """Share of kept pairs whose RM orientation matches the hidden human label.

    ``hidden_first_is_better`` is a bool array over the whole pool (aligned with
    the pool arrays, indexed by ``selection.index``). Reporting only: never use
    it for training. None when nothing was kept.
    """
    if len(selection) == 0:
        return None
    truth = np.asarray(as_float_array(hidden_first_is_better) != 0)[selection.index]
    return float(np.mean(truth == selection.first_is_chosen))


def gap_histogram(p1: Any, p2: Any, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges of ``|p1 - p2|`` over [0, 1] (the paper's Fig. 6)."""
    a, b = _pair(p1, p2)
    counts, edges = np.histogram(np.abs(a - b), bins=bins, range=(0.0, 1.0))
    return counts, edges
