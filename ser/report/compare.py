"""Configurations side by side: strategy vs strategy, threshold vs threshold, on the same seeds.

A sweep's configurations (groups of runs that differ only by seed) that differ in one override key,
with everything else equal, are compared against the first of them in the sweep's order (the
reference: list the paper's setting first, e.g. ``selection: status,pairwise,...``). For each
configuration: the mean validation accuracy of its SER final (what selects), its test accuracy, and
SER final minus the reference's SER final on the same seeds and test pairs (matched by pair key
when the runs saved keys) with a 95% CI and p (:func:`ser.significance.across_seeds`: t over
seeds, shared test pairs counted once; McNemar's exact p with one seed). The comparisons of one
table form a family: their p-values are Holm-adjusted, and a difference holds at 95% only when its
adjusted p < 0.05. The configuration with the best mean validation accuracy is named "chosen on
validation"; the test split chooses nothing.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ser.report.runs import _split_overrides
from ser.report.values import _num
from ser.significance import N_BOOT, Interval, across_seeds, holm


def _items(group: str) -> dict[str, str]:
    return dict(i.lstrip("+~").split("=", 1) for i in _split_overrides(group or "") if "=" in i)


def _ser_outcomes(row: dict):
    return ((row.get("outcomes") or {}).get("test") or {}).get("ser")


def _aligned(mine: dict, theirs: dict):
    """``(reference SER outcomes, this configuration's, pair keys or None)`` on the test pairs both
    runs scored: matched by key when both saved keys, else by position when the counts agree; None
    when they cannot be matched."""
    a, b = _ser_outcomes(theirs), _ser_outcomes(mine)
    if a is None or b is None:
        return None
    ka, kb = (((r.get("outcomes") or {}).get("test") or {}).get("key") for r in (theirs, mine))
    if ka is not None and kb is not None:
        if len(ka) == len(kb) and np.array_equal(ka, kb):
            return a, b, ka
        common, ia, ib = np.intersect1d(ka, kb, return_indices=True)
        return (a[ia], b[ib], common) if len(common) else None
    return (a, b, None) if len(a) == len(b) else None


def compare_groups(rows: Sequence[dict], groups: Sequence[dict], order: dict[str, list[str]] | None = None,
                   n_boot: int = N_BOOT) -> list[dict]:
    """One comparison per (swept key, setting of the other keys) with at least two configurations of
    the same model and data, in the sweep's ``order`` of each key's values (``sweep_order``; else
    the configuration without the key, the default, first; else the report's order): ``{"key", "context", "reference", "entries": [{"value", "runs",
    "val_acc", "test_acc", "gain", "kept", "kept_precision", "vs_reference": Interval dict (with
    ``p``) or None, "p_holm", "paired_seeds"}], "family": comparisons Holm-adjusted together,
    "chosen_on_val"}``."""
    items = {g["group"]: _items(g["group"]) for g in groups}
    keys = sorted({k for it in items.values() for k in it})
    varying = [k for k in keys if len({it.get(k) for it in items.values()}) > 1]
    by_seed = {g["group"]: {r["seed"]: r for r in rows if r["group"] == g["group"]} for g in groups}
    out = []
    for key in varying:
        buckets: dict[tuple, list[dict]] = {}
        for g in groups:
            ctx = tuple(sorted((a, b) for a, b in items[g["group"]].items() if a != key))
            buckets.setdefault((ctx, g["model"], g["data"]), []).append(g)
        for (ctx, _model, _data), gs in buckets.items():
            if len(gs) < 2:
                continue
            listed = (order or {}).get(key, [])
            rank = lambda g: (listed.index(items[g["group"]][key]) if items[g["group"]].get(key) in listed  # noqa: E731
                              else -1 if key not in items[g["group"]] else len(listed))
            gs = sorted(gs, key=rank)  # stable: the report's order among equals
            ref = gs[0]
            entries = []
            for g in gs:
                vs, seeds = None, []
                if g is not ref:
                    mine, theirs = by_seed[g["group"]], by_seed[ref["group"]]
                    pairs = {s: _aligned(mine[s], theirs[s]) for s in mine if s in theirs}
                    seeds = [s for s, al in pairs.items() if al is not None]
                    if seeds:
                        vs = across_seeds([pairs[s][0] for s in seeds], [pairs[s][1] for s in seeds],
                                          keys=[pairs[s][2] for s in seeds], n_boot=n_boot).gain.to_dict()
                entries.append({"value": items[g["group"]].get(key, "(default)"), "group": g["group"], "runs": g["n"],
                                "val_acc": g.get("ser_val_acc"), "test_acc": g["ser_acc"], "gain": g["gain"],
                                "kept": g["kept"], "kept_precision": g["kept_precision"], "vs_reference": vs,
                                "paired_seeds": len(seeds)})
            for e, p in zip(entries, holm([(e["vs_reference"] or {}).get("p") for e in entries])):
                e["p_holm"] = p
            family = sum(e["p_holm"] is not None for e in entries)
            scored = [e for e in entries if e["val_acc"] and e["val_acc"]["n"] and _num(e["val_acc"]["mean"]) is not None]
            best = max(scored, key=lambda e: e["val_acc"]["mean"]) if scored else None
            out.append({"key": key, "context": ",".join(f"{a}={b}" for a, b in ctx), "reference": entries[0]["value"],
                        "entries": entries, "family": family, "chosen_on_val": best["value"] if best else None})
    return out


def compare_lines(comparisons: Sequence[dict], format_stat) -> list[str]:
    """Markdown: one table per comparison (its Holm family), what holds after the adjustment, and
    the configuration chosen on validation."""
    if not comparisons:
        return []
    out = ["## Configurations compared", "",
           "Configurations that differ in one key, against the first in the sweep's order, on the same seeds and test "
           "pairs (SER final minus the reference's SER final; 95% CI: t over seeds with the test pairs they share counted "
           "once; one seed: paired bootstrap and McNemar's exact p). The comparisons of a table are one family: their "
           "p-values are Holm-adjusted, and a difference holds at 95% only when its adjusted p is below 0.05. The choice "
           "uses validation accuracy only.", ""]
    for c in comparisons:
        ref = f"{c['key']}={c['reference']}"
        title = f"{c['key']} ({c['context']})" if c["context"] else c["key"]
        fam = c.get("family", 0)
        out += [f"### {title}", "",
                f"| {c['key']} | runs | val acc % (SER final) | test acc % (SER final) | SER - seed (pts) | "
                f"vs {ref} (pts, 95% CI) | p (Holm, {fam} {'test' if fam == 1 else 'tests'}) | kept pairs | "
                "kept precision % |", "|---|---|---|---|---|---|---|---|---|"]
        held = []
        for e in c["entries"]:
            vs = e["vs_reference"]
            cell = "reference" if e["value"] == c["reference"] and vs is None else "-" if vs is None else (
                f"{100 * vs['estimate']:+.2f} [{100 * vs['low']:+.2f}, {100 * vs['high']:+.2f}] ({e['paired_seeds']} seeds)")
            p, ph = (vs or {}).get("p"), e.get("p_holm")
            pcell = "-" if p is None else f"{p:.2g} ({ph:.2g})" if ph is not None else f"{p:.2g}"
            if vs and ph is not None and ph < 0.05 and Interval(**vs).excludes_zero():
                held.append(f"{c['key']}={e['value']} ({100 * vs['estimate']:+.2f} pts)")
            out.append(f"| {e['value']} | {e['runs']} | {format_stat(e['val_acc'])} | {format_stat(e['test_acc'])} | "
                       f"{format_stat(e['gain'], signed=True)} | {cell} | {pcell} | "
                       f"{format_stat(e['kept'], scale=1, digits=0)} | {format_stat(e['kept_precision'])} |")
        if fam:
            out += ["", f"Holm family: the {fam} {'configuration' if fam == 1 else 'configurations'} compared with {ref}; "
                        f"different from it at 95% after the adjustment: {', '.join(held) if held else 'none'}"]
        if c["chosen_on_val"] is not None:
            out += ["", f"chosen on validation: {c['key']}={c['chosen_on_val']} (highest mean validation accuracy of SER final)"]
        out.append("")
    return out
