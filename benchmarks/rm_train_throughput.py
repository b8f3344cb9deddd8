"""Reward-model training throughput: ser's Lightning path vs a raw PyTorch loop vs TRL's RewardTrainer.

The work (issue 5): MiniLM, HH-RLHF harmless pairs, max length 256, 8 pairs a batch, fp32,
2 threads. Model loading and tokenization are outside every timing. Real tokens are
``attention_mask.sum()``, padding share is ``1 - real / all``.

* ser: ``RewardModel`` + a Lightning ``Trainer`` built from ``conf/trainer/cpu.yaml`` (CSV logger,
  gradient clipping 1.0, as ``python -m ser.train`` runs it) fitting on ``PreferenceDataModule``'s
  train loader, with ``data.group_by_length`` on ("grouped") and off ("random").
* raw: the same model weights, pairs, token ids, batches (the very same DataLoader, same order),
  batch size, AdamW groups, LR schedule and clipping, in a plain PyTorch loop.
* TRL: ``trl.RewardTrainer`` with its defaults (gradient checkpointing on, dropout off, lr 1e-4,
  random batches, pairs longer than ``max_length`` dropped), told only the work: ``max_length=256``,
  8 pairs a batch, fp32 (``bf16=False``; its default is bf16 autocast). It gets the same pairs,
  tokenized by the same tokenizer without truncation (TRL filters them itself).

Steps ``0 .. warmup-1`` are excluded; ser and raw are compared on the identical window of
batches. In full mode the ser runs go on for ``--acc-steps`` (default: one epoch) and then score
the test split, so grouped and random batches can be compared on accuracy too.

    python benchmarks/rm_train_throughput.py            # full (2 threads; ~25 min)
    OMP_NUM_THREADS=1 python benchmarks/rm_train_throughput.py --quick   # smoke (~1 min)
"""
from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Timer, base_parser, check_line, compose, fit_ser, fresh_net, machine_info, peak_rss_mb, ratio,  # noqa: E402
                    raw_bt_step, raw_optimizer, section, setup_env, table, token_counts, window, write_results)

NAME = "rm_train_throughput"


