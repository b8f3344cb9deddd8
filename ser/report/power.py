"""Planning runs: how many test pairs and seeds it takes to detect a SER gain (``ser report --power``).

- :func:`measure`: from the finished runs of a report (``summary_rows``), the variance parts of the
  per-pair difference SER final - seed RM on an evaluation set: one pair's variance, the part of it
  that seeds scoring the same pair share, and the seed-to-seed variance of the true gain (pooled
  over the configurations with two or more seeds; :func:`ser.significance.seed_moments`).
- :func:`power_rows`: per number of seeds, the test pairs per seed for 80% power at 95%
  (two-sided) to detect each gain (:func:`ser.significance.power_pairs`), in the design the runs
  used (shared test pairs, or each seed its own).
- :func:`power_lines`: the markdown section; :func:`power_table` does it all for a folder.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ser.report.values import _plural
from ser.significance import power, power_pairs, seed_moments

GAINS = (0.02, 0.04)
SEEDS = (3, 5, 10)


def measure(rows: Sequence[dict], eval_set: str = "test") -> dict | None:
    """``{"pair_var", "shared_var", "seed_var" (None: no configuration with 2+ seeds), "discordant"
    (share of pairs where SER and the seed RM differ), "pairs" (mean per run), "runs", "groups",
    "seeds" (most seeds of one configuration)}`` from the rows' per-pair outcomes; None without any."""
    by_group: dict[str, list[dict]] = {}
    for r in rows:
        o = (r.get("outcomes") or {}).get(eval_set) or {}
        if "seed" in o and "ser" in o:
            by_group.setdefault(r["group"], []).append(o)
    if not by_group:
        return None
    pair_var, shared, seed_var, disc, pairs = [], [], [], [], []
    for runs in by_group.values():
        diffs = [o["ser"].astype(float) - o["seed"] for o in runs]
        mom = seed_moments(diffs, [o.get("key") for o in runs])
        pair_var.append((float(mom.within[0, 0]), len(runs)))
        if mom.shared:
            shared.append((float(mom.shared_var[0, 0]), len(runs)))
        if mom.k > 1:
            seed_var.append((mom.seed_var(0), mom.k - 1))
        disc += [float(np.mean(d != 0)) for d in diffs]
        pairs += [len(d) for d in diffs]

    def pooled(vals):
        return sum(v * w for v, w in vals) / sum(w for _, w in vals) if vals else None

    return {"pair_var": pooled(pair_var), "shared_var": pooled(shared) or 0.0, "seed_var": pooled(seed_var),
            "discordant": float(np.mean(disc)), "pairs": float(np.mean(pairs)), "runs": len(pairs),
            "groups": len(by_group), "seeds": max(len(v) for v in by_group.values()), "shared": bool(shared)}


def power_rows(m: dict, gains: Sequence[float] = GAINS, seeds: Sequence[int] = SEEDS, target: float = 0.8,
               level: float = 0.95) -> list[dict]:
    """Per number of seeds: ``{"seeds", gain: test pairs per seed (None: not reachable)}``."""
    sv = m["seed_var"] or 0.0
    return [{"seeds": k, **{g: power_pairs(g, k, m["pair_var"], sv, m["shared_var"], target, level) for g in gains}}
            for k in seeds]


def power_lines(rows: Sequence[dict], eval_set: str = "test", gains: Sequence[float] = GAINS,
                seeds: Sequence[int] = SEEDS) -> list[str]:
    """The report's power section (markdown), from the runs' per-pair outcomes."""
    out = ["## Power: test pairs x seeds", ""]
    m = measure(rows, eval_set)
    if m is None or m["pair_var"] is None:
        return out + [f"No run saved per-pair scores on {eval_set}: nothing to measure.", ""]
    design = "the seeds score the same test pairs" if m["shared"] else "each seed scores its own test pairs"
    seed_txt = (f"seed-to-seed SD of the true gain {100 * m['seed_var'] ** 0.5:.1f} points" if m["seed_var"] is not None
                else "seed-to-seed spread unknown (no configuration with 2+ seeds; taken as 0, so the table is a "
                     "lower bound)")
    n = round(m["pairs"])
    out += [f"Measured on {eval_set} ({_plural(m['runs'], 'run')}, {_plural(m['groups'], 'configuration')}, "
            f"{n} pairs per run; {design}): "
            f"SD of one pair's SER - seed (-1, 0 or +1) {m['pair_var'] ** 0.5:.2f} ({100 * m['discordant']:.0f}% of "
            f"pairs discordant; one run's SE {100 * (m['pair_var'] / n) ** 0.5:.1f} points)"
            + (f", the part the seeds share SD {m['shared_var'] ** 0.5:.2f}" if m["shared"] else "")
            + f"; {seed_txt}.", "",
            "Test pairs each seed must score to detect a mean SER gain with 80% power (t-test over seeds, 95%, "
            "two-sided; same design):", "",
            "| seeds | " + " | ".join(f"+{100 * g:.0f} pts" for g in gains) + " |", "|---|" + "---|" * len(gains)]
    for row in power_rows(m, gains, seeds):
        cells = [f"{row[g]:,}" if row[g] is not None else "not reachable (seed spread)" for g in gains]
        out.append(f"| {row['seeds']} | " + " | ".join(cells) + " |")
    k = m["seeds"]
    if k > 1:
        now = ", ".join(f"+{100 * g:.0f} pts "
                        f"{100 * power(g, n, k, m['pair_var'], m['seed_var'] or 0.0, m['shared_var']):.0f}%" for g in gains)
        out += ["", f"Power of these runs' design ({n} pairs, {k} seeds): {now}."]
    return out + [""]


def power_table(path, eval_set: str = "test") -> str:
    """The power section for the runs under ``path`` (a run or sweep folder), as markdown text."""
    from ser.report.runs import load_runs
    from ser.report.stats import summary_rows

    return "\n".join(power_lines(summary_rows(load_runs(path)), eval_set)) + "\n"
