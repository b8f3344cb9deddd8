"""``python -m ser.train``: train a reward model on the labeled fraction, run the SER loop, and
(``compare_full=true``) the full-data baseline; print the results table; export the model.

Each phase lives in ``<run>/<phase>/`` with its checkpoints; a run stopped at any point and
started again with the same command resumes where it stopped, and a finished run is never
overwritten (its saved table is printed again).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from ser.acquisition import is_active
from ser.checkpoint import AtomicCheckpointIO, last_checkpoint, write_json
from ser.config import run_reporting_errors, validate
from ser.data import PreferenceDataModule
from ser.length_control import length_lines, run_length_statistics
from ser.loop import SERLoop
from ser.model import RewardModel, build_hf_model, export_reward_model, load_tokenizer
from ser.rewards import require_decoder
from ser.precision import PrecisionChoice, resolve_precision
from ser.progress import Progress, ProgressLines
from ser.report import format_run_table
from ser.tracking import PhaseLogger, finish, is_wandb, job_logger
from ser.report.paired import run_outcomes, run_statistics
from ser.reuse import (Loop0Publisher, PhaseCache, key_of, key_parts, publish_whole, restore_finished,
                       resume_from_loop0, reuse_whole)

log = logging.getLogger("ser")


def run_dirname(overrides: str, max_len: int = 120) -> str:
    """A folder name from Hydra's ``override_dirname``: no slashes, bounded, still unique.

    The same overrides always give the same name, so the same command resumes in the same folder.
    """
    if not overrides:
        return "default"
    name = overrides.replace("/", "_").replace("\\", "_")
    if len(name) > max_len:
        digest = hashlib.sha1(overrides.encode()).hexdigest()[:10]
        name = f"{name[: max_len - 11]}-{digest}"
    return name


OmegaConf.register_new_resolver("ser_dirname", run_dirname, replace=True)


def phase_name(cfg: DictConfig) -> str:
    if cfg.loop.max_loops > 0:
        return "ser"
    return "full" if cfg.labeled_fraction >= 1 else "seed"


def make_logger(cfg: DictConfig, phase_dir: Path, tracker=None):
    """The phase's logger: the job's wandb run seen through the phase's prefix (ser.tracking), or a
    logger of the phase's own (CSV in ``<run>/<phase>/csv``); False for none."""
    if tracker is not None:
        return PhaseLogger(tracker, phase_dir.name)
    if not cfg.get("logger") or "_target_" not in cfg.logger or is_wandb(cfg):
        return False
    return instantiate(cfg.logger, save_dir=str(phase_dir))


def planned_steps(cfg: DictConfig, n_train: int) -> int:
    """Training steps a phase is expected to take (for the job ETA): every SER loop is planned as
    long as the seed loop, a lower bound since the training set grows."""
    labeled = max(1, round(n_train * min(1.0, cfg.labeled_fraction)))
    return math.ceil(labeled / cfg.data.batch_size) * cfg.loop.epochs_per_loop * (cfg.loop.max_loops + 1)


def fit_phase(cfg: DictConfig, phase_dir: Path, progress: Progress | None = None,
              job_phases: dict[str, DictConfig] | None = None, tracker=None) -> dict:
    """Train one reward model (with the SER loop when ``loop.max_loops > 0``); resumable, and with
    ``reuse.enabled`` reusing (or publishing) the work another run with the same key did."""
    done = phase_dir / "phase.json"
    if done.exists():
        log.info("phase %s already finished: %s", phase_dir.name, done)
        return json.loads(done.read_text())
    if not cfg.get("reuse") or not cfg.reuse.enabled:
        return _fit_phase(cfg, phase_dir, progress, job_phases, tracker)
    cache = PhaseCache(cfg.reuse.get("dir"))
    if cfg.loop.max_loops == 0:  # the whole phase (full-data baseline, seed-only run)
        parts = key_parts(cfg, "whole")
        key = key_of(parts)
        with cache.lock("whole", key):
            entry = cache.ready("whole", key)
            if entry is not None:
                return reuse_whole(entry, phase_dir, key)
            result = _fit_phase(cfg, phase_dir, progress, job_phases, tracker)
            publish_whole(cache, key, phase_dir, parts)
            return result
    if (phase_dir / "checkpoints" / "last.ckpt").exists():  # this run's own progress first
        return _fit_phase(cfg, phase_dir, progress, job_phases, tracker)
    if cfg.get("selection") is not None and cfg.selection.get("mc_passes", 0) > 0:
        log.info("selection.mc_passes > 0: loop 0 is not reused (its dropout passes are not cached)")
        return _fit_phase(cfg, phase_dir, progress, job_phases, tracker)
    parts = key_parts(cfg, "loop0")
    key = key_of(parts)
    with contextlib.ExitStack() as held:
        held.enter_context(cache.lock("loop0", key))
        entry = cache.ready("loop0", key)
        if entry is not None:
            resume_from_loop0(entry, cfg, phase_dir, key)
            held.close()
            return _fit_phase(cfg, phase_dir, progress, job_phases, tracker)
        publisher = Loop0Publisher(cache, key, phase_dir, release=held.close, parts=parts)
        return _fit_phase(cfg, phase_dir, progress, job_phases, tracker, on_loop0_scored=publisher)


