"""Length control in the report (issue #21): accuracy that "prefer the longer answer" cannot fake.

The figures are :mod:`ser.length_control`'s; this module reads them from a run's saved files and
puts them in the report.

- :func:`run_direction`: the length-only rule's direction, from the training labels
  (``length_direction`` of the main phase's results). Runs from before it was recorded get a
  **fallback**: the direction of the pool's hidden labels (``pool_scores_loop0.npz``: the pool is a
  random sample of the training distribution and its hidden labels are training labels, never
  test), said as such wherever it is used.
- :func:`run_length`: per run, from the seed RM's ``eval_scores_loop0.npz`` (test answer lengths in
  tokens and characters) and the outcomes of :func:`ser.report.paired.run_outcomes`: each model's
  accuracy, length-balanced and wrong-way accuracy and preference for the longer answer, the
  length-only baseline, and the per-loop figures (:func:`loop_fields`: ``loops.jsonl`` when it has
  them, else recomputed from the loop's saved scores).
- :func:`balanced_difference`: B - A on the length-balanced accuracy across runs: per run the
  per-pair values of :func:`ser.length_control.balanced_pair_values` (their mean is the difference
  of the two balanced accuracies, the stratified estimate), then the t-interval of
  :func:`ser.significance.seed_moments` (pairs the runs share, matched by key, counted once; one
  run: its pair noise, normal). That variance lets the strata sizes vary with the pairs, which the
  stratified bootstrap of ``ser train``'s lines holds fixed: the interval is the same or a little
  wider (``tests/test_report_length.py``). The plain difference on the same runs and pairs comes
  with it; the share of it that survives length control is printed when its CI is above 0.
- :func:`group_length` per configuration, :func:`adjust_length_family` (Holm's adjustment of every
  length-balanced comparison with the seed RM in the report: the family ``FAMILY``),
  :func:`length_lines` and :func:`loop_lines` (markdown), :func:`row_fields` (``runs.csv``).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ser import length_control as lc
from ser.report.paired import main_phase
from ser.report.values import _num, _stat, format_stat
from ser.significance import Interval, holm, seed_moments, t_interval, verdict

#: the models of the length table: key (as in ser.report.paired.run_outcomes) -> label
MODELS = {"seed": "seed RM", "ser": "SER final", "ser_best_val": "SER (best val loop)", "full": "full 100%"}
#: the models compared with the seed RM on the length-balanced accuracy (the Holm family FAMILY)
GAINS = ("ser", "full")
FAMILY = "length-balanced vs seed"
TRAINING = "training labels"
FALLBACK = "pool hidden labels (fallback)"
POOL_FIELDS = ("pool_prefers_longer", "kept_prefers_longer", "pool_labels_longer")
TEST_FIELDS = ("test_prefers_longer", "test_length_balanced", "test_wrong_way")
LOOP_FIELDS = POOL_FIELDS + TEST_FIELDS
FIGURES = ("accuracy", "balanced", "wrong_way", "prefers_longer")


def _npz(path: Path) -> dict | None:
    if not path.exists():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# -- one run ----------------------------------------------------------------------------------------
def run_direction(run_dir, results: dict) -> tuple[dict | None, str | None]:
    """``({unit: label_direction dict}, source)``: the training labels' (``TRAINING``), else the pool's
    hidden labels at the first self-labelled loop (``FALLBACK``), else ``(None, None)``."""
    main = main_phase(results)
    if main is None:
        return None, None
    name, phase = main
    if phase.get("length_direction"):
        return phase["length_direction"], TRAINING
    pool = next((z for z in (_npz(Path(run_dir) / name / f"pool_scores_loop{d['loop']}.npz") for d in phase["loops"])
                 if z is not None), None)
    if pool is None:
        return None, None
    hidden = pool["hidden_a1_better"].astype(bool)
    out = {}
    for unit in lc.UNITS:
        if f"a1_{unit}" in pool:
            a1, a2 = pool[f"a1_{unit}"], pool[f"a2_{unit}"]
            out[unit] = lc.label_direction(np.where(hidden, a1, a2), np.where(hidden, a2, a1))
    return (out, FALLBACK) if out else (None, None)


def loop_fields(run_dir, results: dict, direction: dict | None) -> tuple[list[dict], bool]:
    """Per loop of the main phase: ``LOOP_FIELDS`` in tokens (``ser.length_control.pool_fields`` and
    ``loop_test_fields``), from the loop's diagnostics when it logged them, else from its saved
    scores (the kept pairs oriented as the RM chose: a1 when p1 >= p2); and whether any came from
    the saved scores."""
    main = main_phase(results)
    if main is None:
        return [], False
    name, phase = main
    d_tokens = ((direction or {}).get("tokens") or {}).get("direction")
    out, recomputed = [], False
    for h in phase["loops"]:
        row = {"loop": h["loop"], **{f: _num(h[f]) for f in LOOP_FIELDS if f in h}}
        if any(f not in row for f in TEST_FIELDS):
            z = _npz(Path(run_dir) / name / f"eval_scores_loop{h['loop']}.npz")
            if z is not None and "test_chosen_tokens" in z:
                got = lc.loop_test_fields(z["test_chosen"], z["test_rejected"], z["test_chosen_tokens"],
                                          z["test_rejected_tokens"], d_tokens)
                row.update({f: v for f, v in got.items() if f not in row})
                recomputed = True
        if any(f not in row for f in POOL_FIELDS):
            p = _npz(Path(run_dir) / name / f"pool_scores_loop{h['loop']}.npz")
            if p is not None and "a1_tokens" in p and "kept" in p:
                first = (p["p1"] >= p["p2"])[p["kept"]]
                got = lc.pool_fields(p["scores_a1"], p["scores_a2"], p["a1_tokens"], p["a2_tokens"], p["kept"], first,
                                     p["hidden_a1_better"])
                row.update({f: v for f, v in got.items() if f not in row})
                recomputed = True
        out.append(row)
    return out, recomputed


def run_length(run_dir, results: dict, outcomes: dict) -> dict:
    """One run: ``{"direction": {unit: label_direction} or None, "direction_source", "correct": {model:
    bool per test pair}, "key": pair keys or None, "test": {unit: {"chosen", "rejected" (lengths),
    "direction", "models": {model: ser.length_control.length_summary}}}, "loops": [per loop
    LOOP_FIELDS], "loops_recomputed"}``. ``outcomes``: :func:`ser.report.paired.run_outcomes`."""
    direction, source = run_direction(run_dir, results)
    loops, recomputed = loop_fields(run_dir, results, direction)
    out = {"direction": direction, "direction_source": source, "correct": {}, "key": None, "test": {},
           "loops": loops, "loops_recomputed": recomputed}
    test, main = outcomes.get("test"), main_phase(results)
    if not test or main is None:
        return out
    z = _npz(Path(run_dir) / main[0] / f"eval_scores_loop{main[1]['loops'][0]['loop']}.npz") or {}
    out["correct"] = {m: test[m] for m in MODELS if m in test}
    out["key"] = test.get("key")
    for unit in lc.UNITS:
        chosen, rejected = z.get(f"test_chosen_{unit}"), z.get(f"test_rejected_{unit}")
        if chosen is None or len(chosen) != len(test["seed"]):
            continue
        d = (direction or {}).get(unit)
        out["test"][unit] = {"chosen": chosen, "rejected": rejected, "direction": d, "models": {
            m: lc.length_summary(ok, chosen, rejected, d and d["direction"]) for m, ok in out["correct"].items()}}
    return out


def row_fields(length: dict | None) -> dict:
    """The ``runs.csv`` columns of one run (fractions; tokens, and ``*_chars`` in characters)."""
    length = length or {}
    out = {}
    for unit, suffix in (("tokens", ""), ("chars", "_chars")):
        models = ((length.get("test") or {}).get(unit) or {}).get("models") or {}
        get = lambda m, f: (models.get(m) or {}).get(f)  # noqa: E731
        out[f"length_baseline{suffix}"] = get("seed", "baseline")
        for m in ("seed", "ser", "full"):
            out[f"{m}_balanced{suffix}"] = get(m, "balanced")
        if unit == "tokens":
            out.update(seed_wrong_way=get("seed", "wrong_way"), ser_wrong_way=get("ser", "wrong_way"))
    d = (length.get("direction") or {}).get("tokens")
    out["length_direction"] = d["direction"] if d else None
    out["length_direction_source"] = length.get("direction_source") if d else None
    return out


# -- several runs -----------------------------------------------------------------------------------
def balanced_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], chosen: Sequence[np.ndarray],
                        rejected: Sequence[np.ndarray], keys: Sequence[np.ndarray | None]) -> dict | None:
    """Mean over runs of B - A on the length-balanced accuracy (item i of each list: run i's 0/1
    outcomes, answer lengths and pair keys, aligned): ``{"balanced": Interval dict (with p), "plain":
    B - A on plain accuracy on the same runs and pairs, "plain_ci": its Interval dict (the same
    t-interval), "runs"}``; runs where a length stratum is
    empty are left out; None when none is left."""
    values, run_keys = [], []
    for ai, bi, ci, ri, ki in zip(a, b, chosen, rejected, keys):
        d = np.asarray(bi, dtype=float) - np.asarray(ai, dtype=float)
        try:
            values.append(np.column_stack([d, lc.balanced_pair_values(d, ci, ri)]))
        except ValueError:  # no chosen-longer or no chosen-shorter pair
            continue
        run_keys.append(ki)
    if not values:
        return None
    mom = seed_moments(values, run_keys)
    iv = [t_interval(float(mom.estimate[j]), mom.se(j), float(mom.df[j]), n=len(values)) for j in (0, 1)]
    return {"balanced": iv[1].to_dict(), "plain": iv[0].estimate, "plain_ci": iv[0].to_dict(), "runs": len(values)}


def group_length(rows: Sequence[dict]) -> dict | None:
    """Per configuration (its runs' rows, ``row["length"]`` from :func:`run_length`): ``{"runs",
    "sources": {source: runs}, "directions": {unit: {direction: runs}}, "units": {unit: {"baseline":
    stat, "models": {model: {figure: stat}}, "paired": {model: balanced_difference vs the seed RM}}},
    "loops": [per loop {field: stat}], "loops_recomputed": runs}``; stats are
    :func:`ser.report.values._stat` over runs. None when no run has any length figure."""
    runs = [r["length"] for r in rows if r.get("length")]
    if not any(r["test"] or any(f in x for x in r["loops"] for f in LOOP_FIELDS) for r in runs):
        return None
    tested = [r for r in runs if r["test"]]
    out = {"runs": len(tested), "sources": dict(Counter(r["direction_source"] for r in tested if r["direction"])),
           "units": {}, "directions": {}, "loops_recomputed": sum(r["loops_recomputed"] for r in runs)}
    for unit in lc.UNITS:
        have = [r for r in tested if unit in r["test"]]
        if not have:
            continue
        units = [r["test"][unit] for r in have]
        out["directions"][unit] = dict(Counter(u["direction"]["direction"] for u in units if u["direction"]))
        models = {m: {f: _stat(u["models"][m][f] for u in units if m in u["models"]) for f in FIGURES}
                  for m in MODELS if any(m in u["models"] for u in units)}
        paired = {}
        for m in GAINS:
            both = [r for r in have if m in r["correct"]]
            diff = balanced_difference([r["correct"]["seed"] for r in both], [r["correct"][m] for r in both],
                                       [r["test"][unit]["chosen"] for r in both],
                                       [r["test"][unit]["rejected"] for r in both], [r["key"] for r in both])
            if diff:
                paired[m] = diff
        out["units"][unit] = {"baseline": _stat(u["models"]["seed"]["baseline"] for u in units), "models": models,
                              "paired": paired}
    n_loop = max((len(r["loops"]) for r in runs), default=0)
    out["loops"] = [{f: _stat(r["loops"][i].get(f) for r in runs if len(r["loops"]) > i) for f in LOOP_FIELDS}
                    for i in range(n_loop)]
    return out


def in_tokens(group: dict) -> dict:
    """A configuration's length figures in tokens (``group_length``'s ``units["tokens"]``), ``{}`` without."""
    return ((group.get("length") or {}).get("units") or {}).get("tokens") or {}


def _verdict(entry: dict, model: str, family: int, p_holm: float | None) -> str:
    return verdict(Interval(**entry["balanced"]), MODELS[model], "the seed RM on length-balanced accuracy",
                   holm_p=p_holm if family > 1 else None, family=f"{family} tests, family '{FAMILY}'")


def adjust_length_family(groups: Sequence[dict]) -> int:
    """Holm's adjustment over every length-balanced comparison with the seed RM in the report (in
    tokens: SER final and full data, every configuration; the family ``FAMILY``): each entry gets
    ``p_holm``, ``family`` and its ``verdict``. In place; returns the family's size."""
    members = [(m, e) for g in groups for m, e in (in_tokens(g).get("paired") or {}).items()]
    adjusted = holm([e["balanced"].get("p") for _, e in members])
    for (m, e), p in zip(members, adjusted):
        e.update(p_holm=p, family=len(members), verdict=_verdict(e, m, len(members), p))
    for g in groups:
        if g.get("length"):
            g["length"]["family"] = len(members)
    return len(members)


