"""Rows and aggregates of many runs: :func:`summary_rows` gives one row per finished run (seed,
SER and full-data accuracies, gain, gap closed, loops, kept pairs; fields ``ROW_FIELDS``),
:func:`group_key` the run's configuration without its seed, and :func:`aggregate` groups the runs
that differ only by seed (mean, sample std and n of each figure, via :func:`_stat`).
"""
from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ser.report.acquisition import row_fields as acquisition_fields
from ser.report.length import adjust_length_family, group_length, row_fields, run_length
from ser.report.paired import adjust_families, best_val_loop, group_statistics, run_outcomes, run_statistics
from ser.report.replay import replay_run, replay_summary
from ser.report.runs import _split_overrides, load_run
from ser.report.values import _num, _stat
from ser.significance import N_BOOT

_SEED_ITEM = re.compile(r"^\+{0,2}seed=")
#: overrides that do not change results (as Hydra's override_dirname in conf/hydra/default.yaml)
_NEUTRAL_ITEM = re.compile(r"^[+~]{0,2}(logger|trainer\.enable_progress_bar|output_dir|hydra\.[\w.]+|reuse\.[\w.]+|acquisition\.answers)(=|$)")


def group_key(run: dict) -> str:
    """The run's configuration without its seed: its overrides with ``seed=...`` removed (and the
    ones that do not change results: ``logger``, ``trainer.enable_progress_bar``, ``output_dir``, ``hydra.*``).

    Without ``.hydra/overrides.yaml`` the folder name is used when it looks like Hydra's
    ``key=value,...`` folder name, else model, data, labeled fraction and threshold rule.
    """
    if run.get("override_list") is not None:
        items = run["override_list"]
    elif "=" in Path(run["name"]).name:
        items = _split_overrides(Path(run["name"]).name)
    else:
        r = run.get("results") or {}
        th = r.get("thresholds") or {}
        return (f"model={r.get('model')},data={r.get('data')},labeled_fraction={r.get('labeled_fraction')},"
                f"thresholds.rule={th.get('rule')}")
    return ",".join(i for i in items if not _SEED_ITEM.match(i) and not _NEUTRAL_ITEM.match(i))


def _main_phase(results: dict) -> dict | None:
    phases = results.get("phases") or {}
    return phases.get("ser") or phases.get("seed")


ROW_FIELDS = ["run", "path", "overrides", "group", "model", "data", "seed", "labeled_fraction", "rule", "tau_high",
              "tau_low", "tau_delta", "min_count", "seed_acc", "ser_acc", "full_acc", "gain", "gap_closed", "n_loops",
              "kept", "kept_precision", "statuses", "stop", "loop_test_accs", "wall_s", "hardware", "gain_low", "gain_high", "gain_p",
              "full_gain_low", "full_gain_high", "best_val_loop", "ser_best_val_acc",
              # length control on test (ser.report.length): tokens, then the same in characters
              "length_baseline", "seed_balanced", "ser_balanced", "full_balanced", "seed_wrong_way", "ser_wrong_way",
              "length_direction", "length_direction_source", "length_baseline_chars", "seed_balanced_chars",
              "ser_balanced_chars", "full_balanced_chars",
              # human labels (ser.report.acquisition): seed pairs, pairs asked for, their sum; method; budget
              "human_seed", "human_acquired", "human_labels", "method", "budget"]


