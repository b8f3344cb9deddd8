"""Result bundles: the small files of finished runs that every table of ``ser report`` is computed
from, copied out of the run folders (which hold weights and checkpoints, and do not survive from one
machine to the next) so published results can be regenerated without retraining.

A bundle of a run keeps its folder name (Hydra's ``key=value,...``, what ``ser report`` groups by)
and, per run: ``results.json``, ``results.md``, ``precision.json``, ``.hydra/overrides.yaml`` and
``.hydra/config.yaml``; per phase (``ser/``, ``seed/``, ``full/``): ``loops.jsonl``, ``phase.json``,
``reused.json`` and the per-pair score files ``eval_scores_loopN.npz`` and ``pool_scores_loopN.npz``.
Never weights, checkpoints or logs. ``ser report BUNDLE_DIR`` reads a bundle like the runs it came from.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ser.report.runs import PHASES, ReportError, find_runs

RUN_FILES = ("results.json", "results.md", "precision.json", ".hydra/overrides.yaml", ".hydra/config.yaml")
PHASE_GLOBS = ("loops.jsonl", "phase.json", "reused.json", "eval_scores_loop*.npz", "pool_scores_loop*.npz")


def bundle_files(run: Path) -> list[Path]:
    """The files of one run folder that go into its bundle, relative to the run folder."""
    run = Path(run)
    out = [Path(f) for f in RUN_FILES if (run / f).is_file()]
    for phase in PHASES:
        for pattern in PHASE_GLOBS:
            out += sorted(p.relative_to(run) for p in (run / phase).glob(pattern) if p.is_file())
    return out


def write_bundle(src, dest, finished_only: bool = True) -> list[Path]:
    """Copy the bundle of every run under ``src`` (a run, or a sweep folder) to ``dest``, keeping each
    run's path relative to ``src``; returns the bundled run folders. Runs without ``results.json``
    are left out unless ``finished_only`` is False."""
    src, dest = Path(src), Path(dest)
    runs = find_runs(src)
    if not runs:
        raise ReportError(f"{src}: no runs found to bundle")
    done = []
    for run in runs:
        if finished_only and not (run / "results.json").is_file():
            continue
        rel = run.relative_to(src) if run != src else Path(run.name)
        for f in bundle_files(run):
            target = dest / rel / f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run / f, target)
        done.append(dest / rel)
    return done