def parse_args():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--model", default="minilm", help="conf/model/<name> (default minilm)")
    p.add_argument("--data", default="hh_rlhf", help="conf/data/<name> (default hh_rlhf)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8, help="pairs per batch")
    p.add_argument("--warmup", type=int, default=None, help="excluded steps (default 5; quick 1)")
    p.add_argument("--steps", type=int, default=None, help="measured steps per run (default 40; quick 3)")
    p.add_argument("--acc-steps", type=int, default=None,
                   help="steps of the ser runs, then test accuracy (default: one epoch; 0 = no accuracy; quick 0)")
    p.add_argument("--no-trl", action="store_true", help="skip TRL even when it is installed")
    p.add_argument("--trl-no-gc", action="store_true",
                   help="also run TRL with gradient checkpointing off (explains the gap to raw)")
    return p.parse_args()


# --------------------------------------------------------------------------------------------
# Set-up shared by all runs (not timed)
# --------------------------------------------------------------------------------------------

def load_work(args):
    from ser.data import PreferenceDataModule
    from ser.model import load_tokenizer

    cfg = compose([f"model={args.model}", f"data={args.data}", "labeled_fraction=1.0", f"seed={args.seed}",
                   f"data.max_length={args.max_length}", f"data.batch_size={args.batch_size}",
                   "trainer.precision=32-true"])  # fp32 like the raw loop and TRL (precision.py compares bf16)
    tok = load_tokenizer(cfg.model)
    dm = PreferenceDataModule(cfg.data, tok, seed=cfg.seed)
    with Timer() as t:
        dm.setup()
    print(f"data: {dm.summary_line()} (load + tokenize {t.s:.1f} s, not timed below)", flush=True)
    return cfg, tok, dm




def train_loader(dm, grouped: bool):
    """The loader ``ser`` would use at epoch 0 (detached from any earlier Trainer, whose epoch would re-seed it)."""
    dm.cfg.group_by_length = bool(grouped)
    dm.trainer = None
    return dm.train_dataloader()


# --------------------------------------------------------------------------------------------
# ser: RewardModel + Lightning Trainer
# --------------------------------------------------------------------------------------------

def run_ser(cfg, tok, dm, grouped: bool, steps: int, accuracy: bool) -> dict:
    import pytorch_lightning as pl

    from ser.model import pair_accuracy

    class StepClock(pl.Callback):
        def __init__(self):
            self.times, self.tokens, self.pairs = [], [], []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter())
            self.tokens.append(token_counts(batch["attention_mask"]))
            self.pairs.append(int(batch["input_ids"].shape[0]) // 2)

    dm.cfg.group_by_length = bool(grouped)
    clock = StepClock()
    with Timer() as t_fit:
        module = fit_ser(cfg, tok, dm, steps, clock)
    out = {"clock": clock, "fit_s": t_fit.s}
    if accuracy:
        with Timer() as t_acc:
            out["test_acc"] = pair_accuracy(module.net, dm.test, dm.pad_id, batch_size=cfg.loop.score_batch_size)
        out["n_test"] = len(dm.test)
        out["acc_s"] = t_acc.s
    return out


# --------------------------------------------------------------------------------------------
# raw: the same work in plain PyTorch
# --------------------------------------------------------------------------------------------

def run_raw(cfg, tok, dm, grouped: bool, steps: int) -> dict:
    net = fresh_net(cfg, tok).train()
    opt, sched, params = raw_optimizer(net, cfg.optim, steps)
    clip = cfg.trainer.get("gradient_clip_val")
    times, tokens, pairs = [], [], []
    for step, batch in enumerate(train_loader(dm, grouped)):
        if step >= steps:
            break
        pairs.append(raw_bt_step(net, batch, opt, sched, params, clip))
        times.append(time.perf_counter())
        tokens.append(token_counts(batch["attention_mask"]))
    return {"times": times, "tokens": tokens, "pairs": pairs}


# --------------------------------------------------------------------------------------------
# TRL RewardTrainer (optional `bench` extra)
# --------------------------------------------------------------------------------------------

def trl_available() -> str | None:
    try:
        import trl

        return trl.__version__
    except Exception:  # noqa: BLE001
        return None


def run_trl(cfg, tok, dm, steps: int, batch_size: int, max_length: int, gradient_checkpointing: bool | None,
            bf16: bool = False) -> dict:
    """TRL's RewardTrainer with its defaults, told the work (``bf16``: its bf16 autocast; this benchmark: fp32)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from ser.data import Formatter

    c = cfg.data
    # same pairs, same tokenizer and template, no truncation: TRL applies its own max_length (drops)
    full = Formatter(tok, 10**9, c.template, c.use_chat_template, "truncate")
    rows = dm.splits.labeled
    ds = Dataset.from_dict({"chosen_ids": [full.encode(r["prompt"], r["chosen"])[0] for r in rows],
                            "rejected_ids": [full.encode(r["prompt"], r["rejected"])[0] for r in rows]})

    class Counting:
        """TRL's default collator, counting the tokens of every batch it builds (in batch order)."""

        def __init__(self, inner):
            self.inner, self.tokens, self.pairs = inner, [], []

        def __call__(self, examples):
            out = self.inner(examples)
            self.tokens.append(token_counts(out["attention_mask"]))
            self.pairs.append(len(examples))
            return out

    class Clock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter())

    collator = Counting(DataCollatorForPreference(pad_token_id=tok.pad_token_id))
    clock = Clock()
    net = fresh_net(cfg, tok)
    with tempfile.TemporaryDirectory(prefix="ser-bench-trl-") as tmp:
        kw = dict(output_dir=tmp, per_device_train_batch_size=batch_size, max_length=max_length, bf16=bf16,
                  max_steps=steps, report_to="none", save_strategy="no", disable_tqdm=True, seed=cfg.seed,
                  use_cpu=not torch.cuda.is_available())
        if gradient_checkpointing is not None:
            kw["gradient_checkpointing"] = gradient_checkpointing
        args = RewardConfig(**kw)
        trainer = RewardTrainer(model=net, args=args, train_dataset=ds, processing_class=tok,
                                data_collator=collator, callbacks=[clock])
        kept = len(trainer.train_dataset)
        with Timer() as t_fit:
            trainer.train()
    return {"times": clock.times, "tokens": collator.tokens[: len(clock.times)], "pairs": collator.pairs[: len(clock.times)],
            "fit_s": t_fit.s, "pairs_in": len(ds), "pairs_kept": kept,
            "gradient_checkpointing": bool(args.gradient_checkpointing), "lr": args.learning_rate,
            "disable_dropout": bool(args.disable_dropout)}


