"""The SER loop as a Lightning callback.

One ``Trainer.fit`` runs every loop: loop n trains ``epochs_per_loop`` epochs on the DataModule's
current pairs; at its end the callback scores the pool, asks for human labels when
``acquisition`` says so (:func:`ser.acquisition.label_and_acquire`: after the scoring, before
self-labelling), decides the learning status, asks the DataModule to add the selected pairs (the
train dataloader is rebuilt every epoch), restarts the LR schedule, and goes on, or stops the fit
at Stop / empty pool / ``max_loops``.

Determinism and resume: every epoch re-seeds the RNGs from ``seed + epoch`` and the batch order
comes from the same number, so a run resumed from the last epoch checkpoint (callback state,
DataModule selections, weights, optimizer) retrains exactly as the uninterrupted run would.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from ser import acquisition as aq
from ser import faults
from ser import length_control as lc
from ser import status as st
from ser.calibration import cross_fitted
from ser.model import score_sequences
from ser.progress import Progress
from ser.selection import mc_agreement, previous_a1_better, select as select_by_confidence

log = logging.getLogger(__name__)


def thresholds_from_config(cfg) -> st.Thresholds:
    return st.Thresholds(tau_high=cfg.tau_high, tau_low=cfg.tau_low, tau_delta=cfg.tau_delta,
                         min_count=cfg.min_count, rule=cfg.rule)


#: loop.select: which loop's weights are the phase's final model
SELECT_MODES = ("last", "best_val")


@dataclass
class Labeling:
    """What self-labeling decided from one loop's pool scores (see :func:`label_pool`)."""

    fields: dict  # diagnostics: status, counts, precision, score statistics, gap histogram
    pool_index: np.ndarray  # the selected pairs, as indices into the whole pool
    first_is_chosen: np.ndarray  # their orientation: a1 is the chosen answer
    stop: bool  # status Stop, or nothing selected
    arrays: dict  # raw material for pool_scores_loopN.npz
    p_first: np.ndarray | None = None  # P(a1 > a2) of every scored pair, as the selection sees it (acquisition)


