"""Tables of the report: one run's Table 1 (:func:`run_rows`, :func:`format_run_table` with its
:func:`time_breakdown`, printed by ``ser.train``), the many-run markdown report
(:func:`format_markdown`: per-run table, one Table 1 per configuration via :func:`table1_rows`
and :func:`format_stat` with its paired CIs, verdicts (Holm-adjusted across configurations) and gap
closed, then its length control on test and per loop (:mod:`ser.report.length`), the configurations
compared, optionally the power table, unfinished runs, figures) and
``runs.csv`` (:func:`write_csv`).
"""
from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ser.report.acquisition import acquisition_lines
from ser.report.regime import regime_lines
from ser.report.compare import compare_groups, compare_lines
from ser.report.length import length_lines, loop_lines
from ser.report.paired import statistics_lines
from ser.report.power import power_lines
from ser.report.replay import replay_lines
from ser.report.runs import sweep_order
from ser.report.stats import ROW_FIELDS, aggregate, summary_rows
from ser.report.values import _frac_label, _num, _pct, _plural, format_stat
from ser.significance import N_BOOT


def run_rows(results: dict) -> list[dict]:
    """Rows of Table 1 for one run: seed, loop 1..n, SER final, full."""
    rows = []
    phases = results["phases"]
    main = phases.get("ser") or phases.get("seed")
    if main:
        hist = main["loops"]
        frac = main["labeled_fraction"]
        for k, d in enumerate(hist):
            prev = hist[k - 1] if k else {}
            rows.append({
                "row": f"seed ({frac:.0%} labeled)" if k == 0 else f"loop {k}",
                "status": prev.get("status", "-") if k else "-",
                "new_pairs": prev.get("kept", main["counts"]["labeled"]) if k else main["counts"]["labeled"],
                "precision": prev.get("pseudo_label_precision") if k else None,
                "train_pairs": d["train_pairs"], "steps": d["steps"],
                "val_acc": d.get("val_acc"), "test_acc": d["test_acc"], "time_s": d["train_s"] + d.get("eval_s", 0),
                **{k: v for k, v in d.items() if k.endswith("_acc") and k not in ("val_acc", "test_acc")},
            })
        if len(hist) > 1:
            sel = main.get("selected_loop", len(hist) - 1)
            how = "last" if main.get("select", "last") == "last" else f"best val: loop {sel}"
            rows.append(dict(rows[sel], row=f"SER final ({how})"))
    full = phases.get("full")
    if full:
        d = full["loops"][-1]
        rows.append({"row": "full (100% labeled)", "status": "-", "new_pairs": full["counts"]["labeled"], "precision": None,
                     "train_pairs": d["train_pairs"], "steps": d["steps"], "val_acc": d.get("val_acc"),
                     "test_acc": d["test_acc"], "time_s": d["train_s"] + d.get("eval_s", 0),
                     **{k: v for k, v in d.items() if k.endswith("_acc") and k not in ("val_acc", "test_acc")}})
    return rows


def format_run_table(results: dict) -> str:
    rows = run_rows(results)
    extra = list(dict.fromkeys(k for r in rows for k in r if k.endswith("_acc") and k not in ("val_acc", "test_acc")))
    head = ["", "status", "new pairs", "pseudo-label prec %", "train pairs", "steps", "val acc %", "test acc %",
            *[f"{k[:-4]} acc %" for k in extra], "time s"]
    lines = [f"SER results: model={results['model']} data={results['data']} seed={results['seed']}",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["row"], str(r["status"]), str(r["new_pairs"]), _pct(r["precision"]),
                                        str(r["train_pairs"]), str(r["steps"]), _pct(r["val_acc"]), _pct(r["test_acc"]),
                                        *[_pct(r.get(k)) for k in extra], f"{r['time_s']:.0f}"]) + " |")
    stops = [p["loops"][-1].get("stop") for p in results["phases"].values() if p["loops"]]
    lines.append(f"stopped by: {', '.join(str(s) for s in stops)}; wall time {results.get('wall_s', float('nan')):.0f} s")
    if results.get("precision"):
        pr = results["precision"]
        lines.append(f"precision {pr['precision']} ({pr['reason']}) on {pr['hardware']}")
    lines.extend(statistics_lines(results.get("statistics") or {}))
    lines.extend(time_breakdown(results))
    return "\n".join(lines)