def summary_rows(runs: Iterable, n_boot: int = N_BOOT) -> list[dict]:
    """One row per finished run (runs: ``load_run`` dicts or paths); unfinished runs are left out.

    Accuracies are fractions: ``seed_acc`` = loop 0 of the ser (or seed) phase, ``ser_acc`` = last
    loop of the ser phase (None without one), ``full_acc`` = the full phase (None without one),
    ``gain`` = ser - seed, ``gap_closed`` = (ser - seed) / (full - seed). ``kept`` = pseudo-labeled
    pairs added to training over all loops; ``statuses`` like "EASY>EASY>HARD>STOP"; ``path`` the
    run folder relative to the report's input (no machine path); ``gain_low``/``gain_high``/``gain_p``
    the paired bootstrap CI (``n_boot`` resamples) and McNemar's exact p; ``length_*``,
    ``*_balanced``, ``*_wrong_way``: length control on test (:func:`ser.report.length.row_fields`).
    The row also holds ``loops`` (the main phase's diagnostics, for plots), ``loop_accs``,
    ``outcomes`` and ``length`` (:func:`ser.report.length.run_length`).
    """
    rows = []
    for run in runs:
        if not isinstance(run, dict):
            run = load_run(run)
        if run["status"] != "finished":
            continue
        r = run["results"]
        phases = r["phases"]
        main = _main_phase(r)
        loops = list(main.get("loops") or []) if main else []
        loop_accs = [_num(d.get("test_acc")) for d in loops]
        seed_acc = loop_accs[0] if loop_accs else None
        ser = phases.get("ser")
        ser_acc = _num(ser.get("test_acc")) if ser and ser.get("loops") else None  # the selected loop (loop.select)
        full = phases.get("full")
        full_acc = None
        if full:
            full_acc = _num(full.get("test_acc"))
            if full_acc is None and full.get("loops"):
                full_acc = _num(full["loops"][-1].get("test_acc"))
        gain = ser_acc - seed_acc if ser_acc is not None and seed_acc is not None else None
        gap_closed = None
        if gain is not None and full_acc is not None and not math.isclose(full_acc, seed_acc, abs_tol=1e-12):
            gap_closed = gain / (full_acc - seed_acc)
        th = r.get("thresholds") or {}
        kept = sum(int(d.get("kept") or 0) for d in loops if "kept" in d and d.get("stop") is None)
        labeled = [d for d in loops if d.get("kept") and d.get("stop") is None and d.get("pseudo_label_precision") is not None]
        kept_precision = (sum(d["kept"] * d["pseudo_label_precision"] for d in labeled) / sum(d["kept"] for d in labeled)
                          if labeled else None)  # of every pair added to training
        stops = [d.get("stop") for d in loops if d.get("stop")]
        outcomes = run_outcomes(run["path"], r)
        paired = run_statistics(outcomes, n_boot=n_boot).get("test", {})
        ci = lambda m, k: paired[m]["ci"][k] if m in paired else None  # noqa: E731
        bv = best_val_loop(loops) if ser else None
        length = run_length(run["path"], r, outcomes)
        rows.append({
            "run": run["name"], "path": run.get("rel_path", run["name"]), "overrides": run["overrides"],
            "group": group_key(run),
            "model": r.get("model"), "data": r.get("data"), "seed": r.get("seed"),
            "labeled_fraction": _num(r.get("labeled_fraction")),
            "rule": th.get("rule"), "tau_high": th.get("tau_high"), "tau_low": th.get("tau_low"),
            "tau_delta": th.get("tau_delta"), "min_count": th.get("min_count"),
            "seed_acc": seed_acc, "ser_acc": ser_acc, "full_acc": full_acc, "gain": gain, "gap_closed": gap_closed,
            "n_loops": len(loops) - 1 if loops else None, "kept": kept, "kept_precision": kept_precision,
            "statuses": ">".join(str(d["status"]) for d in loops if d.get("status")),
            "stop": stops[-1] if stops else None,
            "loop_test_accs": ";".join("" if a is None else f"{a:.6g}" for a in loop_accs),
            "wall_s": _num(r.get("wall_s")), "hardware": (r.get("precision") or {}).get("hardware"),
            "gain_low": ci("ser", "low"), "gain_high": ci("ser", "high"),
            "gain_p": paired["ser"]["mcnemar"]["p"] if "ser" in paired else None,
            "full_gain_low": ci("full", "low"), "full_gain_high": ci("full", "high"),
            "best_val_loop": bv, "ser_best_val_acc": loop_accs[bv] if bv is not None and bv < len(loop_accs) else None,
            "ser_val_acc": _num(ser.get("val_acc")) if ser and ser.get("loops") else None,
            **row_fields(length),
            **acquisition_fields(r),  # human labels used and the method (ser.report.acquisition)
            "loop_accs": loop_accs, "loops": loops, "outcomes": outcomes, "replay": replay_run(run["path"], r),
            "length": length,
        })
    return rows


def _key_fn(by) -> Callable[[dict], str]:
    if callable(by):
        return lambda r: str(by(r))
    if isinstance(by, str):
        return lambda r: str(r.get(by))
    fields = list(by)
    return lambda r: ",".join(f"{f}={r.get(f)}" for f in fields)