def _fit_phase(cfg: DictConfig, phase_dir: Path, progress: Progress | None = None,
               job_phases: dict[str, DictConfig] | None = None, tracker=None, on_loop0_scored=None) -> dict:
    done = phase_dir / "phase.json"
    progress = progress or Progress(enabled=False)
    phase = phase_dir.name
    progress.set_status(f"[{phase}] loading data and model")
    phase_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if torch.cuda.is_available():  # TF32 for fp32 matmuls (the weights and fp32 ops under bf16-mixed)
        torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "high"))
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(cfg.model)
    dm = PreferenceDataModule(cfg.data, tokenizer, seed=cfg.seed)
    dm.setup()
    t_data = time.perf_counter() - t0
    print(f"[{phase_dir.name}] data: {dm.summary_line()}", flush=True)
    n_train = len(dm.splits.labeled) + len(dm.splits.pool)
    for name, pcfg in (job_phases or {phase: cfg}).items():  # the job ETA's plan: phases still to run
        if not (phase_dir.parent / name / "phase.json").exists():
            progress.eta.plan_if_new(name, planned_steps(pcfg, n_train))
    t0 = time.perf_counter()
    net = build_hf_model(cfg.model, tokenizer)
    for layout in ("packing", "prefix_sharing"):  # decoder-only layouts of a batch
        if cfg.data.get(layout):
            require_decoder(net, f"data.{layout}", f"model.name={cfg.model.name}")
    module = RewardModel(net, cfg.loss, cfg.optim)
    t_model = time.perf_counter() - t0
    loop = SERLoop(cfg.loop, cfg.thresholds, cfg.seed, phase_dir, progress, phase, cfg.get("selection"),
                   cfg.get("acquisition"))
    loop.on_loop0_scored = on_loop0_scored
    ckpt = last_checkpoint(phase_dir / "checkpoints")  # written after the SER callback, every epoch
    lines = ProgressLines(progress, phase, label=lambda t: f"loop {loop.loop}",
                          position=lambda t: (t.global_step - loop.loop_start_step, loop.loop_steps))
    bars = {"enable_progress_bar": False} if progress.enabled else {}  # plain lines in logs, bars in terminals
    trainer: pl.Trainer = instantiate(
        cfg.trainer, max_epochs=loop.max_epochs, callbacks=[loop, lines, ckpt], logger=make_logger(cfg, phase_dir, tracker), **bars,
        reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False, num_sanity_val_steps=0,
        default_root_dir=str(phase_dir), plugins=[AtomicCheckpointIO()])
    counts = {f"data/{k}": v for k, v in dm.counts().items()}
    counts.update({f"data/dropped_{k}": v for k, v in dm.load_report.dropped.items()})
    counts.update({f"data/{k}": v for k, v in dm.cut.items()})
    for lg in trainer.loggers:
        lg.log_hyperparams({**counts, "config": OmegaConf.to_container(cfg, resolve=True)})
    last = phase_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        print(f"[{phase_dir.name}] resuming from {last}", flush=True)
    t0 = time.perf_counter()
    if last.exists() and restore_finished(last, module, loop, dm):
        print(f"[{phase_dir.name}] the loop had finished at {last}: nothing left to train", flush=True)
    else:
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
    t_fit = time.perf_counter() - t0
    if not loop.finished:
        raise RuntimeError(f"{phase_dir}: training stopped before the loop finished (interrupted?); run the same command again to resume")
    selected = loop.select_final(trainer, module)  # loop.select: last, or best_val (its weights loaded back)
    chosen = next(h for h in loop.history if h["loop"] == selected)
    t0 = time.perf_counter()
    export_dir = None
    progress.set_status(f"[{phase}] exporting the reward model")
    if cfg.export and trainer.is_global_zero:
        export_dir = str(export_reward_model(module.net, tokenizer, phase_dir / "reward_model", {
            "template": cfg.data.template, "use_chat_template": cfg.data.use_chat_template,
            "max_length": cfg.data.max_length, "model": cfg.model.name, "data": cfg.data.name,
            "length_direction": dm.labeled_length_direction()}))
    result = {
        "phase": phase_dir.name,
        "labeled_fraction": cfg.labeled_fraction,
        "counts": dm.counts(),
        "dropped": dict(dm.load_report.dropped),
        "formatting": dict(dm.cut),
        "length_direction": dm.labeled_length_direction(),  # the training labels' length rule (ser.length_control)
        "loops": loop.history,
        "select": cfg.loop.get("select", "last"),
        "selected_loop": selected,
        # the selected loop's accuracies: "SER final" (test_acc) and the sweep objective (val_acc)
        **{k: v for k, v in chosen.items() if k.endswith("_acc")},
        "timings": {"data_s": round(t_data, 2), "data_load_s": dm.timings["load_s"], "tokenize_s": dm.timings["tokenize_s"],
                    "model_s": round(t_model, 2), "fit_s": round(t_fit, 2), "export_s": round(time.perf_counter() - t0, 2)},
        "export": export_dir,
    }
    if is_active(cfg.get("acquisition")):  # human labels: the seed pairs and those asked for
        result["human_labels"] = {"seed": len(dm.labeled), "acquired": dm.human_count()}
    if trainer.is_global_zero:
        write_json(done, result)
    return result


