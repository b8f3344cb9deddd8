"""The data regime (issue 22): does SER close the seed-to-full gap once its seed holds many labels?

A sweep over the size of the training set (``data.limit``) or the labelled share
(``labeled_fraction``), the paper's 15% of a large set against our 15% of a small one:

- :func:`regime_table`: one entry per configuration of such a sweep: labelled pairs in the seed, pool
  and test pairs (means over seeds), the seed RM's test accuracy, SER final - seed and full - seed
  with their 95% CIs and the gap closed (Fieller's interval; :func:`ser.significance.across_seeds`),
  the same two differences on the length-balanced accuracy (tokens,
  :func:`ser.report.length.balanced_difference`) with the length-only baseline beside them, the
  precision of the pseudo-labels kept in each loop, how many runs ever reached HARD, and minutes per run.
- :func:`regime_lines` (markdown) and :func:`plot_regime` (``data_regime.png``): the differences
  against the seed's labelled pairs (log scale, one line per model, plain and length-balanced), and
  the gap closed against it.

Shown when the report's configurations differ in one of :data:`SIZE_KEYS`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ser.report.compare import _items
from ser.report.length import in_tokens
from ser.significance import Interval

PNG_FILE = "data_regime.png"
#: override keys that change how many labelled pairs the seed holds
SIZE_KEYS = ("data.limit", "labeled_fraction")


def _iv(d: dict | None) -> Interval | None:
    return Interval(**d) if d else None


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def swept_size_keys(groups: Sequence[dict]) -> list[str]:
    """The :data:`SIZE_KEYS` whose value differs between the report's configurations."""
    items = [_items(g["group"]) for g in groups]
    return [k for k in SIZE_KEYS if len({it.get(k) for it in items}) > 1]


def regime_table(rows: Sequence[dict], groups: Sequence[dict]) -> list[dict]:
    """One entry per configuration (in the order of labelled pairs within each line) when the report
    sweeps a size key, else ``[]``: ``{"line": the configuration without its size keys (one line per
    model/recipe), "group", "model", "size": {key: value}, "runs", "labeled", "pool", "test",
    "seed_acc", "gain", "full_gain", "gap_closed", "gap_note", "gain_balanced", "full_gain_balanced",
    "baseline", "seed_balanced", "precision": [per loop mean], "hard": runs that reached HARD, "minutes"}``;
    differences and the gap are :class:`Interval` or None, accuracies fractions."""
    keys = swept_size_keys(groups)
    if not keys:
        return []
    out = []
    for g in groups:
        rs = [r for r in rows if r["group"] == g["group"] and r["run"] in g["runs"]]
        items = _items(g["group"])
        loops = [r.get("loops") or [] for r in rs]
        test = ((g.get("paired") or {}).get("test") or {}).get("ser") or {}
        tok = in_tokens(g)
        paired = tok.get("paired") or {}
        n_loops = max((len(x) for x in loops), default=0)
        n_test = [len(((r.get("outcomes") or {}).get("test") or {}).get("seed", [])) for r in rs]
        out.append({
            "line": ",".join(f"{k}={v}" for k, v in items.items() if k not in SIZE_KEYS and k != "seed"),
            "group": g["group"], "model": g["model"], "size": {k: items.get(k) for k in keys}, "runs": len(rs),
            "labeled": _mean(x[0].get("train_pairs") for x in loops if x),
            "pool": _mean(x[0].get("pool") for x in loops if x),
            "test": _mean(n for n in n_test if n) if any(n_test) else None,
            "seed_acc": g["seed_acc"].get("mean"),
            "gain": _iv(test.get("gain")), "full_gain": _iv(test.get("full_gain")),
            "gap_closed": _iv(test.get("gap_closed")), "gap_note": test.get("gap_note", ""),
            "gain_balanced": _iv((paired.get("ser") or {}).get("balanced")),
            "full_gain_balanced": _iv((paired.get("full") or {}).get("balanced")),
            "baseline": (tok.get("baseline") or {}).get("mean"),
            "seed_balanced": (((tok.get("models") or {}).get("seed") or {}).get("balanced") or {}).get("mean"),
            "precision": [_mean(x[i].get("pseudo_label_precision") for x in loops if len(x) > i and x[i].get("kept"))
                          for i in range(n_loops)],
            "hard": sum(any(d.get("status") == "HARD" for d in x) for x in loops),
            "minutes": None if (wall := _mean(r.get("wall_s") for r in rs)) is None else wall / 60,
        })
    return sorted(out, key=lambda e: (e["line"], e["labeled"] or 0))


