"""Figures of the report, drawn with matplotlib on the Agg canvas (no pyplot): test accuracy per
loop (:func:`plot_accuracy`, Fig. 2), pairs per loop (:func:`plot_pairs`, Fig. 3) and score gaps
on the pool (:func:`plot_gaps`, Fig. 6), and for a sweep the SER gain (with its CI), kept pairs and
pseudo-label precision against each swept value (:func:`plot_sweep`), and the reliability diagram
of the pairwise confidence on validation (:func:`plot_reliability`), and the preference for the
longer answer per loop (:func:`plot_length`), and test accuracy against human labels used
(:func:`ser.report.acquisition.plot_labels`, runs with acquisition), and the differences from the seed
against its labelled pairs (:func:`ser.report.regime.plot_regime`, a sweep over the data's size); :func:`make_plots` writes them (``PNG_FILES``).
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from ser.report.acquisition import plot_labels
from ser.report.regime import plot_regime
from ser.report.replay import RANKINGS, curves
from ser.report.values import _frac_label, _num

PNG_FILES = ("accuracy_per_loop.png", "pairs_per_loop.png", "score_gaps.png", "sweep.png", "reliability.png",
             "coverage_precision.png", "length_per_loop.png", "accuracy_vs_human_labels.png",
             "data_regime.png")


def _figure(nrows=1, ncols=1, size=(8, 5)):
    """A figure on the Agg canvas (no pyplot: the caller's backend is left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _legend(fig, ax, inside_max: int = 5) -> None:
    """A legend on the axes when short, else outside on the right of the figure."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(handles) <= inside_max:
        ax.legend(fontsize="small", loc="best")
    else:
        w, h = fig.get_size_inches()
        fig.set_size_inches(w + 4, max(h, 0.25 * len(handles) + 1))
        fig.legend(handles, labels, fontsize="small", loc="outside right upper")


def _short(s: str, n: int = 48) -> str:
    """At most n characters, cut in the middle (configurations often differ at the end)."""
    s = s or "(default config)"
    if len(s) <= n:
        return s
    head = (n - 1) // 2
    return s[:head] + "…" + s[len(s) - (n - 1 - head):]


def _colours(groups: Sequence[dict]) -> dict[str, object]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {g["group"]: cmap(i % 10) for i, g in enumerate(groups)}


def _run_label(r: dict, many: bool) -> str:
    return _short(r["group"]) + ("" if many else f" seed={r['seed']}")


_MARKERS = "osD^vP*X<>"


def _markers(rows: Sequence[dict]) -> dict[str, str]:
    """A marker per run, different between the seeds of one group (the colour is the group's)."""
    seen: dict[str, int] = {}
    out = {}
    for r in rows:
        i = seen.get(r["group"], 0)
        seen[r["group"]] = i + 1
        out[r["run"]] = _MARKERS[i % len(_MARKERS)]
    return out


def plot_accuracy(rows: Sequence[dict], groups: Sequence[dict], path: Path) -> str | None:
    """Fig. 2: test accuracy vs cumulative training steps; seed/full means as dashed lines.
    Returns None when written, else why it was skipped."""
    runs = [r for r in rows if any(a is not None for a in r["loop_accs"])]
    if not runs and not any(g["full_acc"]["n"] for g in groups):
        return "no finished run has a test accuracy to plot"
    col, mk = _colours(groups), _markers(runs)
    fig, ax = _figure()
    ax = ax[0, 0]
    many = len(runs) > 8
    labelled: set = set()
    for r in runs:
        steps, total = [], 0
        for d in r["loops"]:
            total += int(d.get("steps") or 0)
            steps.append(d.get("global_step", total))
        acc = [None if a is None else 100 * a for a in r["loop_accs"]]
        lab = _run_label(r, many)
        ax.plot(steps, [math.nan if a is None else a for a in acc], marker=mk[r["run"]], color=col[r["group"]],
                label=None if lab in labelled else lab, alpha=0.85)
        labelled.add(lab)
    one = len(groups) == 1
    fracs = sorted({_frac_label(g["labeled_fraction"]) for g in groups})
    for g in groups:
        if g["seed_acc"]["mean"] is not None:
            ax.axhline(100 * g["seed_acc"]["mean"], ls="--", lw=1, color=col[g["group"]],
                       label=f"{_frac_label(g['labeled_fraction'])} seed mean" if one else None)
        if g["full_acc"]["mean"] is not None:
            ax.axhline(100 * g["full_acc"]["mean"], ls="-.", lw=1, color=col[g["group"]],
                       label="full 100% mean" if one else None)
    if not one:  # one legend entry per line style; the colour says which configuration
        from matplotlib.lines import Line2D

        if any(g["seed_acc"]["mean"] is not None for g in groups):
            ax.add_line(Line2D([], [], ls="--", lw=1, color="grey",
                               label=f"{'/'.join(fracs)} seed mean (colour of its configuration)"))
        if any(g["full_acc"]["mean"] is not None for g in groups):
            ax.add_line(Line2D([], [], ls="-.", lw=1, color="grey", label="full 100% mean (colour of its configuration)"))
    ax.set_title("Test accuracy per SER loop")
    ax.set_xlabel("cumulative training steps")
    ax.set_ylabel("pairwise test accuracy (%)")
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=120)
    return None


def plot_pairs(rows: Sequence[dict], groups: Sequence[dict], path: Path) -> str | None:
    """Fig. 3: training pairs per loop and pseudo-labeled pairs added for each loop."""
    runs = [r for r in rows if r["loops"]]
    if not runs:
        return "no finished run has loop diagnostics"
    col, mk = _colours(groups), _markers(runs)
    fig, axes = _figure(1, 2, size=(11, 4.5))
    a_train, a_new = axes[0]
    many = len(runs) > 8
    labelled: set = set()
    any_new = False
    for r in runs:
        lab = _run_label(r, many)
        label = None if lab in labelled else lab
        labelled.add(lab)
        loops = r["loops"]
        a_train.plot([d.get("loop", i) for i, d in enumerate(loops)], [d.get("train_pairs") for d in loops],
                     marker=mk[r["run"]], color=col[r["group"]], label=label, alpha=0.85)
        new = [(loops[k].get("loop", k), loops[k - 1]["kept"]) for k in range(1, len(loops)) if "kept" in loops[k - 1]]
        if new:
            any_new = True
            a_new.plot([x for x, _ in new], [y for _, y in new], marker=mk[r["run"]], ls="--", color=col[r["group"]],
                       label=label, alpha=0.85)
    a_train.set_title("Training pairs per loop")
    a_train.set_xlabel("loop (0 = seed)")
    a_train.set_ylabel("training pairs")
    a_new.set_title("Pseudo-labeled pairs added per loop")
    a_new.set_xlabel("loop")
    a_new.set_ylabel("new pairs")
    if not any_new:
        a_new.text(0.5, 0.5, "no pool was self-labeled", ha="center", va="center", transform=a_new.transAxes)
    from matplotlib.ticker import MaxNLocator

    for a in (a_train, a_new):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(fig, a_train)
    fig.suptitle("Data per SER loop")
    fig.savefig(path, dpi=120)
    return None


def plot_gaps(rows: Sequence[dict], groups: Sequence[dict], path: Path, max_panels: int = 12) -> str | None:
    """Fig. 6: distribution of |p1 - p2| on the pool per loop, one panel per group (seeds summed)."""
    panels: dict[str, dict[int, tuple[list, list, set]]] = {}
    for r in rows:
        for i, d in enumerate(r["loops"]):
            h, e = d.get("gap_hist"), d.get("gap_edges")
            if not h or not e or len(e) != len(h) + 1:
                continue
            per = panels.setdefault(r["group"], {})
            k = d.get("loop", i)
            if k in per and len(per[k][0]) == len(h):
                per[k][0][:] = [a + b for a, b in zip(per[k][0], h)]
            else:
                per[k] = (list(h), list(e), set())
            if d.get("status"):
                per[k][2].add(str(d["status"]))
    if not panels:
        return "no loop self-labeled its pool (no gap_hist in any finished run)"
    names = [g["group"] for g in groups if g["group"] in panels][:max_panels]
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = _figure(nrows, ncols, size=(5.5 * ncols, 4 * nrows))
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    tau = {g["group"]: g.get("tau_delta") for g in groups}
    for idx, name in enumerate(names):
        ax = axes[idx // ncols, idx % ncols]
        per = panels[name]
        kmax = max(per) or 1
        for k in sorted(per):
            h, e, sts = per[k]
            total = sum(h) or 1
            ax.stairs([c / total for c in h], e, color=cmap(k / kmax if kmax else 0), lw=1.5,
                      label=f"after loop {k}" + (f" ({'/'.join(sorted(sts))})" if sts else ""))
        t = _num(tau.get(name))
        if t is not None:
            ax.axvline(t, ls=":", color="grey", label=f"τ_Δ = {t:g}")
        ax.set_title(textwrap.fill(_short(name, 150), 50), fontsize="small")
        ax.set_xlabel("|p1 - p2| on the pool")
        ax.set_ylabel("fraction of pool pairs")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    for idx in range(len(names), nrows * ncols):
        axes[idx // ncols, idx % ncols].set_visible(False)
    title = "Score gaps |p1 - p2| per loop"
    if len(panels) > len(names):
        title += f" (first {len(names)} of {len(panels)} configurations)"
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    return None


def swept_values(groups: Sequence[dict]) -> dict[str, list]:
    """Override keys whose value differs between groups -> each group's value (None: not set)."""
    from ser.report.runs import _split_overrides

    parsed = [dict(i.split("=", 1) for i in _split_overrides(g["group"] or "") if "=" in i) for g in groups]
    keys = sorted({k for p in parsed for k in p})
    return {k: [p.get(k) for p in parsed] for k in keys if len({p.get(k) for p in parsed}) > 1}


def _as_number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def plot_sweep(rows: Sequence[dict], groups: Sequence[dict], path: Path) -> str | None:
    """One column per swept key: SER - seed (mean over seeds; bars: the seeds x pairs 95% CI, else
    ± std), pseudo-labeled pairs kept, and their precision, against the key's value."""
    swept = swept_values(groups)
    if not swept:
        return "not a sweep (one configuration)"
    keys = list(swept)[:4]
    fig, axes = _figure(3, len(keys), size=(4.2 * len(keys), 8.5))
    for col, key in enumerate(keys):
        vals = swept[key]
        numeric = all(_as_number(v) is not None for v in vals if v is not None)
        cats = sorted({str(v) for v in vals}, key=lambda v: (_as_number(v) is None, _as_number(v) or 0, v))
        xs = [(_as_number(v) if numeric and v is not None else cats.index(str(v))) for v in vals]
        for row, (field, label) in enumerate((("gain", "SER - seed (pts)"), ("kept", "pairs kept"),
                                              ("kept_precision", "pseudo-label precision %"))):
            ax = axes[row][col]
            for g, x in zip(groups, xs):
                st = g.get(field) or {}
                if not st.get("n") or st.get("mean") is None:
                    continue
                scale = 1 if field == "kept" else 100
                y = scale * st["mean"]
                ci = (((g.get("paired") or {}).get("test") or {}).get("ser") or {}).get("gain") if field == "gain" else None
                if ci:
                    err = [[y - 100 * ci["low"]], [100 * ci["high"] - y]]
                else:
                    err = None if st.get("std") is None else scale * st["std"]
                ax.errorbar([x], [y], yerr=err, fmt="o", capsize=3, color="C0")
            if field == "gain":
                ax.axhline(0, color="grey", lw=0.8)
            ax.set_ylabel(label)
            if not numeric:
                ax.set_xticks(range(len(cats)), [_short(c, 16) for c in cats], rotation=30)
            ax.set_xlabel(key if row == 2 else "")
    fig.suptitle("Sweep: SER gain (95% CI over seeds and pairs, else ± std),\nkept pairs and their precision", fontsize=10)
    fig.savefig(path, dpi=120)
    return None


def _pooled_bins(bin_lists: Sequence[Sequence[dict]]) -> tuple[list[float], list[float], list[int]]:
    """Bins of several runs pooled by their lower edge: (mean confidence, accuracy, n) per bin."""
    acc: dict[float, list[float]] = {}
    for bins in bin_lists:
        for b in bins:
            a = acc.setdefault(round(b["low"], 6), [0.0, 0.0, 0])
            a[0] += b["confidence"] * b["n"]
            a[1] += b["accuracy"] * b["n"]
            a[2] += b["n"]
    keys = sorted(acc)
    return [acc[k][0] / acc[k][2] for k in keys], [acc[k][1] / acc[k][2] for k in keys], [acc[k][2] for k in keys]


def plot_reliability(rows: Sequence[dict], groups: Sequence[dict], path: Path, max_panels: int = 6) -> str | None:
    """Per configuration: accuracy against the (cross-fitted, temperature-scaled) pairwise
    confidence on validation, for the seed RM and the last loop, pooled over seeds."""
    panels = []
    for g in groups:
        rs = [r for r in rows if r["group"] == g["group"] and r["loops"] and r["loops"][0].get("reliability")]
        if rs:
            panels.append((g, rs))
    if not panels:
        return "no run logged reliability bins (runs from before calibration diagnostics)"
    panels = panels[:max_panels]
    fig, axes = _figure(1, len(panels), size=(4.2 * len(panels), 4.2))
    for ax, (g, rs) in zip(axes[0], panels):
        ax.plot([0.5, 1], [0.5, 1], color="grey", lw=0.8, ls="--", label="calibrated")
        for label, pick in (("seed RM (loop 0)", lambda r: r["loops"][0]), ("last loop", lambda r: r["loops"][-1])):
            bins = [pick(r).get("reliability") or [] for r in rs]
            x, y, n = _pooled_bins(bins)
            ece = [pick(r).get("val_ece") for r in rs if pick(r).get("val_ece") is not None]
            tag = f" (ECE {100 * sum(ece) / len(ece):.1f})" if ece else ""
            ax.plot(x, y, marker="o", label=label + tag)
        ax.set_xlim(0.5, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence max(P, 1-P)")
        ax.set_ylabel("accuracy on validation")
        ax.set_title(_short(g["group"], 40), fontsize="small")
        ax.legend(fontsize="small")
    fig.suptitle("Reliability of the pairwise confidence (T fitted on the other half of validation)")
    fig.savefig(path, dpi=120)
    return None


def plot_coverage(rows: Sequence[dict], groups: Sequence[dict], path: Path, max_panels: int = 6) -> str | None:
    """Per configuration and for loops 0 and 1: the hidden-label precision of the top pairs of the
    pool against the share of the pool kept, for each ranking (mean over seeds), with each run's own
    selection as a point (offline replay of the saved pool scores: ``ser.report.replay``)."""
    panels = []
    for g in groups:
        per_run = [r.get("replay") or [] for r in rows if r["group"] == g["group"]]
        if any(per_run):
            panels.append((g, per_run))
    if not panels:
        return "no run saved pool scores of a loop that kept pairs"
    panels = panels[:max_panels]
    fig, axes = _figure(2, len(panels), size=(4.2 * len(panels), 7.6))
    for col, (g, per_run) in enumerate(panels):
        for row, loop in enumerate((0, 1)):
            ax = axes[row][col]
            c = curves(per_run, loop=loop)
            for name, y in c["curves"].items():
                ax.plot(100 * c["grid"], 100 * y, label=RANKINGS[name].replace("top k, ", "").replace("top k by ", ""))
            if c["points"]:
                x, y = zip(*c["points"])
                ax.scatter([100 * v for v in x], [100 * v for v in y], color="black", zorder=3, s=18,
                           label="the runs' own selection")
            ax.set_xlabel(f"pool kept % (loop {loop})")
            ax.set_ylabel("pseudo-label precision %")
            ax.set_ylim(40, 100)
            ax.set_title(_short(g["group"], 40), fontsize="small")
            if c["curves"]:
                ax.legend(fontsize="x-small")
    fig.suptitle("Kept-pair precision against coverage\n(per ranking of the pool, mean over seeds)")
    fig.savefig(path, dpi=120)
    return None


#: the left panel of length_per_loop.png: field -> (line style, marker, label)
_LENGTH_LINES = {"pool_prefers_longer": ("-", "o", "RM prefers the longer answer (pool)"),
                 "kept_prefers_longer": ("--", "s", "kept pairs: RM's chosen is the longer"),
                 "test_prefers_longer": (":", "^", "RM prefers the longer answer (test)"),
                 "pool_labels_longer": ("-.", "x", "hidden labels: the longer is better (pool)")}


def plot_length(rows: Sequence[dict], groups: Sequence[dict], path: Path, max_groups: int = 8) -> str | None:
    """Does self-labelling amplify the preference for the longer answer? Per loop (mean over seeds,
    tokens): the RM's preference for the longer answer on the pool, on the pairs it kept and on test,
    with the hidden labels' share on the pool as the reference; and the test length-balanced
    accuracy (chance 50%). One colour per configuration."""
    from matplotlib.lines import Line2D

    def series(g, field):
        loops = (g.get("length") or {}).get("loops") or []
        pts = [(k, 100 * row[field]["mean"]) for k, row in enumerate(loops) if row[field]["mean"] is not None]
        return [k for k, _ in pts], [y for _, y in pts]

    shown = [g for g in groups if any(series(g, f)[0] for f in (*_LENGTH_LINES, "test_length_balanced"))][:max_groups]
    if not shown:
        return "no run has length figures per loop (answer lengths were not saved)"
    col = _colours(groups)
    fig, axes = _figure(1, 2, size=(12, 4.8))
    pref, bal = axes[0]
    one = len(shown) == 1
    for g in shown:
        for field, (ls, marker, label) in _LENGTH_LINES.items():
            x, y = series(g, field)
            if x:
                pref.plot(x, y, ls=ls, marker=marker, color=col[g["group"]], label=label if one else None, alpha=0.85)
        x, y = series(g, "test_length_balanced")
        if x:
            bal.plot(x, y, marker="o", color=col[g["group"]], label=_short(g["group"]), alpha=0.85)
    if not one:  # line styles say which quantity, colours which configuration
        for ls, marker, label in _LENGTH_LINES.values():
            pref.add_line(Line2D([], [], ls=ls, marker=marker, color="grey", label=label))
    pref.axhline(50, color="grey", lw=0.8)
    bal.axhline(50, color="grey", lw=0.8, ls="--", label="chance (any length-only rule)")
    pref.set_title("Preference for the longer answer")
    pref.set_ylabel("% of pairs of unequal length")
    bal.set_title("Test length-balanced accuracy")
    bal.set_ylabel("mean of the two length strata (%)")
    from matplotlib.ticker import MaxNLocator

    for a in (pref, bal):
        a.set_xlabel("after loop (0 = seed RM)")
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    pref.legend(fontsize="x-small", loc="best")
    _legend(fig, bal)
    fig.suptitle("Length per SER loop (tokens, mean over seeds)")
    fig.savefig(path, dpi=120)
    return None


def make_plots(rows: Sequence[dict], groups: Sequence[dict], out_dir: Path) -> dict[str, str]:
    """Write the figures; returns file -> "" (written) or "skipped: why" (and prints why)."""
    out_dir = Path(out_dir)
    notes = {}
    for fname, fn in zip(PNG_FILES, (plot_accuracy, plot_pairs, plot_gaps, plot_sweep, plot_reliability, plot_coverage,
                                     plot_length, plot_labels, plot_regime)):
        target = out_dir / fname
        why = fn(rows, groups, target)
        if why:
            if target.exists():  # an old figure from an earlier report would mislead
                target.unlink()
            notes[fname] = f"skipped: {why}"
            print(f"{fname} skipped: {why}")
        else:
            notes[fname] = ""
    return notes