def aggregate(rows: Sequence[dict], by: str | Sequence[str] | Callable[[dict], object] = "group",
              n_boot: int = N_BOOT) -> list[dict]:
    """Group rows (default: runs that differ only by seed) in first-seen order.

    ``by``: a row field, a list of fields, or a function of the row. Each group:
    ``{"group", "n", "runs", "seeds", "model", "data", "labeled_fraction", "seed_acc", "ser_acc",
    "full_acc", "gain", "gap_closed", "kept", "n_loops", "loop_acc": [per loop k], "loop_gain": [per
    loop k: loop k - seed, paired]}``; every statistic is ``{"mean", "std", "n"}`` over the runs that
    have the value (a run stopped at loop 2 does not count for loop 3). ``paired``: the statistics
    of :func:`ser.report.paired.group_statistics`, with verdicts Holm-adjusted across the groups
    (:func:`ser.report.paired.adjust_families`); ``gap_closed_of_means``: mean gain / mean full-data
    gain over the runs that have both; ``length``: length control (:func:`ser.report.length.group_length`,
    its verdicts Holm-adjusted over the report: :func:`ser.report.length.adjust_length_family`).
    """
    key = _key_fn(by)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    out = []
    for k, rs in groups.items():
        n_loop = max((len(r["loop_accs"]) for r in rs), default=0)
        first = rs[0]

        def same(field):
            vals = {r.get(field) for r in rs}
            return vals.pop() if len(vals) == 1 else "/".join(sorted(str(v) for v in vals))

        out.append({
            "group": k, "n": len(rs), "runs": [r["run"] for r in rs], "seeds": [r["seed"] for r in rs],
            "gap_closed_runs": [r["gap_closed"] for r in rs],
            "model": same("model"), "data": same("data"), "labeled_fraction": first.get("labeled_fraction"),
            "tau_delta": same("tau_delta"),
            **{f: _stat(r[f] for r in rs) for f in ("seed_acc", "ser_acc", "full_acc", "gain", "gap_closed",
                                                      "kept", "kept_precision", "n_loops")},
            "loop_acc": [_stat(r["loop_accs"][i] for r in rs if len(r["loop_accs"]) > i) for i in range(n_loop)],
            "loop_gain": [_stat(r["loop_accs"][i] - r["seed_acc"] for r in rs if len(r["loop_accs"]) > i
                                and r["loop_accs"][i] is not None and r["seed_acc"] is not None)
                          for i in range(n_loop)],
            "full_gain": _stat(r["full_acc"] - r["seed_acc"] for r in rs
                               if r["full_acc"] is not None and r["seed_acc"] is not None),
        })
        # loop k trained on the pairs labeled after loop k - 1: their precision and the status that chose them
        out[-1]["loop_precision"] = [None] + [
            _stat(r["loops"][k - 1].get("pseudo_label_precision") for r in rs if len(r["loops"]) > k)
            for k in range(1, n_loop)]
        out[-1]["loop_status"] = [None] + [
            "/".join(sorted({str(r["loops"][k - 1].get("status")) for r in rs if len(r["loops"]) > k}))
            for k in range(1, n_loop)]
        out[-1]["loop_ece"] = [_stat(r["loops"][k].get("val_ece") for r in rs if len(r["loops"]) > k) for k in range(n_loop)]
        out[-1]["paired"] = group_statistics([r.get("outcomes") or {} for r in rs], n_boot=n_boot)
        out[-1]["ser_best_val_acc"] = _stat(r.get("ser_best_val_acc") for r in rs)
        out[-1]["ser_val_acc"] = _stat(r.get("ser_val_acc") for r in rs)
        out[-1]["replay"] = replay_summary([r.get("replay") or [] for r in rs], n_boot=n_boot)
        out[-1]["length"] = group_length(rs)
        # mean gain / mean full-data gain: a per-run ratio explodes when one seed's full model is
        # barely better than its seed model, so the group figure is the ratio of the means, both
        # taken over the same runs (those with a seed, a SER and a full accuracy)
        both = [r for r in rs if r["gain"] is not None and r["full_acc"] is not None and r["seed_acc"] is not None]
        g = statistics.fmean(r["gain"] for r in both) if both else None
        fg = statistics.fmean(r["full_acc"] - r["seed_acc"] for r in both) if both else None
        out[-1]["gap_closed_of_means"] = g / fg if both and fg > 0 else None
    adjust_families(out)
    adjust_length_family(out)
    return out
