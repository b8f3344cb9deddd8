"""Small value helpers shared by the report's modules: reading a number from a results file
(:func:`_num`: a finite float or None) and writing one (:func:`_pct` as a percentage,
:func:`_frac_label` for a labeled fraction, :func:`_plural` for a count of things).
"""
from __future__ import annotations

import math


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