def time_breakdown(results: dict) -> list[str]:
    """One line per phase: where the wall time went (load, tokenize, train/label per loop, evaluate, export)."""
    out = []
    for name, p in results["phases"].items():
        t, loops = p.get("timings", {}), p["loops"]
        train = [h["train_s"] for h in loops]
        label = [h["label_s"] for h in loops if h.get("label_s") is not None]
        evaluate = sum(h.get("eval_s", 0) for h in loops) - sum(label)
        per = lambda xs: "/".join(f"{x:.0f}" for x in xs)  # noqa: E731
        out.append(f"time {name}: load {t.get('data_load_s', 0):.1f} s, tokenize {t.get('tokenize_s', 0):.1f} s, "
                   f"model {t.get('model_s', 0):.1f} s, train {sum(train):.0f} s ({per(train)})"
                   + (f", label {sum(label):.0f} s ({per(label)})" if label else "")
                   + f", evaluate {evaluate:.0f} s, export {t.get('export_s', 0):.1f} s")
    return out


def _cell(x) -> str:
    return "-" if x is None or x == "" else str(x).replace("|", "\\|")


def _fmt(x, digits=2) -> str:
    x = _num(x)
    return "-" if x is None else f"{x:.{digits}f}"


def table1_rows(group: dict) -> list[tuple[str, dict, dict | None]]:
    """The paper's Table 1 rows for one group: (label, test accuracy stat, gain-vs-seed stat)."""
    rows = []
    if group["loop_acc"]:
        rows.append((f"{_frac_label(group['labeled_fraction'])} seed", group["loop_acc"][0], None))
        for k in range(1, len(group["loop_acc"])):
            rows.append((f"loop {k}", group["loop_acc"][k], group["loop_gain"][k]))
    elif group["seed_acc"]["n"]:
        rows.append((f"{_frac_label(group['labeled_fraction'])} seed", group["seed_acc"], None))
    if group["ser_acc"]["n"]:
        rows.append(("SER final", group["ser_acc"], group["gain"]))
    if group["full_acc"]["n"]:
        rows.append(("full 100%", group["full_acc"], group["full_gain"]))
    return rows


def hardware(rows: Sequence[dict]) -> str:
    """The machines the finished runs ran on (results.json ``precision.hardware``, e.g. "AMD EPYC
    (flags: avx512_bf16)") with their run counts; "" when no run recorded one."""
    counts = Counter(r["hardware"] for r in rows if r.get("hardware"))
    return "; ".join(f"{h} ({_plural(n, 'run')})" for h, n in counts.items())