def run(cfg: DictConfig) -> dict:
    out = Path(cfg.output_dir)
    results_path = out / "results.json"
    if results_path.exists():
        results = json.loads(results_path.read_text())
        print(run_table(results))
        print(f"(finished earlier; results in {results_path}. Delete that folder or change an override to run again.)")
        return results
    validate(cfg)
    t0 = time.perf_counter()
    choice = run_precision(cfg, out)
    print(choice.line(), flush=True)
    with open_dict(cfg):
        cfg.trainer.precision = choice.precision
    phases = {phase_name(cfg): cfg}
    if cfg.compare_full and cfg.labeled_fraction < 1:
        full = cfg.copy()
        with open_dict(full):
            full.labeled_fraction = 1.0
            full.loop.max_loops = 0
        phases["full"] = full
    results = {"name": out.name, "model": cfg.model.name, "data": cfg.data.name, "seed": cfg.seed,
               "labeled_fraction": cfg.labeled_fraction, "thresholds": OmegaConf.to_container(cfg.thresholds),
               "loop": OmegaConf.to_container(cfg.loop), "selection": OmegaConf.to_container(cfg.selection),
               "precision": choice.to_dict(), "phases": {}}
    if is_active(cfg.get("acquisition")):
        results["acquisition"] = OmegaConf.to_container(cfg.acquisition)
        if cfg.loop.max_loops == 0:
            log.warning("acquisition.rule=%s asks after a loop is scored: with loop.max_loops=0 nothing is asked",
                        cfg.acquisition.rule)
    tracker = job_logger(cfg, out)  # logger=wandb: one run for the whole job
    with Progress(cfg.progress.every_s, cfg.progress.lines) as progress:
        for name, pcfg in phases.items():
            results["phases"][name] = fit_phase(pcfg, out / name, progress, phases, tracker)
        if cfg.ppo.get("enabled"):  # the hand-off: PPO of a policy with this run's final reward model
            from ser.ppo import prompts_from_config, run_ppo

            rm = cfg.ppo.reward_model or results["phases"][phase_name(cfg)]["export"]
            train_prompts, eval_prompts = prompts_from_config(cfg)  # labeled + pool prompts / held-out test prompts
            results["ppo"] = run_ppo(cfg, rm, train_prompts, eval_prompts, progress=progress)
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    if rank_zero_only.rank != 0:  # under ddp every rank runs this function; one writes and prints
        return results
    # paired statistics on the same test pairs: CIs and McNemar p of SER - seed and full - seed
    results["statistics"] = run_statistics(run_outcomes(out, results))
    results["length"] = run_length_statistics(out, results)  # length-controlled accuracy on test
    results_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(results_path, results)
    table = run_table(results)
    (out / "results.md").write_text(table + "\n")
    print(table)
    print(f"results: {results_path}")
    if tracker is not None:
        finish(tracker, results, out)
    return results


def run_table(results: dict) -> str:
    """The run's Table 1 with its statistics, then the length-controlled lines."""
    return "\n".join([format_run_table(results), *length_lines(results.get("length") or {})])


def run_precision(cfg: DictConfig, out: Path) -> PrecisionChoice:
    """Resolve ``trainer.precision`` (``auto``: from the hardware) once per run folder.

    The choice is kept in ``<run>/precision.json``: a run resumed on another machine keeps the
    precision it started with, so it still ends with the selections of an uninterrupted run.
    """
    path = out / "precision.json"
    now = resolve_precision(cfg.trainer.precision, cfg.trainer.get("accelerator"))
    if path.exists():
        saved = PrecisionChoice(**json.loads(path.read_text()))
        if saved.requested == now.requested:
            if saved.precision != now.precision:
                log.warning("resuming with precision %s chosen when this run started (on %s); this machine would "
                            "choose %s. Start a new run folder to use it.", saved.precision, saved.hardware, now.precision)
            return saved
    if rank_zero_only.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, now.to_dict())
    return now


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    results = run_reporting_errors(run, cfg)
    return objective(results)


def objective(results: dict) -> float | None:
    """The value a Hydra sweeper (e.g. Optuna) maximises: validation accuracy of the main phase's
    selected loop. Never test accuracy: the test split must not choose thresholds or settings."""
    first = next(iter(results["phases"].values()))
    val = first.get("val_acc")
    if val is None:
        log.warning("no validation split (data.val_fraction=0): the run returns no objective for a sweeper")
    return val


if __name__ == "__main__":
    main()
