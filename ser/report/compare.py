"""Configurations side by side: strategy vs strategy, threshold vs threshold, on the same seeds.

A sweep's configurations (groups of runs that differ only by seed) that differ in one override key,
with everything else equal, are compared against the first of them in the sweep's order (the
reference: list the paper's setting first, e.g. ``selection: status,pairwise,...``). For each
configuration: the mean validation accuracy of its SER final (what selects), its test accuracy, and
SER final minus the reference's SER final on the same seeds and test pairs with a two-level 95% CI
(seeds, then pairs: :func:`ser.significance.seed_bootstrap`). The configuration with the best mean
validation accuracy is named "chosen on validation"; the test split chooses nothing.
"""
from __future__ import annotations

from collections.abc import Sequence

from ser.report.runs import _split_overrides
from ser.report.values import _num
from ser.significance import seed_bootstrap


def _items(group: str) -> dict[str, str]:
    return dict(i.lstrip("+~").split("=", 1) for i in _split_overrides(group or "") if "=" in i)


def _ser_outcomes(row: dict):
    return ((row.get("outcomes") or {}).get("test") or {}).get("ser")


def compare_groups(rows: Sequence[dict], groups: Sequence[dict], order: dict[str, list[str]] | None = None,
                   n_boot: int = 2000) -> list[dict]:
    """One comparison per (swept key, setting of the other keys) with at least two configurations of
    the same model and data, in the sweep's ``order`` of each key's values (``sweep_order``; else
    the configuration without the key, the default, first; else the report's order): ``{"key", "context", "reference", "entries": [{"value", "runs",
    "val_acc", "test_acc", "gain", "kept", "kept_precision", "vs_reference": Interval dict or None,
    "paired_seeds"}], "chosen_on_val"}``."""
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
                    seeds = [s for s in mine if s in theirs and _ser_outcomes(mine[s]) is not None
                             and _ser_outcomes(theirs[s]) is not None
                             and len(_ser_outcomes(mine[s])) == len(_ser_outcomes(theirs[s]))]
                    if seeds:
                        vs = seed_bootstrap([_ser_outcomes(theirs[s]) for s in seeds],
                                            [_ser_outcomes(mine[s]) for s in seeds], n_boot=n_boot).gain.to_dict()
                entries.append({"value": items[g["group"]].get(key, "(default)"), "group": g["group"], "runs": g["n"],
                                "val_acc": g.get("ser_val_acc"), "test_acc": g["ser_acc"], "gain": g["gain"],
                                "kept": g["kept"], "kept_precision": g["kept_precision"], "vs_reference": vs,
                                "paired_seeds": len(seeds)})
            scored = [e for e in entries if e["val_acc"] and e["val_acc"]["n"] and _num(e["val_acc"]["mean"]) is not None]
            best = max(scored, key=lambda e: e["val_acc"]["mean"]) if scored else None
            out.append({"key": key, "context": ",".join(f"{a}={b}" for a, b in ctx), "reference": entries[0]["value"],
                        "entries": entries, "chosen_on_val": best["value"] if best else None})
    return out


def compare_lines(comparisons: Sequence[dict], format_stat) -> list[str]:
    """Markdown: one table per comparison and the configuration chosen on validation."""
    if not comparisons:
        return []
    out = ["## Configurations compared", "",
           "Configurations that differ in one key, against the first in the sweep's order, on the same seeds and test "
           "pairs (SER final minus the reference's SER final; 95% CI resampling seeds, then pairs). The choice uses "
           "validation accuracy only.", ""]
    for c in comparisons:
        ref = f"{c['key']}={c['reference']}"
        title = f"{c['key']} ({c['context']})" if c["context"] else c["key"]
        out += [f"### {title}", "",
                f"| {c['key']} | runs | val acc % (SER final) | test acc % (SER final) | SER - seed (pts) | "
                f"vs {ref} (pts, 95% CI) | kept pairs | kept precision % |", "|---|---|---|---|---|---|---|---|"]
        for e in c["entries"]:
            vs = e["vs_reference"]
            cell = "reference" if e["value"] == c["reference"] and vs is None else "-" if vs is None else (
                f"{100 * vs['estimate']:+.2f} [{100 * vs['low']:+.2f}, {100 * vs['high']:+.2f}] ({e['paired_seeds']} seeds)")
            out.append(f"| {e['value']} | {e['runs']} | {format_stat(e['val_acc'])} | {format_stat(e['test_acc'])} | "
                       f"{format_stat(e['gain'], signed=True)} | {cell} | {format_stat(e['kept'], scale=1, digits=0)} | "
                       f"{format_stat(e['kept_precision'])} |")
        if c["chosen_on_val"] is not None:
            out += ["", f"chosen on validation: {c['key']}={c['chosen_on_val']} (highest mean validation accuracy of SER final)"]
        out.append("")
    return out
