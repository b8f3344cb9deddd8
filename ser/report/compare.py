"""Configurations side by side: strategy vs strategy, threshold vs threshold, on the same seeds.

A sweep's configurations (groups of runs that differ only by seed) that differ in one override key,
with everything else equal, are compared against the first of them in the sweep's order (the
reference: list the paper's setting first, e.g. ``selection: status,pairwise,...``). For each
configuration: the mean validation accuracy of its SER final (what selects), its test accuracy, and
SER final minus the reference's SER final on the same seeds and test pairs (matched by pair key
when the runs saved keys) with a 95% CI and p (:func:`ser.significance.across_seeds`: t over
seeds, shared test pairs counted once; McNemar's exact p with one seed). The comparisons of one
table form a family: their p-values are Holm-adjusted, and a difference holds at 95% only when its
adjusted p < 0.05. With answer lengths saved, the same on the test length-balanced accuracy
(tokens; :func:`ser.report.length.balanced_difference`), a family of its own per table (what a
``selection.length_balance`` sweep is judged on). The configuration with the best mean validation
accuracy is named "chosen on validation"; the test split chooses nothing.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ser.report.length import balanced_difference, in_tokens
from ser.report.runs import _split_overrides
from ser.report.values import _num
from ser.significance import N_BOOT, Interval, across_seeds, holm


def _items(group: str) -> dict[str, str]:
    return dict(i.lstrip("+~").split("=", 1) for i in _split_overrides(group or "") if "=" in i)


def _ser_outcomes(row: dict):
    return ((row.get("outcomes") or {}).get("test") or {}).get("ser")


def _alignment(mine: dict, theirs: dict):
    """``(reference positions, this configuration's positions, pair keys or None)`` of the test
    pairs both runs' SER final scored: matched by key when both saved keys, else by position when the
    counts agree; None when they cannot be matched."""
    a, b = _ser_outcomes(theirs), _ser_outcomes(mine)
    if a is None or b is None:
        return None
    ka, kb = (((r.get("outcomes") or {}).get("test") or {}).get("key") for r in (theirs, mine))
    if ka is not None and kb is not None:
        if len(ka) == len(kb) and np.array_equal(ka, kb):
            return np.arange(len(ka)), np.arange(len(kb)), ka
        common, ia, ib = np.intersect1d(ka, kb, return_indices=True)
        return (ia, ib, common) if len(common) else None
    return (np.arange(len(a)), np.arange(len(b)), None) if len(a) == len(b) else None


def _aligned(mine: dict, theirs: dict):
    """``(reference SER outcomes, this configuration's, pair keys or None)`` on the test pairs both
    runs scored (:func:`_alignment`); None when they cannot be matched."""
    al = _alignment(mine, theirs)
    if al is None:
        return None
    ia, ib, keys = al
    return _ser_outcomes(theirs)[ia], _ser_outcomes(mine)[ib], keys


def _balanced_vs(mine: dict[int, dict], theirs: dict[int, dict]) -> dict | None:
    """This configuration's SER final minus the reference's on the test length-balanced accuracy
    (tokens), seed by seed on the pairs both scored (:func:`ser.report.length.balanced_difference`);
    None when no seed saved answer lengths."""
    a, b, chosen, rejected, keys = [], [], [], [], []
    for s in mine:
        al = _alignment(mine[s], theirs[s]) if s in theirs else None
        t = ((theirs.get(s) or {}).get("length") or {}).get("test", {}).get("tokens")
        if al is None or t is None:
            continue
        ia, ib, k = al
        a.append(_ser_outcomes(theirs[s])[ia])
        b.append(_ser_outcomes(mine[s])[ib])
        chosen.append(t["chosen"][ia])
        rejected.append(t["rejected"][ia])
        keys.append(k)
    return balanced_difference(a, b, chosen, rejected, keys) if a else None


def compare_groups(rows: Sequence[dict], groups: Sequence[dict], order: dict[str, list[str]] | None = None,
                   n_boot: int = N_BOOT) -> list[dict]:
    """One comparison per (swept key, setting of the other keys) with at least two configurations of
    the same model and data, in the sweep's ``order`` of each key's values (``sweep_order``; else
    the configuration without the key, the default, first; else the report's order): ``{"key", "context", "reference", "entries": [{"value", "runs",
    "val_acc", "test_acc", "gain", "kept", "kept_precision", "vs_reference": Interval dict (with
    ``p``) or None, "p_holm", "paired_seeds", "ser_balanced": stat of SER final's length-balanced
    accuracy, "balanced_vs_reference": Interval dict or None, "p_holm_balanced"}], "family":
    comparisons Holm-adjusted together, "family_balanced": the same on the length-balanced accuracy,
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
                vs, seeds, bal = None, [], None
                if g is not ref:
                    mine, theirs = by_seed[g["group"]], by_seed[ref["group"]]
                    pairs = {s: _aligned(mine[s], theirs[s]) for s in mine if s in theirs}
                    seeds = [s for s, al in pairs.items() if al is not None]
                    if seeds:
                        vs = across_seeds([pairs[s][0] for s in seeds], [pairs[s][1] for s in seeds],
                                          keys=[pairs[s][2] for s in seeds], n_boot=n_boot).gain.to_dict()
                    bal = _balanced_vs(mine, theirs)
                ser_bal = (in_tokens(g).get("models") or {}).get("ser")
                entries.append({"value": items[g["group"]].get(key, "(default)"), "group": g["group"], "runs": g["n"],
                                "val_acc": g.get("ser_val_acc"), "test_acc": g["ser_acc"], "gain": g["gain"],
                                "kept": g["kept"], "kept_precision": g["kept_precision"], "vs_reference": vs,
                                "paired_seeds": len(seeds), "ser_balanced": (ser_bal or {}).get("balanced"),
                                "balanced_vs_reference": bal and bal["balanced"]})
            for e, p in zip(entries, holm([(e["vs_reference"] or {}).get("p") for e in entries])):
                e["p_holm"] = p
            for e, p in zip(entries, holm([(e["balanced_vs_reference"] or {}).get("p") for e in entries])):
                e["p_holm_balanced"] = p
            family = sum(e["p_holm"] is not None for e in entries)
            family_balanced = sum(e["p_holm_balanced"] is not None for e in entries)
            scored = [e for e in entries if e["val_acc"] and e["val_acc"]["n"] and _num(e["val_acc"]["mean"]) is not None]
            best = max(scored, key=lambda e: e["val_acc"]["mean"]) if scored else None
            out.append({"key": key, "context": ",".join(f"{a}={b}" for a, b in ctx), "reference": entries[0]["value"],
                        "entries": entries, "family": family, "family_balanced": family_balanced,
                        "chosen_on_val": best["value"] if best else None})
    return out


def _tests(n: int) -> str:
    return f"{n} {'test' if n == 1 else 'tests'}"


def _vs_cells(vs: dict | None, p_holm: float | None, reference: bool, seeds) -> tuple[str, str]:
    """The difference-with-CI cell and the p (Holm) cell of one configuration."""
    cell = "reference" if reference else "-" if vs is None else (
        f"{100 * vs['estimate']:+.2f} [{100 * vs['low']:+.2f}, {100 * vs['high']:+.2f}] ({seeds} seeds)")
    p = (vs or {}).get("p")
    return cell, "-" if p is None else f"{p:.2g} ({p_holm:.2g})" if p_holm is not None else f"{p:.2g}"


def _held(key: str, value: str, vs: dict | None, p_holm: float | None) -> list[str]:
    """``["key=value (+x.xx pts)"]`` when the difference holds after Holm's adjustment, else ``[]``."""
    if vs and p_holm is not None and p_holm < 0.05 and Interval(**vs).excludes_zero():
        return [f"{key}={value} ({100 * vs['estimate']:+.2f} pts)"]
    return []


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
        fam, fam_b = c.get("family", 0), c.get("family_balanced", 0)
        lengths = any(e.get("ser_balanced") or e.get("balanced_vs_reference") for e in c["entries"])
        head = (f"| {c['key']} | runs | val acc % (SER final) | test acc % (SER final) | SER - seed (pts) | "
                f"vs {ref} (pts, 95% CI) | p (Holm, {_tests(fam)}) | kept pairs | kept precision % |")
        if lengths:
            head += (f" length-balanced % (SER final) | length-balanced vs {ref} (pts, 95% CI) | "
                     f"p (Holm, {_tests(fam_b)}) |")
        out += [f"### {title}", "", head, "|---" * (12 if lengths else 9) + "|"]
        held, held_b = [], []
        for e in c["entries"]:
            ref_row = e["value"] == c["reference"] and e["vs_reference"] is None
            cell, pcell = _vs_cells(e["vs_reference"], e.get("p_holm"), ref_row, e["paired_seeds"])
            line = (f"| {e['value']} | {e['runs']} | {format_stat(e['val_acc'])} | {format_stat(e['test_acc'])} | "
                    f"{format_stat(e['gain'], signed=True)} | {cell} | {pcell} | "
                    f"{format_stat(e['kept'], scale=1, digits=0)} | {format_stat(e['kept_precision'])} |")
            if lengths:
                bal = e.get("balanced_vs_reference")
                bcell, bp = _vs_cells(bal, e.get("p_holm_balanced"), ref_row and bal is None, bal and bal["n"])
                line += f" {format_stat(e.get('ser_balanced'))} | {bcell} | {bp} |"
                held_b += _held(c["key"], e["value"], bal, e.get("p_holm_balanced"))
            held += _held(c["key"], e["value"], e["vs_reference"], e.get("p_holm"))
            out.append(line)
        if fam:
            out += ["", f"Holm family: the {fam} {'configuration' if fam == 1 else 'configurations'} compared with {ref}; "
                        f"different from it at 95% after the adjustment: {', '.join(held) if held else 'none'}"]
        if fam_b:
            out += ["", f"Holm family 'length-balanced vs {ref}' (tokens; t over seeds on the stratum-weighted per-pair "
                        f"differences, one seed: normal over its pairs): {_tests(fam_b)}; different from it at 95% after "
                        f"the adjustment: {', '.join(held_b) if held_b else 'none'}"]
        if c["chosen_on_val"] is not None:
            out += ["", f"chosen on validation: {c['key']}={c['chosen_on_val']} (highest mean validation accuracy of SER final)"]
        out.append("")
    return out
