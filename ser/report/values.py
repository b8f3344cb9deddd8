"""Small value helpers shared by the report's modules: reading a number from a results file
(:func:`_num`: a finite float or None), summarising several (:func:`_stat`: mean, sample std and n)
and writing one (:func:`_pct` as a percentage, :func:`_frac_label` for a labeled fraction,
:func:`_plural` for a count of things, :func:`format_stat` for a :func:`_stat`).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _num(x):
    """A finite float, or None (JSON NaN and missing values become None)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _frac_label(f) -> str:
    f = _num(f)
    return "?%" if f is None else f"{100 * f:.4g}%"


def _stat(values: Iterable) -> dict:
    """Mean, sample standard deviation (n - 1; None for n < 2) and n of the non-missing values."""
    v = [x for x in (_num(x) for x in values) if x is not None]
    return {"mean": statistics.fmean(v) if v else None, "std": statistics.stdev(v) if len(v) > 1 else None,
            "n": len(v)}


def format_stat(s: dict, scale: float = 100.0, signed: bool = False, digits: int = 2) -> str:
    """``"mean ± std (n)"`` with 2 decimals (percent by default); ``"mean (1)"`` for one run; ``"-"`` for none."""
    if not s or not s["n"] or s["mean"] is None:
        return "-"
    m = f"{scale * s['mean']:{'+' if signed else ''}.{digits}f}"
    if s["std"] is None:
        return f"{m} ({s['n']})"
    return f"{m} ± {scale * s['std']:.{digits}f} ({s['n']})"