# -- markdown ---------------------------------------------------------------------------------------
def _pts(d: dict | None) -> str:
    return "-" if not d else Interval(**d).fmt() + " pts"


def _direction_words(length: dict, unit: str) -> str:
    dirs = "/".join(f'"prefer the {d}"' for d in length["directions"].get(unit) or {}) or "-"
    src = ", ".join(f"{s} ({n} {'run' if n == 1 else 'runs'})" for s, n in length["sources"].items())
    return f"{dirs}, direction from the {src}" if src else "no direction recorded or recoverable"


def length_lines(g: dict, seed_label: str = "seed RM") -> list[str]:
    """Under a configuration's Table 1: the length-only baseline and each model's length-balanced and
    wrong-way accuracy on test (tokens), SER final - seed and full - seed on the length-balanced
    accuracy with their CI, verdict and the plain gain beside it; one line in characters."""
    length = g.get("length") or {}
    t = (length.get("units") or {}).get("tokens")
    if not t:
        return []
    fam = length.get("family", 0)
    out = ["", f"**Length control on test** (tokens; length-only baseline {_direction_words(length, 'tokens')}; "
               f"{length['runs']} {'run' if length['runs'] == 1 else 'runs'}, mean ± std):", "",
           "| | test acc % | length-balanced % | wrong-way % | prefers the longer % |", "|---|---|---|---|---|",
           f"| length-only baseline | {format_stat(t['baseline'])} | 50 (chance) | 0 | - |"]
    for m, v in t["models"].items():
        label = seed_label if m == "seed" else MODELS[m]
        out.append(f"| {label} | {' | '.join(format_stat(v[f]) for f in FIGURES)} |")
    out.append("")
    for m, e in t["paired"].items():
        plain = f"Plain gain on the same runs and pairs: {_pts(e['plain_ci'])}"
        if m == "ser" and e["plain_ci"]["low"] > 0:  # a share of a gain that may be 0 means nothing
            plain += f"; {100 * e['balanced']['estimate'] / e['plain']:.0f}% of it survives length control"
        out.append(f"- {e.get('verdict') or _verdict(e, m, 1, None)} {plain}.")
    c = (length.get("units") or {}).get("chars")
    if c:
        bal = " / ".join("-" if v["balanced"]["mean"] is None else f"{100 * v['balanced']['mean']:.2f}"
                         for v in c["models"].values())
        diffs = "; ".join(f"{MODELS[m]} - seed {_pts(e['balanced'])}" for m, e in c["paired"].items())
        words = _direction_words(length, "chars")
        same = words == _direction_words(length, "tokens")
        out.append(f"- in characters: baseline {format_stat(c['baseline'])}{'' if same else f' ({words})'}; "
                   f"length-balanced {' / '.join(MODELS[m] for m in c['models'])}: {bal}%"
                   + (f"; {diffs}" if diffs else ""))
    out.append(f"- length-balanced: the mean of the accuracies on the pairs whose chosen answer is the longer and on "
               f"those whose chosen answer is the shorter (equal lengths left out; any length-only rule scores 50%); "
               f"wrong-way: accuracy on the pairs where length points to the rejected answer. CIs: t over seeds on the "
               f"stratum-weighted per-pair differences, test pairs the seeds share counted once (one run: normal over "
               f"its pairs). Holm family '{FAMILY}': {fam} {'test' if fam == 1 else 'tests'} (SER final - seed and "
               f"full - seed in tokens, every configuration of this report).")
    return out