def _pts(iv: Interval | None) -> str:
    return "-" if iv is None else iv.fmt(digits=1)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def regime_lines(rows: Sequence[dict], groups: Sequence[dict]) -> list[str]:
    """The markdown section; nothing when the report sweeps no size key."""
    table = regime_table(rows, groups)
    if not table:
        return []
    out = ["## Data regime: the seed's size", "",
           "Per configuration (mean over its seeds): labelled pairs in the seed (loop 0's training pairs), pool and test "
           "pairs; SER final - seed and full - seed in points with 95% t-intervals over seeds (shared test pairs counted "
           "once), the gap closed with Fieller's interval; the same differences on the length-balanced accuracy (tokens: "
           "the mean of the chosen-longer and chosen-shorter strata), the length-only baseline and the seed's "
           "length-balanced accuracy; the precision of the pseudo-labels kept at each loop; runs that reached HARD; "
           "minutes per run. Figure: data_regime.png.", "",
           "| line | size | seeds | labelled | pool | test | seed acc % | SER - seed | full - seed | gap closed | "
           "SER - seed (len-bal.) | full - seed (len-bal.) | length-only % | seed len-bal. % | kept precision % per loop "
           "| reached HARD | min/run |",
           "|---" * 17 + "|"]
    num = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
    for e in table:
        minutes = "-" if e["minutes"] is None else f"{e['minutes']:.0f}"
        gap = e["gap_closed"].fmt(scale=100, digits=0).replace("+", "") + " %" if e["gap_closed"] else (
            "undefined" if e["gap_note"] else "-")
        prec = " / ".join(_pct(p) for p in e["precision"] if p is not None) or "-"
        out.append(f"| {e['line'] or '(default)'} | {', '.join(f'{k}={v}' for k, v in e['size'].items())} | "
                   f"{e['runs']} | {num(e['labeled'])} | {num(e['pool'])} | {num(e['test'])} | {_pct(e['seed_acc'])} | "
                   f"{_pts(e['gain'])} | {_pts(e['full_gain'])} | {gap} | {_pts(e['gain_balanced'])} | "
                   f"{_pts(e['full_gain_balanced'])} | {_pct(e['baseline'])} | {_pct(e['seed_balanced'])} | {prec} | "
                   f"{e['hard']}/{e['runs']} | {minutes} |")
    return out + [""]


def plot_regime(rows: Sequence[dict], groups: Sequence[dict], path: Path) -> str | None:
    """Three panels against the seed's labelled pairs (log x): SER - seed and full - seed on plain
    accuracy, the same on the length-balanced accuracy (95% CIs as bars; one colour per line, SER
    solid, full dashed), and the gap closed (Fieller's interval). None when written, else why skipped."""
    table = [e for e in regime_table(rows, groups) if e["labeled"]]
    if not table:
        return "not a sweep over data.limit or labeled_fraction"
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    lines = list(dict.fromkeys(e["line"] for e in table))
    colour = {ln: colormaps["tab10"](i % 10) for i, ln in enumerate(lines)}

    def draw(ax, field, label, style, shift):
        for ln in lines:
            pts = [e for e in table if e["line"] == ln and e[field] is not None]
            if not pts:
                continue
            x = [e["labeled"] * shift for e in pts]
            iv = [e[field] for e in pts]
            y = [100 * v.estimate for v in iv]
            err = [[100 * (v.estimate - v.low) for v in iv], [100 * (v.high - v.estimate) for v in iv]]
            model = pts[0]["model"]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, ls=style, color=colour[ln],
                        label=f"{label}: {model}" + (f" ({ln})" if len(lines) > 1 else ""))

    for ax, (a, b), title in ((axes[0], ("gain", "full_gain"), "test accuracy"),
                              (axes[1], ("gain_balanced", "full_gain_balanced"), "length-balanced test accuracy")):
        draw(ax, a, "SER - seed", "-", 0.97)
        draw(ax, b, "full - seed", "--", 1.03)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{title}: difference from the seed RM")
        ax.set_ylabel("points (95% CI)")
    draw(axes[2], "gap_closed", "gap closed", "-", 1.0)
    axes[2].axhline(100, color="grey", lw=0.8, ls=":")
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set_title("gap closed: (SER - seed) / (full - seed)")
    axes[2].set_ylabel("% (Fieller 95% CI; missing: full - seed not > 0)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("labelled pairs in the seed")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="best")
    cpus = sorted({r["hardware"] for r in rows if r.get("hardware")})
    if cpus:
        fig.suptitle("measured on " + "; ".join(cpus), fontsize="small")
    fig.savefig(path, dpi=120)
    return None
