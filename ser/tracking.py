"""Experiment tracking: one wandb run per ``ser.train`` job, so a sweep reads as one table.

- :func:`job_logger`: with ``logger=wandb``, one ``WandbLogger`` for the whole job: named after the
  run folder, grouped by sweep (a multirun's folder; else ``task_name``), tagged with model, data
  and threshold rule, its config the job's resolved config with flattened keys
  (``thresholds.tau_high``, ...): the columns a sweep table or parallel-coordinates panel needs.
- :class:`PhaseLogger`: what each phase's Trainer logs to: the job's logger with every metric
  prefixed by the phase (``ser/loop/test_acc``, ``full/train/loss``); the x axis is each
  phase's own ``trainer/global_step``.
- :func:`summary`: the Table-1 figures of a finished job (seed, each loop, SER final, full, gain
  and its CI, gap closed, kept pairs, pseudo-label precision, wall time; length-controlled test
  accuracy in tokens: ``ser.length_control.summary_figures``), put in the run summary
  by :func:`finish`, which also logs each phase's loop table and the run's figures, then closes.

Why one run per job (not per phase, grouped): a wandb run is one row of the sweep table; with the
phases in one run, SER's gain over its own seed and full baseline sits in one row's summary.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger("ser.tracking")


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": [1, 2]}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def is_wandb(cfg: DictConfig) -> bool:
    return bool(cfg.get("logger")) and "wandb" in str(cfg.logger.get("_target_", "")).lower()


def sweep_group(cfg: DictConfig) -> str:
    """A multirun job's sweep folder name (all its points share it), else the task name."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return f"{cfg.task_name}/{Path(hc.sweep.dir).name}"
    except ValueError:  # not under @hydra.main (tests, the API)
        pass
    return str(cfg.task_name)


def job_logger(cfg: DictConfig, out_dir: Path):
    """One WandbLogger for the job (``logger=wandb``), its config flattened; None otherwise."""
    if not is_wandb(cfg):
        return None
    from hydra.utils import instantiate

    group = cfg.logger.get("group") if cfg.logger.get("group") not in (None, cfg.task_name) else sweep_group(cfg)
    # the run's id comes from its folder: a resumed job continues the same wandb run
    run_id = hashlib.sha1(str(out_dir.resolve()).encode()).hexdigest()[:16]
    lg = instantiate(cfg.logger, save_dir=str(out_dir), name=out_dir.name, group=group, job_type="ser.train",
                     id=run_id, resume="allow")
    if rank_zero_only.rank == 0:
        lg.experiment.config.update(flatten(OmegaConf.to_container(cfg, resolve=True)), allow_val_change=True)
    return lg


class PhaseLogger(Logger):
    """The job's logger seen by one phase: metric and hyperparameter names prefixed with the phase."""

    def __init__(self, inner, phase: str):
        super().__init__()
        self.inner, self.phase = inner, phase

    @property
    def name(self):
        return self.inner.name

    @property
    def version(self):
        return self.inner.version

    @property
    def save_dir(self):
        return self.inner.save_dir

    @property
    def experiment(self):
        return self.inner.experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.inner.log_metrics({f"{self.phase}/{k}": v for k, v in metrics.items()}, step)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        flat = flatten(params if isinstance(params, Mapping) else vars(params))
        self.inner.experiment.config.update({f"{self.phase}/{k}": v for k, v in flat.items()
                                             if not k.startswith("config.")}, allow_val_change=True)

    def finalize(self, status: str) -> None:  # the job closes the run (finish), not each phase
        pass


def summary(results: dict) -> dict[str, Any]:
    """The Table-1 figures of one finished job, flat, accuracies in %."""
    from ser.report.tables import run_rows

    out: dict[str, Any] = {"wall_s": results.get("wall_s"), "precision": (results.get("precision") or {}).get("precision")}
    for r in run_rows(results):
        label = r["row"].split(" (")[0].replace(" ", "_")
        for k in ("test_acc", "val_acc"):
            if r.get(k) is not None:
                out[f"{label}/{k}"] = 100 * r[k]
        if r.get("precision") is not None:
            out[f"{label}/pseudo_label_precision"] = 100 * r["precision"]
    phases = results["phases"]
    main = phases.get("ser") or phases.get("seed")
    if main:
        loops = main["loops"]
        out["seed_acc"] = 100 * loops[0]["test_acc"]
        out["kept_pairs"] = sum(int(d.get("kept") or 0) for d in loops if d.get("stop") is None)
        out["n_loops"] = len(loops) - 1
        out["statuses"] = ">".join(str(d["status"]) for d in loops if d.get("status"))
        if "ser" in phases:
            out["ser_acc"] = 100 * main["test_acc"]
            out["selected_loop"] = main.get("selected_loop")
            out["gain"] = out["ser_acc"] - out["seed_acc"]
    if phases.get("full"):
        out["full_acc"] = 100 * phases["full"]["test_acc"]
        if "gain" in out and out["full_acc"] != out["seed_acc"]:
            out["gap_closed"] = out["gain"] / (out["full_acc"] - out["seed_acc"])
    for s, models in (results.get("statistics") or {}).items():
        for model, st in models.items():
            ci = st["ci"]
            out[f"{s}/{model}_minus_seed"] = 100 * ci["estimate"]
            out[f"{s}/{model}_minus_seed_low"] = 100 * ci["low"]
            out[f"{s}/{model}_minus_seed_high"] = 100 * ci["high"]
            out[f"{s}/{model}_mcnemar_p"] = st["mcnemar"]["p"]
    from ser.length_control import summary_figures

    out.update(summary_figures(results.get("length")))  # length-controlled accuracy (tokens), in %
    return out


TABLE_COLS = ["loop", "status", "kept", "pseudo_label_precision", "train_pairs", "steps", "val_acc", "test_acc", "stop",
              "test_length_balanced", "test_wrong_way", "test_prefers_longer", "pool_prefers_longer", "kept_prefers_longer"]


@rank_zero_only
def finish(lg, results: dict, out_dir: Path) -> None:
    """Summary, loop tables and figures of the job into its wandb run; then close the run."""
    import wandb

    from ser.report import load_run, make_plots, summary_rows

    run = lg.experiment
    run.summary.update(summary(results))
    for name, phase in results["phases"].items():
        if phase.get("loops"):
            lg.log_table(key=f"{name}/loops", columns=TABLE_COLS, data=[[h.get(c) for c in TABLE_COLS] for h in phase["loops"]])
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    rows = summary_rows([load_run(out_dir)])
    from ser.report import aggregate

    made = make_plots(rows, aggregate(rows), fig_dir)
    images = {f"figures/{Path(f).stem}": wandb.Image(str(fig_dir / f)) for f, note in made.items() if not note}
    if images:
        run.log(images)
    run.finish()
