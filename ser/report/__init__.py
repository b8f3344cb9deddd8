"""Results tables and reports.

One run: ``run_rows`` / ``format_run_table`` (the paper's Table 1 layout, printed by ``ser.train``).

Many runs (``ser report RUN_OR_SWEEP_DIR``): ``find_runs`` finds the run folders of a run, an
``outputs/`` folder or a Hydra multirun folder; ``load_run`` reads one (finished: ``results.json``;
unfinished: what was logged so far and whether it can resume); ``summary_rows`` gives one row per
finished run; ``aggregate`` groups runs that differ only by seed (mean, sample std, n);
``format_markdown`` renders both; ``write_report`` writes ``report.md``, ``runs.csv`` and the
figures (accuracy per loop: Fig. 2; pairs per loop: Fig. 3; score gaps: Fig. 6; the preference for
the longer answer per loop: ``length_per_loop.png``).

The package: :mod:`ser.report.runs` (finding and loading runs), :mod:`ser.report.stats` (rows and
aggregates), :mod:`ser.report.paired` (CIs, tests and verdicts from the per-pair scores),
:mod:`ser.report.compare` (configurations side by side), :mod:`ser.report.length` (length
control: the length-only baseline, length-balanced and wrong-way accuracy, per loop),
:mod:`ser.report.power` (test pairs x seeds for a planned run), :mod:`ser.report.tables` (tables, markdown, csv), :mod:`ser.report.plots`
(figures), :mod:`ser.report.values` (number helpers); ``write_report`` is here, and every name is
importable from ``ser.report`` as before. Generated reports hold no machine path: the header names
the input folder, ``runs.csv``'s ``path`` is relative to it.
"""
from __future__ import annotations

from pathlib import Path

from ser.report.plots import PNG_FILES, make_plots, plot_accuracy, plot_gaps, plot_pairs
from ser.report.runs import PHASES, ReportError, find_runs, is_run_dir, load_run, load_runs
from ser.report.stats import ROW_FIELDS, aggregate, group_key, summary_rows
from ser.report.tables import (format_markdown, format_run_table, format_stat, run_rows, table1_rows, time_breakdown,
                               write_csv)
from ser.significance import N_BOOT

__all__ = [
    "PHASES", "PNG_FILES", "ROW_FIELDS", "ReportError", "aggregate", "find_runs", "format_markdown", "format_run_table",
    "format_stat", "group_key", "is_run_dir", "load_run", "load_runs", "make_plots", "plot_accuracy", "plot_gaps",
    "plot_pairs", "run_rows", "summary_rows", "table1_rows", "time_breakdown", "write_csv", "write_report",
]


def write_report(path, out_dir=None, n_boot: int = N_BOOT, power: bool = False) -> Path:
    """Report on the run(s) under ``path``: writes ``report.md``, ``runs.csv`` (one row per finished
    run) and the PNG figures into ``out_dir`` (default ``path/report``), prints the markdown, and
    returns the folder. ``n_boot``: resamples of every bootstrap in the report; ``power``: add the
    test pairs x seeds table (:mod:`ser.report.power`). Raises ``ReportError`` when ``path`` is
    missing or holds no runs."""
    root = Path(path)
    runs = load_runs(root)
    out = Path(out_dir) if out_dir is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(runs, n_boot=n_boot)
    groups = aggregate(rows, n_boot=n_boot)
    plots = make_plots(rows, groups, out)
    md = format_markdown(runs, plots=plots, source=root, n_boot=n_boot, power=power, rows=rows, groups=groups)
    (out / "report.md").write_text(md)
    write_csv(rows, out / "runs.csv")
    print(md, end="")
    print(f"report: {out / 'report.md'}; table: {out / 'runs.csv'}")
    return out