def label_pool(scores: np.ndarray, labeled: np.ndarray | None, alive: np.ndarray, hidden: np.ndarray,
               th: st.Thresholds, centring: str, scaling: str, selection=None, val: dict | None = None,
               previous: dict | None = None, mc: np.ndarray | None = None,
               lengths: dict[str, np.ndarray] | None = None) -> Labeling:
    """Self-label the pool from its scores (``[a1 of every alive pair..., a2 ...]``) and the labeled
    pairs' scores: centre and scale, p = sigmoid, then the learning status and its selection
    (``selection.strategy=status``, the paper) or a confidence strategy (``ser.selection``, from
    this loop's validation scores ``val`` and the ``previous`` loop's pool scores). Pure: a run
    reusing a cached loop 0 labels the cached scores with its own thresholds through this.

    ``lengths``: the answer lengths of the whole pool (``a1_tokens``, ``a2_tokens``, ...; indexed
    like ``hidden``): the RM's preference for the longer answer on the pool and its kept pairs goes
    to the diagnostics, and ``selection.length_balance`` needs them (it then keeps as many pairs
    whose chosen-by-RM answer is the longer as the shorter: ``ser.length_control.balance_by_length``)."""
    n = len(alive)
    bad = int(np.sum(~np.isfinite(scores)))
    if bad:
        log.warning("self-labeling: %d of %d pool scores are NaN or infinite (a diverged RM?); pairs whose "
                    "probability is undefined are not selected", bad, len(scores))
    centred = st.centre_scores(scores, centring, labeled)
    scaled = st.scale_scores(centred, scaling, scores, labeled)
    p = st.probabilities(scaled)
    p1, p2 = p[:n], p[n:]
    strategy = selection.get("strategy", "status") if selection is not None else "status"
    extra = {}
    if strategy == "status":
        decision = st.decide_status(p1, p2, th)
        sel = st.select_pairs(p1, p2, decision.status, th)
        status, index, first = decision.status.name, sel.index, np.asarray(sel.first_is_chosen)
        extra = {"n_easy": decision.n_easy, "n_hard": decision.n_hard, "min_count": decision.min_count}
        p_first = aq.pair_probability(p1, p2)
    else:
        if not val or "val_chosen" not in val:  # no validation pairs left (config checks val_fraction > 0)
            val = {"val_chosen": np.zeros(0), "val_rejected": np.zeros(0)}
        prev = previous_a1_better(previous, alive) if previous is not None else None
        cs = select_by_confidence(strategy, scores[:n], scores[n:], val["val_chosen"], val["val_rejected"],
                                  selection.confidence, selection.target_precision, selection.min_pairs, prev,
                                  mc, selection.get("mc_min_agreement", 1.0))
        if cs.fields.get("note"):
            log.warning("selection.strategy=%s: %s; self-labeling stops", strategy, cs.fields["note"])
        index, first = cs.index, np.asarray(cs.first_is_chosen)
        p_first = cs.p if cs.p is not None else np.full(n, 0.5)  # no temperature: the RM cannot tell any pair
        status = strategy.upper() if len(index) else st.Status.STOP.name
        extra = cs.fields
    unbalanced = None
    if selection is not None and selection.get("length_balance", False):  # after the strategy, any strategy
        if lengths is None:
            raise ValueError("selection.length_balance needs the pool's answer lengths")
        index = np.asarray(index, dtype=np.int64)
        margin = np.abs(p1 - p2) if strategy == "status" else np.abs(scores[:n] - scores[n:])
        keep = lc.balance_by_length(first, margin[index], lengths["a1_tokens"][alive][index],
                                    lengths["a2_tokens"][alive][index])
        unbalanced = index
        index, first = index[keep], first[keep]
        extra = {**extra, "length_balance_dropped": int(np.sum(~keep))}
    if lengths is not None:
        extra = {**extra, **lc.pool_fields(scores[:n], scores[n:], lengths["a1_tokens"][alive],
                                           lengths["a2_tokens"][alive], index, first, hidden[alive])}
    counts, edges = st.gap_histogram(p1, p2)
    pool_index = alive[index]
    fields = {
        "pool": n, "status": status, **extra, "kept": len(index),
        "pseudo_label_precision": st.pseudo_label_precision(st.Selection(pool_index, first), hidden),
        "score_mean": float(scores.mean()), "score_std": float(scores.std()),
        "centre": float(scores.mean() - centred.mean()),
        "scale": float(centred.std() / scaled.std()) if scaled.std() > 0 else 1.0,
        "gap_hist": counts.tolist(), "gap_edges": edges.tolist(),
    }
    arrays = {"pool_index": alive, "scores_a1": scores[:n], "scores_a2": scores[n:], "p1": p1, "p2": p2,
              "hidden_a1_better": hidden[alive], "kept": np.asarray(index, dtype=np.int64)}
    if mc is not None:
        arrays["mc_agreement"] = np.asarray(mc, dtype=np.float32)
    if unbalanced is not None:  # what the strategy kept before selection.length_balance
        arrays["kept_unbalanced"] = np.asarray(unbalanced, dtype=np.int64)
    stop = status == st.Status.STOP.name or len(index) == 0
    return Labeling(fields, pool_index, first, stop, arrays, p_first)


def _is_fsdp(trainer) -> bool:
    """Sharded weights: scoring and weight IO must go through the strategy's wrapped module."""
    return type(trainer.strategy).__name__ == "FSDPStrategy"


def chosen_wins(scores: np.ndarray) -> float:
    """Pairwise accuracy of ``[chosen..., rejected...]`` scores: the share where chosen is higher."""
    n = len(scores) // 2
    return float(np.mean(scores[:n] > scores[n:])) if n else float("nan")


