"""Human labels against test accuracy (issue 25, ``acquisition``): what a labelling budget buys.

- :func:`row_fields`: per run, the human labels it used (its seed pairs plus the pairs it asked
  for), its method (``SER``, ``seed only``, ``SER + uncertain``, ``seed + random (no self-labels)``,
  ...) and its budget.
- :func:`acquisition_table`: per configuration (runs that differ only by seed), the human labels
  used and the test accuracy of the final model (for SER alone also its loop 0, the seed RM), mean over seeds with a 95% t-interval
  (:func:`ser.significance.seed_moments`: seeds that scored the same test pairs share that noise),
  and the full-data RM's the same way.
- :func:`acquisition_comparisons`: the question the budget asks, paired on the same seeds and test
  pairs (:func:`ser.significance.across_seeds`): at each budget, every method minus SER alone, and
  ``uncertain`` / ``disagree`` minus the ``random`` control; one Holm family per data set.
- :func:`acquisition_lines`: both tables in markdown; :func:`plot_labels`: the figure, test accuracy
  against human labels used, one line per method and data set, CIs as error bars, the full-data RM
  as the ceiling.

Shown when at least one run of the report used acquisition.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ser.report.compare import _aligned
from ser.report.values import _num
from ser.significance import N_BOOT, Interval, across_seeds, holm, seed_moments, t_interval

PNG_FILE = "accuracy_vs_human_labels.png"


def row_fields(results: dict) -> dict:
    """``human_seed``, ``human_acquired``, ``human_labels`` (their sum), ``method``, ``budget``."""
    phases = results.get("phases") or {}
    name = "ser" if phases.get("ser") else "seed"
    main = phases.get(name) or {}
    acq = results.get("acquisition") or {}
    seed = (main.get("counts") or {}).get("labeled")
    acquired = (main.get("human_labels") or {}).get("acquired", 0)
    if acq.get("rule", "none") != "none":
        method = (f"SER + {acq['rule']}" if acq.get("self_label", True)
                  else f"seed + {acq['rule']} (no self-labels)")
    else:
        method = "SER" if name == "ser" else "seed only"
    return {"human_seed": seed, "human_acquired": acquired,
            "human_labels": None if seed is None else seed + acquired, "method": method,
            "budget": acq.get("budget") if acq.get("rule", "none") != "none" else None,
            "uses_acquisition": acq.get("rule", "none") != "none"}


def accuracy_interval(outcomes: Sequence[dict], model: str) -> Interval | None:
    """Mean test accuracy of ``model`` over the runs' test outcomes with its 95% t-interval; None
    when no run has them."""
    tests = [o.get("test") or {} for o in outcomes]
    tests = [t for t in tests if model in t]
    if not tests:
        return None
    keys = [t.get("key") for t in tests]
    m = seed_moments([np.asarray(t[model], float) for t in tests], keys if all(k is not None for k in keys) else None)
    return t_interval(float(m.estimate[0]), m.se(0), float(m.df[0]), m.k)


def acquisition_table(rows: Sequence[dict], groups: Sequence[dict]) -> list[dict]:
    """One entry per configuration: method, data, budget, seeds, human labels (seed, asked, total:
    means), the final model's test accuracy and the full-data RM's, each an :class:`Interval` or None."""
    out = []
    for g in groups:
        rs = [r for r in rows if r["run"] in g["runs"] and r["group"] == g["group"]]
        if not rs:
            continue
        outcomes = [r.get("outcomes") or {} for r in rs]
        model = "ser" if all("ser" in (o.get("test") or {}) for o in outcomes) else "seed"
        mean = lambda f: float(np.mean(v)) if (v := [x for x in (_num(r.get(f)) for r in rs) if x is not None]) else None  # noqa: E731
        entry = {"group": g["group"], "method": rs[0]["method"], "data": g["data"], "budget": rs[0].get("budget"),
                 "n": len(rs), "human_seed": mean("human_seed"), "human_acquired": mean("human_acquired"),
                 "human_labels": mean("human_labels"), "acc": accuracy_interval(outcomes, model),
                 "full": accuracy_interval(outcomes, "full")}
        out.append(entry)
        if entry["method"] == "SER":  # its loop 0: the seed RM, on the seed labels alone
            out.append({**entry, "method": "seed RM", "human_acquired": 0, "human_labels": entry["human_seed"],
                        "acc": accuracy_interval(outcomes, "seed")})
    return out


def _by_seed(rows: Sequence[dict], group: str) -> dict:
    return {r["seed"]: r for r in rows if r["group"] == group}


def _paired(rows: Sequence[dict], mine: str, ref: str, n_boot: int) -> tuple[Interval | None, int]:
    """Configuration ``mine``'s final model minus ``ref``'s on the seeds both ran, each seed's test
    pairs matched by key (:func:`ser.report.compare._aligned`), and how many seeds; (None, 0)
    without a matched seed."""
    a, b = _by_seed(rows, mine), _by_seed(rows, ref)
    aligned = [al for s in sorted(a, key=str) if s in b and (al := _aligned(a[s], b[s])) is not None]
    if not aligned:
        return None, 0
    return across_seeds([x[0] for x in aligned], [x[1] for x in aligned], keys=[x[2] for x in aligned],
                        n_boot=n_boot).gain, len(aligned)


def acquisition_comparisons(rows: Sequence[dict], groups: Sequence[dict], n_boot: int = N_BOOT) -> list[dict]:
    """Per data set and budget: each method minus SER alone (same data, no acquisition) and the
    chosen-pair rules minus ``SER + random`` at the same budget, on the same seeds and test pairs.
    Entries ``{"data", "budget", "method", "reference", "diff": Interval or None, "seeds", "p_holm"}``; the
    p-values of one data set form one Holm family."""
    table = [t for t in acquisition_table(rows, groups) if t["method"] != "seed RM"]
    out = []
    for data in dict.fromkeys(str(t["data"]) for t in table):
        mine = [t for t in table if str(t["data"]) == data]
        ser = next((t for t in mine if t["method"] == "SER"), None)
        family = []
        for budget in sorted({t["budget"] for t in mine if t["budget"] is not None}):
            at = [t for t in mine if t["budget"] == budget]
            control = next((t for t in at if t["method"] == "SER + random"), None)
            for t in at:
                if ser is not None:
                    family.append((t, ser))
                if control is not None and t["method"] in ("SER + uncertain", "SER + disagree"):
                    family.append((t, control))
        entries = []
        for t, r in family:
            diff, seeds = _paired(rows, t["group"], r["group"], n_boot)
            entries.append({"data": data, "budget": t["budget"], "method": t["method"], "reference": r["method"],
                            "diff": diff, "seeds": seeds})
        for e, p in zip(entries, holm([e["diff"] and e["diff"].p for e in entries])):
            e["p_holm"] = p
        out += entries
    return out


def _budget(b) -> str:
    """A budget as configured: a count, or a share of the initial pool in %."""
    if b is None:
        return "-"
    return f"{int(b)}" if b >= 1 else f"{100 * b:.4g}% of pool"


def _ci(iv: Interval | None) -> str:
    return "-" if iv is None else f"{100 * iv.estimate:.2f} [{100 * iv.low:.2f}, {100 * iv.high:.2f}]"


def acquisition_lines(rows: Sequence[dict], groups: Sequence[dict], n_boot: int = N_BOOT) -> list[str]:
    """The markdown section; nothing when no run used acquisition."""
    if not any(r.get("uses_acquisition") for r in rows):
        return []
    out = ["## Human labels and test accuracy (acquisition)", "",
           "Per configuration: human labels used (seed pairs + pairs asked for, mean over seeds) and the final "
           "model's pairwise test accuracy in %, mean over seeds with its 95% t-interval (seeds scoring the same "
           "test pairs share that noise); the full-data RM the same way, the ceiling.", "",
           "| configuration | method | data | budget | seeds | seed labels | asked | human labels | test acc % [95% CI] "
           "| full-data acc % [95% CI] |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in acquisition_table(rows, groups):
        num = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
        out.append(f"| {t['group'] or '(default config)'} | {t['method']} | {t['data']} | "
                   f"{_budget(t['budget'])} | {t['n']} | {num(t['human_seed'])} | "
                   f"{num(t['human_acquired'])} | {num(t['human_labels'])} | {_ci(t['acc'])} | {_ci(t['full'])} |")
    comps = acquisition_comparisons(rows, groups, n_boot=n_boot)
    if not comps:
        return out + [""]
    out += ["", "Paired on the same seeds and test pairs (final model minus the reference's, points, 95% t-interval "
                "over seeds with shared test pairs counted once; one seed: paired bootstrap and McNemar's exact p). "
                "The comparisons of one data set are one Holm family.", "",
            "| data | budget | method | minus | difference (pts) [95% CI] | seeds | p | p (Holm) | holds at 95% |",
            "|---|---|---|---|---|---|---|---|---|"]
    for data in dict.fromkeys(c["data"] for c in comps):
        fam = [c for c in comps if c["data"] == data]
        size = sum(c["p_holm"] is not None for c in fam)
        for c in fam:
            d, ph = c["diff"], c["p_holm"]
            holds = "-" if d is None or ph is None else "yes" if ph < 0.05 and d.excludes_zero() else "no"
            cells = ("-", "-", "-", "-") if d is None else (
                d.fmt(digits=2), str(c["seeds"]), "-" if d.p is None else f"{d.p:.2g}", "-" if ph is None else f"{ph:.2g} (of {size})")
            out.append(f"| {data} | {_budget(c['budget'])} | {c['method']} | {c['reference']} | "
                       + " | ".join(cells) + f" | {holds} |")
    return out + [""]


def plot_labels(rows: Sequence[dict], groups: Sequence[dict], path: Path) -> str | None:
    """Test accuracy against human labels used: a panel per data set, a line per method (its
    configurations ordered by labels, drawn slightly aside from the other methods'), 95% CIs as error
    bars, the full-data RM as a dotted ceiling with its CI band. Returns None when written, else why it was skipped."""
    if not any(r.get("uses_acquisition") for r in rows):
        return "no run used acquisition"
    table = [t for t in acquisition_table(rows, groups) if t["acc"] is not None and t["human_labels"] is not None]
    if not table:
        return "no run saved per-pair test scores"
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    datas = sorted({str(t["data"]) for t in table})
    fig = Figure(figsize=(6 * len(datas), 4.5), layout="constrained")  # the Agg canvas, as ser.report.plots
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(datas), squeeze=False)
    methods = sorted({t["method"] for t in table})

    colour = {m: colormaps["tab10"](i % 10) for i, m in enumerate(methods)}
    for ax, data in zip(axes[0], datas):
        mine = [t for t in table if str(t["data"]) == data]
        # methods at the same budget use the same labels: each is drawn a little aside (0.5% of the
        # largest count per method) so their error bars stay apart
        dodge = 0.005 * max(t["human_labels"] for t in mine)
        for i, m in enumerate(methods):
            pts = sorted((t for t in mine if t["method"] == m), key=lambda t: t["human_labels"])
            if not pts:
                continue
            x = [t["human_labels"] + (i - (len(methods) - 1) / 2) * dodge for t in pts]
            y = [100 * t["acc"].estimate for t in pts]
            err = [[100 * (t["acc"].estimate - t["acc"].low) for t in pts], [100 * (t["acc"].high - t["acc"].estimate) for t in pts]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colour[m], label=m)
        full = [t["full"] for t in mine if t["full"] is not None]
        if full:
            best = max(full, key=lambda iv: iv.n)  # the full-data RM of the configuration with the most seeds
            ax.axhline(100 * best.estimate, ls=":", color="black", label="full-data RM (ceiling)")
            ax.axhspan(100 * best.low, 100 * best.high, color="grey", alpha=0.15)
        ax.set_title(f"{data}: test accuracy vs human labels")
        ax.set_xlabel("human labels used (seed pairs + pairs asked for)")
        ax.set_ylabel("pairwise test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    cpus = sorted({r["hardware"] for r in rows if r.get("hardware")})
    if cpus:
        fig.suptitle("measured on " + "; ".join(cpus), fontsize="small")
    fig.savefig(path, dpi=120)
    return None
