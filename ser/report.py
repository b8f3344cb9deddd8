"""Results tables: one run (the paper's Table 1 layout) and, later, many runs."""
from __future__ import annotations

import math


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


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
                "val_acc": d["val_acc"], "test_acc": d["test_acc"], "time_s": d["train_s"] + d.get("eval_s", 0),
            })
        if len(hist) > 1:
            last = dict(rows[-1], row="SER final")
            rows.append(last)
    full = phases.get("full")
    if full:
        d = full["loops"][-1]
        rows.append({"row": "full (100% labeled)", "status": "-", "new_pairs": full["counts"]["labeled"], "precision": None,
                     "train_pairs": d["train_pairs"], "steps": d["steps"], "val_acc": d["val_acc"],
                     "test_acc": d["test_acc"], "time_s": d["train_s"] + d.get("eval_s", 0)})
    return rows


def format_run_table(results: dict) -> str:
    head = ["", "status", "new pairs", "pseudo-label prec %", "train pairs", "steps", "val acc %", "test acc %", "time s"]
    lines = [f"SER results: model={results['model']} data={results['data']} seed={results['seed']}",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in run_rows(results):
        lines.append("| " + " | ".join([r["row"], str(r["status"]), str(r["new_pairs"]), _pct(r["precision"]),
                                        str(r["train_pairs"]), str(r["steps"]), _pct(r["val_acc"]), _pct(r["test_acc"]),
                                        f"{r['time_s']:.0f}"]) + " |")
    stops = [p["loops"][-1].get("stop") for p in results["phases"].values() if p["loops"]]
    lines.append(f"stopped by: {', '.join(str(s) for s in stops)}; wall time {results.get('wall_s', float('nan')):.0f} s")
    return "\n".join(lines)