def format_markdown(runs: Sequence[dict], plots: dict[str, str] | None = None, source=None,
                    by: str | Sequence[str] | Callable[[dict], object] = "group", n_boot: int = N_BOOT,
                    power: bool = False, rows: list[dict] | None = None, groups: list[dict] | None = None) -> str:
    """The report: per-run table, one Table 1 per group (test accuracy mean ± std (n)), the
    configurations compared, with ``power`` the test pairs x seeds needed for a given gain
    (:mod:`ser.report.power`), the unfinished runs with what is missing, and (``plots``: file -> ""
    or "skipped: why") the figures. ``source`` (the report's input folder) is named by its folder
    name only: a generated report holds no machine path. ``n_boot``: resamples of every bootstrap.
    ``rows`` / ``groups``: :func:`summary_rows` and :func:`aggregate` (by ``by``) of ``runs`` when the
    caller has them already (each reads every run's score files)."""
    rows = summary_rows(runs, n_boot=n_boot) if rows is None else rows
    groups = aggregate(rows, by=by, n_boot=n_boot) if groups is None else groups
    unfinished = [r for r in runs if r["status"] != "finished"]
    name = Path(source).resolve().name if source is not None else None
    out = [f"# SER report{f': {name}' if name else ''}", "",
           f"{_plural(len(runs), 'run')}: {len(rows)} finished, {len(unfinished)} unfinished. "
           "Accuracies are pairwise test accuracies in %; gain in percentage points; "
           "gap closed = (SER - seed) / (full - seed).", ""]
    cpus = hardware(rows)
    if cpus:
        out[-1:-1] = [f"Measured on: {cpus}.", ""]
    if rows:
        head = ["run", "model", "data", "seed", "labeled %", "rule", "τ_high", "τ_low", "τ_Δ", "min count",
                "seed acc %", "SER acc %", "full acc %", "gain pts", "gain 95% CI", "McNemar p", "gap closed %", "loops",
                "kept pairs", "statuses", "wall s"]
        out += ["## Runs", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            label = r["run"] if not r["overrides"] or r["overrides"] == r["run"] else f"{r['run']} ({r['overrides']})"
            out.append("| " + " | ".join(_cell(c) for c in [
                label, r["model"], r["data"], r["seed"], _pct(r["labeled_fraction"]), r["rule"], r["tau_high"],
                r["tau_low"], r["tau_delta"], r["min_count"], _pct(r["seed_acc"]), _pct(r["ser_acc"]),
                _pct(r["full_acc"]), "-" if r["gain"] is None else f"{100 * r['gain']:+.2f}",
                "-" if r.get("gain_low") is None else f"[{100 * r['gain_low']:+.1f}, {100 * r['gain_high']:+.1f}]",
                _fmt(r.get("gain_p"), 3), _pct(r["gap_closed"]),
                r["n_loops"], r["kept"], r["statuses"] or "-", _fmt(r["wall_s"], 0)]) + " |")
        out += ["", "## Results by configuration (Table 1 layout)", "",
                "Runs that differ only by seed are grouped; cells are mean ± sample std (n runs).", ""]
        for g in groups:
            title = g["group"] or "(default config)"
            out += [f"### {title}", "",
                    f"model {g['model']}, data {g['data']}, {_plural(g['n'], 'run')} (seeds "
                    f"{', '.join(str(s) for s in g['seeds'])})", "",
                    "| | status | pseudo-label prec % | test acc % | vs seed (pts) | vs seed, paired 95% CI |",
                    "|---|---|---|---|---|---|"]
            test = (g.get("paired") or {}).get("test", {})
            cis = {"SER final": (test.get("ser") or {}).get("gain"), "full 100%": (test.get("ser") or {}).get("full_gain")
                   or (test.get("full") or {}).get("gain"), "SER (best val loop)": (test.get("ser_best_val") or {}).get("gain")}
            t1 = table1_rows(g)
            if g.get("ser_best_val_acc", {}).get("n") and g["ser_acc"]["n"]:  # the validation-selected alternative
                at = next(i for i, row in enumerate(t1) if row[0] == "SER final") + 1
                t1.insert(at, ("SER (best val loop)", g["ser_best_val_acc"], None))
            for label, acc, gain in t1:
                ci = cis.get(label)
                k = int(label.split()[1]) if label.startswith("loop ") else None
                status = g["loop_status"][k] if k is not None and k < len(g.get("loop_status", [])) else "-"
                prec = g["loop_precision"][k] if k is not None and k < len(g.get("loop_precision", [])) else None
                out.append(f"| {label} | {status} | {format_stat(prec)} | {format_stat(acc)} | "
                           f"{format_stat(gain, signed=True) if gain else '-'} | {_fmt_interval(ci)} |")
            extra = [f"gain (SER - seed): {format_stat(g['gain'], signed=True)} pts"] if g["gain"]["n"] else []
            if g.get("gap_closed_of_means") is not None:
                per_run = ", ".join("-" if v is None else f"{100 * v:.0f}%" for v in g["gap_closed_runs"])
                extra.append(f"gap closed: {100 * g['gap_closed_of_means']:.1f}% of the mean gap (per run: {per_run})")
            if g["kept"]["n"]:
                extra.append(f"pseudo-labeled pairs kept: {format_stat(g['kept'], scale=1, digits=0)}")
            ece = [e for e in g.get("loop_ece", []) if e["n"]]
            if ece:
                extra.append("validation ECE of the pairwise confidence (cross-fitted T), per loop: "
                             + ", ".join(format_stat(e, digits=1) for e in ece))
            if extra:
                out += ["", "; ".join(extra)]
            out += _paired_lines(g)
            out += length_lines(g, seed_label=f"{_frac_label(g['labeled_fraction'])} seed")
            out += loop_lines(g)
            out += replay_lines(g.get("replay"))
            out.append("")
        out += compare_lines(compare_groups(rows, groups, sweep_order(source), n_boot=n_boot), format_stat)
        out += acquisition_lines(rows, groups, n_boot=n_boot)
        out += regime_lines(rows, groups)
        if power:
            out += power_lines(rows)
    if unfinished:
        out += ["## Unfinished runs", ""]
        for r in unfinished:
            label = r["name"] + (f" ({r['overrides']})" if r["overrides"] and r["overrides"] != r["name"] else "")
            out.append(f"- {label}: {r['missing']}")
        out.append("")
    if plots:
        out += ["## Figures", ""]
        for fname, note in plots.items():
            out.append(f"- {fname}: {note}" if note else f"- ![{fname}]({fname})")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _fmt_interval(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{100 * d['estimate']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"


def _paired_lines(g: dict) -> list[str]:
    """Under a group's Table 1: per evaluation set, the verdict (Holm-adjusted when the report has
    several configurations), the gap closed with its Fieller CI (or why it is undefined), and a
    note when runs saved no pair keys (their test pairs are then taken to be their own)."""
    paired = g.get("paired") or {}
    out, families = [], set()
    for s, res in paired.items():
        ser = res.get("ser")
        if not ser:
            continue
        note = "" if res["runs"] == g["n"] else f" ({res['runs']} of {g['n']} runs saved per-pair scores)"
        out.append(f"- **{s}**{note}: {ser['verdict']}")
        if ser.get("family"):
            families.add(ser["family"])
        gap = ser.get("gap_closed")
        if gap:
            out.append(f"  gap closed {100 * gap['estimate']:.0f}% [{100 * gap['low']:.0f}%, {100 * gap['high']:.0f}%] "
                       "(Fieller)")
        elif ser.get("gap_note"):
            out.append(f"  gap closed {ser['gap_note']}")
        bv = res.get("ser_best_val")
        if bv:
            out.append(f"  {bv['verdict']}")
        if res.get("keyless"):
            out.append(f"  {res['keyless']} of {res['runs']} runs saved no pair keys: their test pairs are taken to be "
                       "their own (if the seeds scored the same pairs, this CI is too narrow)")
        elif res.get("shared"):
            out.append(f"  {res['shared']} test pairs are scored by more than one seed: their noise is counted once")
    if out:
        head = ("Paired over seeds and test pairs (95%: t over seeds, test pairs the seeds share counted once; "
                "one run: paired bootstrap and McNemar's exact p)")
        if families:
            head += (f"; verdicts Holm-adjusted over the {max(families)} configurations of this report "
                     "(one family per evaluation set)")
        out = ["", head + ":"] + out
    return out


def write_csv(rows: Sequence[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=ROW_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else round(r[k], 8) if isinstance(r[k], float) else r[k]
                        for k in ROW_FIELDS})