_LOOP_HEAD = {"pool_prefers_longer": "RM prefers longer, pool %", "kept_prefers_longer": "kept: chosen longer %",
              "pool_labels_longer": "hidden labels: longer better, pool %",
              "test_prefers_longer": "RM prefers longer, test %", "test_length_balanced": "test length-balanced %",
              "test_wrong_way": "test wrong-way %"}


def loop_lines(g: dict) -> list[str]:
    """Per loop (mean ± std over seeds, tokens): does self-labelling amplify the preference for the
    longer answer? The RM's preference on the pool, on the pairs it kept and on test, the hidden
    labels' share on the pool, and the test length-balanced and wrong-way accuracy."""
    length = g.get("length") or {}
    loops = length.get("loops") or []
    fields = [f for f in LOOP_FIELDS if any(row[f]["n"] for row in loops)]
    if not fields:
        return []
    n = length.get("loops_recomputed") or 0
    src = (f"; {n} {'run' if n == 1 else 'runs'} had some missing from the loop diagnostics (older runs): recomputed "
           f"from the saved scores" if n else "")
    out = ["", f"**Length preference per loop** (tokens, mean ± std over seeds; pool and kept: the pool this loop's "
               f"RM labelled, kept pairs oriented as it chose{src}):", "",
           "| after loop | " + " | ".join(_LOOP_HEAD[f] for f in fields) + " |", "|---" * (len(fields) + 1) + "|"]
    for k, row in enumerate(loops):
        out.append(f"| {k} | " + " | ".join(format_stat(row[f]) for f in fields) + " |")
    return out
