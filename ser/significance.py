"""Uncertainty of accuracy differences measured on the same pairs: pure functions over 0/1 outcomes.

- :func:`paired_bootstrap`: one run. Accuracy of B minus accuracy of A on the same test pairs,
  with a percentile CI from resampling the pairs (the two models stay paired on each pair).
- :func:`mcnemar_exact`: one run. Two-sided exact sign test on the discordant pairs (B right, A
  wrong vs A right, B wrong): McNemar's test without the normal approximation.
- :func:`seed_bootstrap`: several runs (seeds), each with its own test pairs. The mean over seeds of
  the per-seed difference; its CI resamples seeds, then pairs within each drawn seed (a two-level
  bootstrap: both the seed-to-seed spread and the finite test set count). With ``full`` outcomes it
  also gives the gap closed, mean(B - A) / mean(F - A), with its CI from the same resamples.
- :func:`verdict`: one plain line from a CI.

Resampling pairs only needs how many pairs fall in each outcome pattern, so every resample is one
multinomial draw over at most 8 patterns: exact, and fast for any number of pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

N_BOOT = 10_000


@dataclass(frozen=True)
class Interval:
    """A difference (fraction of pairs) with its ``level`` CI; ``n`` = pairs (one run) or seeds."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n, "level": self.level}

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        """``+3.4 [+0.9, +5.8]`` (percentage points by default)."""
        f = lambda x: f"{scale * x:+.{digits}f}"  # noqa: E731
        return f"{f(self.estimate)} [{f(self.low)}, {f(self.high)}]"


def _outcomes(*correct: Sequence[bool]) -> np.ndarray:
    arrays = [np.asarray(c, dtype=bool) for c in correct]
    n = {len(a) for a in arrays}
    if len(n) != 1:
        raise ValueError(f"paired outcomes need the same pairs: lengths {[len(a) for a in arrays]}")
    if not n.pop():
        raise ValueError("no pairs")
    return np.stack(arrays, axis=1).astype(np.int8)


def _pattern_draws(x: np.ndarray, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Means of the columns of ``x`` (pairs x models, 0/1) over ``size`` resamples of its rows."""
    patterns, counts = np.unique(x, axis=0, return_counts=True)
    draws = rng.multinomial(len(x), counts / counts.sum(), size=size)  # size + (n_patterns,)
    return draws @ patterns / len(x)  # size + (models,)


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(values, [a, 1 - a])
    return float(lo), float(hi)


def paired_bootstrap(a_correct: Sequence[bool], b_correct: Sequence[bool], n_boot: int = N_BOOT,
                     level: float = 0.95, seed: int = 0) -> Interval:
    """acc(B) - acc(A) on the same pairs, CI from ``n_boot`` resamples of the pairs."""
    x = _outcomes(a_correct, b_correct)
    means = _pattern_draws(x, (n_boot,), np.random.default_rng(seed))
    diff = means[:, 1] - means[:, 0]
    est = float(x[:, 1].mean() - x[:, 0].mean())
    return Interval(est, *_percentile(diff, level), n=len(x), level=level)


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """Exact two-sided McNemar (sign) test: ``{"b_only", "a_only", "p"}``; p = 1 with no discordant pair."""
    x = _outcomes(a_correct, b_correct)
    b_only = int(np.sum((x[:, 1] == 1) & (x[:, 0] == 0)))
    a_only = int(np.sum((x[:, 0] == 1) & (x[:, 1] == 0)))
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return {"b_only": b_only, "a_only": a_only, "p": 1.0}
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return {"b_only": b_only, "a_only": a_only, "p": min(1.0, 2 * tail)}


@dataclass(frozen=True)
class SeedSummary:
    """Across seeds: B - A, F - A and the gap closed (B - A) / (F - A), each with its CI."""

    gain: Interval
    full_gain: Interval | None
    gap_closed: Interval | None
    #: share of resamples where mean(F - A) <= 0 (the gap closed is undefined there; left out)
    gap_undefined: float = 0.0

    def to_dict(self) -> dict:
        return {"gain": self.gain.to_dict(), "full_gain": self.full_gain and self.full_gain.to_dict(),
                "gap_closed": self.gap_closed and self.gap_closed.to_dict(), "gap_undefined": self.gap_undefined}


def seed_bootstrap(seed_correct: Sequence[Sequence[bool]], ser_correct: Sequence[Sequence[bool]],
                   full_correct: Sequence[Sequence[bool]] | None = None, n_boot: int = N_BOOT,
                   level: float = 0.95, seed: int = 0) -> SeedSummary:
    """Mean over seeds of acc(SER) - acc(seed) (and of full - seed, and the gap closed), with CIs
    from a two-level bootstrap: draw seeds with replacement, then each drawn seed's pairs.

    Item ``i`` of each list holds run ``i``'s outcomes on its own test pairs (runs may differ in
    pairs and count). One run gives the pairs-only CI of :func:`paired_bootstrap`.
    """
    k = len(seed_correct)
    if k == 0 or len(ser_correct) != k or (full_correct is not None and len(full_correct) != k):
        raise ValueError("one list of outcomes per run, the same runs in each")
    runs = [_outcomes(*(c[i] for c in (seed_correct, ser_correct, full_correct) if c is not None)) for i in range(k)]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, k, size=(n_boot, k)) if k > 1 else np.zeros((n_boot, 1), dtype=int)
    # each run's pair-resampled means for every (resample, draw) slot; a slot uses its drawn run's
    means = np.stack([_pattern_draws(x, (n_boot, k), rng) for x in runs])  # runs x B x k x models
    drawn = means[pick, np.arange(n_boot)[:, None], np.arange(k)[None, :]]  # B x k x models
    boot = drawn.mean(axis=1)  # B x models: the mean over the drawn seeds
    point = np.mean([x.mean(axis=0) for x in runs], axis=0)
    gain = Interval(float(point[1] - point[0]), *_percentile(boot[:, 1] - boot[:, 0], level), n=k, level=level)
    if full_correct is None:
        return SeedSummary(gain, None, None)
    full_gain = Interval(float(point[2] - point[0]), *_percentile(boot[:, 2] - boot[:, 0], level), n=k, level=level)
    denom = boot[:, 2] - boot[:, 0]
    ok = denom > 0
    gap = None
    if point[2] - point[0] > 0 and ok.any():
        ratio = (boot[ok, 1] - boot[ok, 0]) / denom[ok]
        gap = Interval(float((point[1] - point[0]) / (point[2] - point[0])), *_percentile(ratio, level), n=k, level=level)
    return SeedSummary(gain, full_gain, gap, gap_undefined=float(1 - ok.mean()))


def verdict(gain: Interval, what: str = "SER", than: str = "the seed RM") -> str:
    """One plain line: whether ``what`` beats ``than`` at the CI's level."""
    pct = f"{gain.level:.0%}"
    if gain.low > 0:
        return f"{what} beats {than} at {pct}: {gain.fmt()} points."
    if gain.high < 0:
        return f"{what} is worse than {than} at {pct}: {gain.fmt()} points."
    return f"{what} does not beat {than} at {pct}: {gain.fmt()} points (the CI includes 0)."