class SERLoop(Callback):
    """Drives the loops; ``history`` holds one diagnostics dict per loop (loop 0 = seed)."""

    def __init__(self, loop_cfg, thresholds_cfg, seed: int, out_dir: str | Path,
                 progress: Progress | None = None, phase: str = "ser", selection_cfg=None, acquisition_cfg=None):
        self.cfg = loop_cfg
        self.th = thresholds_from_config(thresholds_cfg)
        self.selection = selection_cfg  # None or selection.strategy=status: the paper's status machine
        self.acquisition = acquisition_cfg  # None or rule=none: no human labels asked (ser.acquisition)
        self.centring = thresholds_cfg.centring
        self.scaling = thresholds_cfg.get("scaling", "none")
        self.seed = seed
        self.out_dir = Path(out_dir)
        self.progress = progress or Progress(enabled=False)
        self.phase = phase
        # state (checkpointed)
        self.loop = 0
        self.loop_start_epoch = 0
        self.loop_start_step = 0
        self.loop_steps = 0
        self.loop_wall = 0.0
        self.history: list[dict] = []
        self.best_loop: int | None = None  # loop.select=best_val: the loop whose weights are kept so far
        #: phase reuse (ser.reuse): told when loop 0 is trained, evaluated and its pool scored
        self.on_loop0_scored: Callable[[pl.Trainer, dict, dict, dict], None] | None = None
        self.finished = False
        self._t0 = None
        self._val: dict | None = None  # this loop's validation scores (confidence strategies fit T on them)

    # -- checkpointed state ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("loop", "loop_start_epoch", "loop_start_step", "loop_steps",
                                               "loop_wall", "history", "best_loop", "finished")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    @property
    def max_epochs(self) -> int:
        return self.cfg.epochs_per_loop * (self.cfg.max_loops + 1)

    # -- helpers -----------------------------------------------------------------------------
    def _score(self, trainer, module, groups: dict[str, list], what: str, dropout: bool = False) -> dict[str, np.ndarray]:
        """Score named groups of sequences in one length-sorted pass; the scores of each group."""
        seqs = [s for g in groups.values() for s in g]
        forward = None
        if _is_fsdp(trainer):  # sharded weights: through the wrapped root module
            root = trainer.strategy.model
            forward = lambda *batch: root(*batch)  # noqa: E731  (RewardModel.forward: padded or packed)
        dcfg = trainer.datamodule.cfg
        with trainer.precision_plugin.forward_context():  # bf16-mixed scores under autocast, as it trains
            scores = score_sequences(module.net, seqs, trainer.datamodule.pad_id, self.cfg.score_batch_size, forward=forward,
                                     dropout=dropout, packing=dcfg.packing, pack_length=dcfg.pack_length,
                                     device=module.device, rank=trainer.global_rank, world_size=trainer.world_size,
                                     gather=trainer.strategy.all_gather,
                                     progress=trainer.progress_bar_callback is not None,
                                     on_batch=self.progress.scorer(self.phase, f"loop {self.loop} {what}"))
        out, start = {}, 0
        for name, g in groups.items():
            out[name] = scores[start:start + len(g)]
            start += len(g)
        return out

    def _evaluate(self, trainer, module) -> dict:
        """Accuracy of this loop's weights on test, val and every named eval set, in one
        length-sorted pass; the scores of every pair go to ``eval_scores_loop{n}.npz``
        (``{set}_chosen``, ``{set}_rejected``, pairs in split order: the same for every phase of
        a run; with each pair's content key and answer lengths, see
        ``PreferenceDataModule.evaluation_metadata``), the raw material of the paired statistics in
        ``ser report``."""
        sets = trainer.datamodule.evaluation_sets()
        flat = lambda pairs: [a for a, _ in pairs] + [b for _, b in pairs]  # noqa: E731
        s = self._score(trainer, module, {name: flat(p) for name, p in sets.items()}, f"({', '.join(sets)})")
        if trainer.is_global_zero:
            arrays = {}
            for name, v in s.items():
                n = len(v) // 2
                arrays[f"{name}_chosen"], arrays[f"{name}_rejected"] = v[:n].astype(np.float32), v[n:].astype(np.float32)
            arrays.update(trainer.datamodule.evaluation_metadata())  # pair keys and answer lengths
            self.out_dir.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(self.out_dir / f"eval_scores_loop{self.loop}.npz", **arrays)
        out = {f"{name}_acc": chosen_wins(v) for name, v in s.items()}
        if "test" in s:  # length control in tokens, the direction of the training labels (ser.length_control)
            meta, n = trainer.datamodule.evaluation_metadata(), len(s["test"]) // 2
            direction = trainer.datamodule.labeled_length_direction()["tokens"]["direction"]
            out.update(lc.loop_test_fields(s["test"][:n], s["test"][n:], meta["test_chosen_tokens"],
                                           meta["test_rejected_tokens"], direction))
        if "val" in s:  # calibration of the pairwise confidence, cross-fitted on validation
            n = len(s["val"]) // 2
            self._val = {"val_chosen": s["val"][:n], "val_rejected": s["val"][n:]}
            cal = cross_fitted(s["val"][:n], s["val"][n:])
            if cal["note"]:
                log.warning("loop %d: validation calibration is undefined (%s): NaN logged for it; training goes on",
                            self.loop, cal["note"])
            out.update(val_ece=cal["ece"], val_ece_raw=cal["ece_raw"], val_temperature=cal["temperature"],
                       reliability=cal["bins"])
        return out

    def _seed_path(self) -> Path:
        return self.out_dir / "seed_weights.pt"

    def _best_path(self) -> Path:
        return self.out_dir / "best_val_weights.pt"

    def _save_weights(self, trainer, path: Path) -> None:
        """The whole model's weights through the strategy (gathered under fsdp), written by rank 0."""
        state = trainer.strategy.lightning_module_state_dict()
        if trainer.is_global_zero:
            tmp = path.with_name(path.name + ".tmp")
            torch.save(state, tmp)
            tmp.replace(path)
        trainer.strategy.barrier(f"ser_save_{path.stem}")

    @staticmethod
    def _load_weights(trainer, module, path: Path) -> None:
        state = torch.load(path, map_location="cpu")
        strategy = trainer.strategy
        if _is_fsdp(trainer):  # load the full state dict into the sharded model
            from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel as FSDP, StateDictType

            with FSDP.state_dict_type(strategy.model, StateDictType.FULL_STATE_DICT,
                                      FullStateDictConfig(offload_to_cpu=True, rank0_only=False)):
                strategy.model.load_state_dict(state)
        else:
            module.load_state_dict(state)

    def select_final(self, trainer, module) -> int:
        """Load the selected loop's weights (``loop.select=best_val``); the selected loop's index."""
        if self.cfg.get("select", "last") == "best_val" and self.best_loop is not None:
            if self.best_loop != self.history[-1]["loop"]:
                self._load_weights(trainer, module, self._best_path())
            return self.best_loop
        return self.history[-1]["loop"]

    # -- hooks -------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, module) -> None:
        epoch = trainer.current_epoch
        pl.seed_everything(self.seed + 1000 * epoch, workers=True, verbose=False)
        if epoch == self.loop_start_epoch:  # a new loop begins
            self.loop_start_step = trainer.global_step
            # optimizer steps (what global_step and the LR schedule count): with gradient accumulation
            # an epoch of n batches makes ceil(n / k) steps (Lightning steps on the last partial group)
            per_epoch = math.ceil(int(trainer.num_training_batches) / max(1, int(trainer.accumulate_grad_batches)))
            self.loop_steps = self.cfg.epochs_per_loop * per_epoch
            self.loop_wall = 0.0
            if self.loop > 0 and self.cfg.restart_from_seed:
                self._load_weights(trainer, module, self._seed_path())
                for opt in trainer.optimizers:
                    opt.state.clear()
            done = [h for h in self.history if h["steps"] > 0]
            eta = ""
            if done:  # seconds per step measured in earlier loops of this run
                per_step = sum(h["train_s"] for h in done) / sum(h["steps"] for h in done)
                eta = f", ETA ~{per_step * self.loop_steps:.0f} s at {per_step:.2f} s/step"
            log.info("loop %d: %d training pairs, %d steps%s", self.loop, len(trainer.datamodule.train_pairs()),
                     self.loop_steps, eta)
            # the job ETA: this loop, and every loop still allowed planned as long as this one
            self.progress.eta.plan(self.phase, self.loop_start_step + self.loop_steps * (self.cfg.max_loops - self.loop + 1))
        module.set_schedule(self.loop_start_step, self.loop_steps)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx) -> None:
        faults.point("train_step")

    def on_train_epoch_end(self, trainer: pl.Trainer, module) -> None:
        self.loop_wall += time.perf_counter() - (self._t0 or time.perf_counter())
        epoch = trainer.current_epoch
        if epoch + 1 - self.loop_start_epoch < self.cfg.epochs_per_loop:
            return
        dm = trainer.datamodule
        t0 = time.perf_counter()
        diag = {
            "loop": self.loop,
            "train_pairs": len(dm.train_pairs()),
            "steps": trainer.global_step - self.loop_start_step,
            "global_step": trainer.global_step,
            "train_s": round(self.loop_wall, 2),
            **self._evaluate(trainer, module),
        }
        if self.loop == 0 and self.cfg.restart_from_seed:
            self._save_weights(trainer, self._seed_path())
        if self.cfg.get("select", "last") == "best_val" and "val_acc" in diag:
            best = next((h for h in self.history if h["loop"] == self.best_loop), None)
            if best is None or diag["val_acc"] > best["val_acc"]:  # ties keep the earlier loop
                self.best_loop = self.loop
                self._save_weights(trainer, self._best_path())
            diag["best_val_loop"] = self.best_loop
        elif self.cfg.get("select", "last") == "best_val" and self.loop == 0:
            log.warning("loop.select=best_val: no validation pairs are left (all dropped in formatting?): "
                        "the last loop's weights will be kept")
        stop_reason = None
        alive = dm.pool_indices()
        if self.loop >= self.cfg.max_loops:
            stop_reason = "max_loops"
        elif len(alive) == 0:
            stop_reason = "empty_pool"
        else:
            stop_reason = self._self_label(trainer, module, alive, diag)
        diag["eval_s"] = round(time.perf_counter() - t0, 2)
        diag["stop"] = stop_reason
        self.history.append(diag)
        self._log(trainer, diag)
        self.loop += 1
        self.loop_start_epoch = epoch + 1
        if stop_reason is not None:
            self.finished = True
            trainer.should_stop = True

    def _self_label(self, trainer, module, alive: np.ndarray, diag: dict) -> str | None:
        dm = trainer.datamodule
        t0 = time.perf_counter()
        groups = {"pool": [dm.pool[i][0] for i in alive] + [dm.pool[i][1] for i in alive]}
        if self.centring == "labeled_mean" or self.scaling == "labeled_std" or self.on_loop0_scored is not None:
            groups["labeled"] = [s for pair in dm.labeled_pairs() for s in pair]  # one pass with the pool
        scored = self._score(trainer, module, groups, "(pool)" if len(groups) == 1 else "(pool, labeled)")
        scores, labeled = scored["pool"], scored.get("labeled")
        faults.point("pool_scored")
        if self.loop == 0 and self.on_loop0_scored is not None:  # phase reuse: loop 0 before any threshold acts
            self.on_loop0_scored(trainer, dict(diag, label_s=round(time.perf_counter() - t0, 2)),
                                 {"pool": scores, "labeled": labeled, "alive": alive, "hidden": dm.pool_hidden,
                                  "pair_id": dm.pool_pair_ids(), "a1_first": dm.pool_a1_first(), **dm.pool_lengths()},
                                 self.state_dict())
        previous = None  # only `consistent` reads the previous loop's pool scores
        prev_file = self.out_dir / f"pool_scores_loop{self.loop - 1}.npz"
        if self.selection is not None and self.selection.strategy == "consistent" and self.loop > 0 and prev_file.exists():
            previous = dict(np.load(prev_file))
        label = lambda mc: label_pool(scores, labeled, alive, dm.pool_hidden, self.th, self.centring,  # noqa: E731
                                      self.scaling, self.selection, self._val, previous, mc, dm.pool_lengths())
        relabel = lambda sc, lb, al, mc: label_pool(sc, lb, al, dm.pool_hidden, self.th, self.centring,  # noqa: E731
                                                    self.scaling, self.selection, self._val, previous, mc,
                                                    dm.pool_lengths())
        passes = int(self.selection.get("mc_passes", 0)) if self.selection is not None else 0
        if passes > 0 and self.selection.strategy != "status":
            t_mc = time.perf_counter()
            n = len(alive)
            # MC dropout only changes which of the strategy's pairs stay: score those (or every pair)
            cand = label(None).arrays  # selection.length_balance acts after the dropout filter: its candidates
            which = cand.get("kept_unbalanced", cand["kept"]) if self.selection.get("mc_scope", "candidates") == \
                "candidates" else np.arange(n)
            mc = np.full(n, np.nan)
            if len(which):
                seqs = {"pool": [groups["pool"][i] for i in which] + [groups["pool"][n + i] for i in which]}
                runs = [self._score(trainer, module, seqs, f"({len(which)} pairs, dropout pass {k + 1})", dropout=True)["pool"]
                        for k in range(passes)]
                m = len(which)
                mc[which] = mc_agreement(scores[which], scores[n + which], [(r[:m], r[m:]) for r in runs])
            diag.update(mc_s=round(time.perf_counter() - t_mc, 2), mc_scored=int(len(which)))
        else:
            mc = None
        lab, acquired = self._acquire(trainer, relabel, scores, labeled, alive, mc)
        diag.update(lab.fields, label_s=round(time.perf_counter() - t0, 2))
        if trainer.is_global_zero:  # raw material for offline analysis (and Fig. 6)
            lengths = {k: v[lab.arrays["pool_index"]] for k, v in dm.pool_lengths().items()}
            np.savez_compressed(self.out_dir / f"pool_scores_loop{self.loop}.npz", **lab.arrays, **lengths)
        if lab.stop:
            return "stop_status"
        self.apply_labeling(dm, lab, acquired)
        return None

    def _acquire(self, trainer, label, scores, labeled, alive, mc) -> tuple[Labeling, aq.Acquired | None]:
        """:func:`ser.acquisition.label_and_acquire` with this run's acquisition settings and oracle."""
        dm, acq = trainer.datamodule, self.acquisition
        if not aq.is_active(acq):
            return label(scores, labeled, alive, mc), None
        previous = None
        prev_file = self.out_dir / f"pool_scores_loop{self.loop - 1}.npz"
        if acq.rule == "disagree" and self.loop > 0 and prev_file.exists():
            previous = dict(np.load(prev_file))
        oracle = aq.make_oracle(acq, dm.pool_hidden, dm.pool_pair_ids(), dm.pool_a1_first())
        write = (lambda req: aq.write_request(self.out_dir, req, acq.rule, oracle.kind, dm.pool_pair_ids())) \
            if trainer.is_global_zero else None
        return aq.label_and_acquire(label, scores, labeled, alive, mc, acq, oracle, self.seed, self.loop,
                                    dm.human_count(), len(dm.pool), previous, write)

    def apply_labeling(self, dm, lab: Labeling, acquired: aq.Acquired | None = None) -> None:
        """Add a labeling's selection, and the human labels asked for, to the DataModule (the pairs
        of the next loop)."""
        if acquired is not None:
            dm.add_human(self.loop + 1, acquired.index, acquired.a1_better)
        if acquired is None or len(lab.pool_index):
            dm.add_selection(self.loop + 1, lab.pool_index, lab.first_is_chosen, self.cfg.remove_selected)
        if not self.cfg.keep_seed_pairs:
            dm.include_seed = False

    def _log(self, trainer, diag: dict) -> None:
        log.info("loop %d: %s", diag["loop"], {k: v for k, v in diag.items() if k not in ("gap_hist", "gap_edges", "reliability")})
        if trainer.is_global_zero:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # rewritten whole from the (checkpointed) history: a resumed run never duplicates a loop
            tmp = self.out_dir / "loops.jsonl.tmp"
            tmp.write_text("".join(json.dumps(d) + "\n" for d in self.history))
            tmp.replace(self.out_dir / "loops.jsonl")
        metrics = {f"loop/{k}": float(v) for k, v in diag.items() if isinstance(v, (int, float)) and v is not None}
        if diag.get("status") in st.Status.__members__:
            metrics["loop/status_code"] = float(st.Status[diag["status"]].value)
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