# --------------------------------------------------------------------------------------------

def main():
    args = parse_args()
    setup_env(args.threads)
    import torch

    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    steps = args.steps if args.steps is not None else (3 if args.quick else 40)
    n_run = warmup + steps
    info = machine_info(args.threads)
    print(f"{NAME}: model={args.model} data={args.data} max_length={args.max_length} batch={args.batch_size} pairs "
          f"fp32 threads={torch.get_num_threads()} warmup={warmup} measured={steps} steps{' (quick)' if args.quick else ''}")
    cfg, tok, dm = load_work(args)
    epoch_steps = math.ceil(len(dm.labeled) / args.batch_size)
    acc_steps = args.acc_steps if args.acc_steps is not None else (0 if args.quick else epoch_steps)
    acc_steps = min(acc_steps, epoch_steps)
    ser_steps = max(n_run, acc_steps)
    runs: dict[str, dict] = {}
    acc0 = None
    if acc_steps:
        from ser.model import pair_accuracy

        with section("test accuracy of the untrained model (reference)"):
            acc0 = pair_accuracy(fresh_net(cfg, tok), dm.test, dm.pad_id, batch_size=cfg.loop.score_batch_size)
            print(f"   untrained test accuracy: {acc0:.3f} on {len(dm.test)} pairs")

    for grouped in (True, False):
        b = "grouped" if grouped else "random"
        with section(f"raw PyTorch loop, {b} batches, {n_run} steps"):
            r = run_raw(cfg, tok, dm, grouped, n_run)
            runs[f"raw/{b}"] = {"variant": "raw", "batching": b, **window(r["times"], r["tokens"], r["pairs"], warmup, n_run)}
        with section(f"ser Lightning path, {b} batches, {ser_steps} steps"
                     + (f" then test accuracy" if acc_steps else "")):
            s = run_ser(cfg, tok, dm, grouped, ser_steps, accuracy=acc_steps > 0)
            ck = s["clock"]
            w = window(ck.times, ck.tokens, ck.pairs, warmup, n_run)
            row = {"variant": "ser", "batching": b, **w, "fit_s": s["fit_s"]}
            if ser_steps > n_run:
                whole = window(ck.times, ck.tokens, ck.pairs, warmup)
                row["run_steps"] = len(ck.times)
                row["run_real_tok_s"] = whole["real_tok_s"]
                row["run_padding_share"] = whole["padding_share"]
            if acc_steps:
                row.update(test_acc=s["test_acc"], n_test=s["n_test"], acc_after_steps=len(ck.times))
            # the raw loop saw exactly these batches: check
            same = ck.tokens[:n_run] == r["tokens"][:n_run]
            row["same_batches_as_raw"] = same
            runs[f"ser/{b}"] = row

    trl_version = None if args.no_trl else trl_available()
    trl_note = None
    if args.no_trl:
        trl_note = "TRL skipped (--no-trl)"
    elif trl_version is None:
        trl_note = "TRL skipped: trl is not installed; install it with: pip install 'ser[bench]' (trl==1.12.0)"
    else:
        variants = [("defaults", None)] + ([("no_gc", False)] if args.trl_no_gc else [])
        for label, gc_flag in variants:
            with section(f"TRL {trl_version} RewardTrainer ({label}), random batches, {n_run} steps"):
                t = run_trl(cfg, tok, dm, n_run, args.batch_size, args.max_length, gc_flag)
                print(f"   TRL kept {t['pairs_kept']} of {t['pairs_in']} pairs (drops pairs over max_length={args.max_length}); "
                      f"gradient checkpointing {t['gradient_checkpointing']}, dropout disabled {t['disable_dropout']}, lr {t['lr']}")
                runs[f"trl/{label}"] = {"variant": f"trl {label}", "batching": "random (TRL)",
                                        **window(t["times"], t["tokens"], t["pairs"], warmup, n_run),
                                        "fit_s": t["fit_s"], "pairs_in": t["pairs_in"], "pairs_kept": t["pairs_kept"],
                                        "gradient_checkpointing": t["gradient_checkpointing"], "lr": t["lr"],
                                        "disable_dropout": t["disable_dropout"]}
    if trl_note:
        print(trl_note, flush=True)

    # ---- ratios, measured in this run
    for k, row in runs.items():
        b = row["batching"] if row["batching"] in ("grouped", "random") else "random"
        row["x_raw_same_batching"] = ratio(row["real_tok_s"], runs[f"raw/{b}"]["real_tok_s"])
        row["x_raw_random"] = ratio(row["real_tok_s"], runs["raw/random"]["real_tok_s"])
        if "trl/defaults" in runs:
            row["x_trl_defaults"] = ratio(row["real_tok_s"], runs["trl/defaults"]["real_tok_s"])
    cols = ["variant", "batching", "steps", "s_per_step", "real_tok_s", "pairs_s", "padding_share",
            "x_raw_same_batching", "x_raw_random"] + (["x_trl_defaults"] if "trl/defaults" in runs else [])
    table(runs.values(), cols, f"Training throughput over steps {warmup}..{n_run - 1} (same batches for ser and raw)")
    if acc_steps:
        acc_rows = []
        for b in ("grouped", "random"):
            r = runs[f"ser/{b}"]
            acc_rows.append({"batching": b, "steps": r["acc_after_steps"], "run_real_tok_s": r.get("run_real_tok_s"),
                             "run_padding_share": r.get("run_padding_share"), "test_acc": r["test_acc"],
                             "n_test": r["n_test"], "fit_s": r["fit_s"]})
        table(acc_rows, list(acc_rows[0]), "ser path: whole run and test accuracy")

    print("\nTargets (issue 5):")
    checks = [check_line("ser / raw real tokens/s, grouped batches", runs["ser/grouped"]["x_raw_same_batching"], 0.95),
              check_line("ser / raw real tokens/s, random batches", runs["ser/random"]["x_raw_same_batching"], 0.95)]
    if "trl/defaults" in runs:
        checks.append(check_line("ser (grouped) / TRL defaults real tokens/s", runs["ser/grouped"]["x_trl_defaults"], 1.5))
        print(f"  info  TRL defaults / raw (random batches) real tokens/s: "
              f"{ratio(runs['trl/defaults']['real_tok_s'], runs['raw/random']['real_tok_s']):.3f} (issue measured ~0.73)")
    print(f"  info  padding share with random (per-batch dynamic) batches: {runs['raw/random']['padding_share']:.3f}"
          f" (issue measured ~0.46); grouped: {runs['raw/grouped']['padding_share']:.3f}")
    acc = None
    if acc_steps:
        g, r = runs["ser/grouped"], runs["ser/random"]
        n = g["n_test"]
        se = math.sqrt(max(g["test_acc"] * (1 - g["test_acc"]) + r["test_acc"] * (1 - r["test_acc"]), 1e-12) / n)
        diff = g["test_acc"] - r["test_acc"]
        acc = {"untrained": acc0, "grouped": g["test_acc"], "random": r["test_acc"], "diff": diff, "se_diff": se, "n_test": n,
               "steps": g["acc_after_steps"]}
        checks.append(check_line("test accuracy grouped - random (no drop beyond 2 SE)", diff, -2 * se))
    payload = {"benchmark": NAME, "quick": args.quick, "machine": info,
               "work": {"model": args.model, "data": args.data, "max_length": args.max_length, "batch_pairs": args.batch_size,
                        "dtype": "float32", "train_pairs": len(dm.labeled), "test_pairs": len(dm.test),
                        "warmup_steps": warmup, "measured_steps": steps, "acc_steps": acc_steps,
                        "data_summary": dm.summary_line()},
               "runs": runs, "accuracy": acc, "trl": trl_version, "trl_note": trl_note, "targets": checks,
               "peak_rss_mb": peak_rss_mb()}
    write_results(NAME, payload, args.quick, args.out)


if __name__ == "__main__":
    main()
