"""Decoder reward models at CPU speed (issue 23): SmolLM2-135M training real tokens/s and scoring sequences/s, against this CPU's GEMM peak.

The work: HH-RLHF harmless train split, ``data.max_length`` 128, 8 pairs a batch (ser's length-
grouped batches), the precision ``trainer.precision=auto`` picks here (``--precision`` to force),
2 threads. Model loading and tokenization are outside every timing. Training variants, on the
very same batches in the same order (checked):

* ``raw``: the plain Hugging Face model (``model(input_ids, attention_mask).logits``), AdamW with
  ser's parameter groups, LR schedule and clipping, ``-logsigmoid(r_c - r_r)``, a plain loop;
  ``raw fused``: the same with ``AdamW(fused=True)`` (what the fused CPU kernel would give: ser
  cannot use it under Lightning's bf16-mixed, which refuses to clip gradients of a fused optimizer).
* ``ser``: ``RewardModel`` + a Lightning ``Trainer`` from ``conf/trainer/cpu.yaml`` fitting on
  ``PreferenceDataModule`` (what ``python -m ser.train`` runs); ``ser foreach``:
  ``optim.cpu_impl=foreach`` (AdamW's multi-tensor kernels); ``ser packing``:
  ``data.packing=true``; ``ser prefix``: ``data.prefix_sharing=true`` (a pair's shared prefix run once);
  ``ser eager``: ``model.attn_implementation=eager`` (transformers' matmul-softmax attention instead of
  SDPA); ``ser lora8``: ``model.lora.r=8`` (the paper's setting).
* ``trl``: TRL's ``RewardTrainer`` with its defaults (only when ``trl`` is importable:
  ``pip install 'ser[bench]'``; random batches of its own, so not the same batches).

Scoring variants (``score_sequences``, what every SER loop runs on the pool and the evaluation
sets): ``ser padded`` and ``ser packed`` (``data.packing=true``), both sides of the test pairs.
Packing can only win back padding: ``--batching random`` (``data.group_by_length=false``) and
``--pack-length`` (rows wider than a batch's longest sequence) show where it has some to win;
``--prompt-cut pair`` (``data.prompt_cut=pair``) cuts a pair's prompt the same for both sides, so
that ``ser prefix`` has a prompt to share (ser cuts each side on its own by default).

Each variant runs ``--warmup`` steps (not timed), then ``--rounds`` rounds of ``--round-steps``
steps; the clock is read after every optimizer step, so data, forward, backward, clipping,
optimizer and logging are inside. Figures are the median over rounds with the min-max spread.
Achieved FLOP/s = 6 N real tokens / s for training (4 N with LoRA: no weight gradients of the
frozen layers), 2 N for scoring, N = non-embedding parameters; "% of peak" divides it by the best
``torch.mm`` of ``--gemm-n``^3 in the precision used (``benchmarks/precision.py``'s ``gemm_peak``).
``run/real`` is the tokens a forward runs (padding included, a shared prefix once) per real token the
batch's sequences hold; for ``ser prefix`` the FLOP rate is then an effective one (the work of the
unshared sequences per second). The line "shared prefix" gives the share of the train split's tokens
that are a pair's shared prefix at this ``max_length``: the most prefix sharing can save.

    python benchmarks/decoder_rm.py                                   # this CPU (8 variants x 14 steps + scoring)
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/decoder_rm.py   # an AVX2-only CPU
    OMP_NUM_THREADS=1 python benchmarks/decoder_rm.py --quick --model tiny            # smoke (~1 min)

Figures go to ``benchmarks/results/decoder_rm[-isa-<cap>][-quick].json``.
"""
from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from omegaconf import OmegaConf  # noqa: E402

from common import (base_parser, check_line, cpu_line, fit_ser, fresh_net, machine_info, ratio, raw_bt_step,  # noqa: E402
                    raw_optimizer, section, setup_env, table, write_results)
from decoder_work import add_work_args, autocast, load_work, non_embedding_params, score_answers, spread, use_bf16  # noqa: E402

NAME = "decoder_rm"
# training variant -> (path, the variant its ratio is against)
TRAIN_VARIANTS = {"raw": ("raw", None), "raw fused": ("raw", "raw"), "ser": ("ser", "raw"), "ser foreach": ("ser", "ser"),
                  "ser packing": ("ser", "ser"), "ser prefix": ("ser", "ser"), "ser eager": ("ser", "ser"),
                  "ser lora8": ("ser", "ser")}
# the config overrides of each ser variant; AdamW's keyword arguments of each raw variant
SER_OVERRIDES = {"ser": {}, "ser foreach": {"optim.cpu_impl": "foreach"}, "ser packing": {"data.packing": True},
                 "ser prefix": {"data.prefix_sharing": True},
                 "ser eager": {"model.attn_implementation": "eager"}, "ser lora8": {"model.lora.r": 8}}
RAW_ADAMW = {"raw": {}, "raw fused": {"fused": True}}
SCORE_VARIANTS = {"ser padded": None, "ser packed": "ser padded"}


def parse_args():
    p = base_parser(__doc__.split("\n")[0])
    add_work_args(p)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: what trainer.precision=auto picks on this CPU")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (default 2; quick 1)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; quick 2)")
    p.add_argument("--round-steps", type=int, default=None, help="training steps per round (default 4; quick 1)")
    p.add_argument("--score-seqs", type=int, default=None, help="sequences scored per round (default 256; quick 16)")
    p.add_argument("--score-batch", type=int, default=64, help="sequences per scoring batch (loop.score_batch_size)")
    p.add_argument("--variants", default=",".join(TRAIN_VARIANTS),
                   help=f"training variants, comma-separated (default all: {','.join(TRAIN_VARIANTS)})")
    p.add_argument("--gemm-n", type=int, default=1024, help="matrix size of the GEMM peak (default 1024)")
    p.add_argument("--budget", type=float, default=10.0, help="seconds of timing for the GEMM peak (default 10)")
    p.add_argument("--batching", choices=("grouped", "random"), default="grouped",
                   help="grouped: data.group_by_length=true (ser's default; little padding); random: false")
    p.add_argument("--pack-length", type=int, default=None,
                   help="data.pack_length of the packed runs (default null: the batch's longest sequence)")
    p.add_argument("--prompt-cut", choices=("answer", "pair"), default="answer",
                   help="data.prompt_cut: answer (each side's prompt cut on its own, ser's default) or pair "
                        "(the same cut for both sides, so they share the prompt: what ser prefix can then save)")
    p.add_argument("--no-trl", action="store_true", help="skip TRL even when it is installed")
    return p.parse_args()


def batch_tokens(batch) -> tuple[int, int]:
    """(real tokens the batch's sequences hold, tokens the forward runs incl. padding) of a padded, packed
    or prefix-shared batch (the last runs a pair's shared prefix once, so it can run fewer than it holds)."""
    if "lengths" in batch:
        return int(batch["lengths"].sum()), int(batch["input_ids"].numel())
    return int(batch["attention_mask"].sum()), int(batch["attention_mask"].numel())


def rounds_of(times: list[float], tokens: list[int], warmup: int, rounds: int, per_round: int) -> list[tuple[float, float]]:
    """(real tokens/s, seconds) of each round of ``per_round`` steps after ``warmup`` steps.

    ``times[i]`` is the clock at the end of step ``i``, so a round starts at the end of the step before it.
    """
    out = []
    for r in range(rounds):
        a, b = warmup + r * per_round, warmup + (r + 1) * per_round  # steps a..b-1
        secs = times[b - 1] - times[a - 1]
        out.append((sum(tokens[a:b]) / secs, secs))
    return out




def padded_loader(dm):
    """ser's training loader at epoch 0 (detached from any earlier Trainer), padded."""
    dm.cfg.packing = dm.cfg.prefix_sharing = False
    dm.trainer = None
    return dm.train_dataloader()


def run_raw(cfg, tok, dm, n_steps: int, bf16: bool, adamw: dict) -> dict:
    net = fresh_net(cfg, tok).train()
    opt, sched, params = raw_optimizer(net, cfg.optim, n_steps, **adamw)
    clip = cfg.trainer.get("gradient_clip_val")
    times, tokens = [], []
    for step, batch in enumerate(padded_loader(dm)):
        if step >= n_steps:
            break
        raw_bt_step(net, batch, opt, sched, params, clip, autocast(bf16))
        times.append(time.perf_counter())
        tokens.append(batch_tokens(batch))
    return {"times": times, "tokens": tokens}


def run_ser(cfg, tok, dm, n_steps: int) -> dict:
    import pytorch_lightning as pl

    class StepClock(pl.Callback):
        def __init__(self):
            self.times, self.tokens = [], []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter())
            self.tokens.append(batch_tokens(batch))

    dm.cfg.packing, dm.cfg.prefix_sharing = cfg.data.packing, cfg.data.prefix_sharing
    clock = StepClock()
    fit_ser(cfg, tok, dm, n_steps, clock)
    dm.cfg.packing = dm.cfg.prefix_sharing = False
    return {"times": clock.times, "tokens": clock.tokens}


def run_trl_rounds(cfg, tok, dm, n_steps: int, args, bf16: bool) -> dict:
    from rm_train_throughput import run_trl

    t = run_trl(cfg, tok, dm, n_steps, args.batch_pairs, args.max_length, None, bf16=bf16)
    return {"times": t["times"], "tokens": t["tokens"], "note": f"kept {t['pairs_kept']} of {t['pairs_in']} pairs; "
            f"gradient checkpointing {t['gradient_checkpointing']}, lr {t['lr']}"}


def trl_version() -> str | None:
    try:
        import trl

        return trl.__version__
    except ImportError:
        return None


def score_rounds(net, seqs, pad_id, batch_size: int, bf16: bool, packing: bool, pack_length: int | None, rounds: int):
    """(scores, seconds per round) of ``score_sequences`` over ``seqs``; one untimed warm-up pass first."""
    from ser.model import score_sequences

    run = lambda: score_sequences(net, seqs, pad_id, batch_size, packing=packing, pack_length=pack_length)  # noqa: E731
    with autocast(bf16):
        scores = run()
        secs = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            run()
            secs.append(time.perf_counter() - t0)
    return scores, secs


def main():
    args = parse_args()
    setup_env(args.threads)
    import torch

    from precision import gemm_peak

    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    rounds = args.rounds if args.rounds is not None else 2 if args.quick else 3
    per_round = args.round_steps if args.round_steps is not None else 1 if args.quick else 4
    n_score = args.score_seqs if args.score_seqs is not None else 16 if args.quick else 256
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in TRAIN_VARIANTS]
    if unknown:
        sys.exit(f"error: --variants: unknown {', '.join(unknown)}; choose from {', '.join(TRAIN_VARIANTS)}")
    bf16 = use_bf16(args.precision)
    prec = "bf16 autocast" if bf16 else "fp32"
    info = machine_info(args.threads)
    cpu = cpu_line()
    n_steps = warmup + rounds * per_round
    print(f"{NAME}: {cpu}\n  torch {torch.__version__}, {torch.get_num_threads()} threads; model={args.model} "
          f"max_length={args.max_length} (prompt cut per {args.prompt_cut}) batch={args.batch_pairs} pairs ({args.batching}), {prec}; {warmup} warm-up + {rounds} rounds x "
          f"{per_round} steps per variant{' (quick)' if args.quick else ''}", flush=True)
    cfg, tok, dm = load_work(args.model, args.max_length, args.batch_pairs, args.seed, bf16,
                             [f"data.group_by_length={args.batching == 'grouped'}", f"data.prompt_cut={args.prompt_cut}",
                              f"data.pack_length={args.pack_length if args.pack_length else 'null'}"])
    n_params = non_embedding_params(fresh_net(cfg, tok))
    print(f"  data: {dm.summary_line()}\n  N = {n_params / 1e6:.1f}M non-embedding parameters", flush=True)
    shared = shared_prefix_share(dm.labeled)
    print(f"  shared prefix: {100 * shared:.1f}% of the train split's tokens are a pair's shared prefix "
          f"(prefix sharing runs {1 / (1 - shared):.2f}x fewer tokens at most)", flush=True)
    with section(f"GEMM peak ({args.gemm_n}^3, {prec})"):
        peak = gemm_peak(torch.bfloat16 if bf16 else torch.float32, args.gemm_n, 2.0 if args.quick else args.budget)
        print(f"   {peak['gflops']:.1f} GFLOP/s")

    train = {}
    for v in variants:
        path, _ = TRAIN_VARIANTS[v]
        with section(f"training: {v}, {n_steps} steps"):
            if path == "raw":
                r = run_raw(cfg, tok, dm, n_steps, bf16, RAW_ADAMW[v])
            else:
                vcfg = copy.deepcopy(cfg)
                for key, value in SER_OVERRIDES[v].items():
                    OmegaConf.update(vcfg, key, value)
                r = run_ser(vcfg, tok, dm, n_steps)
        train[v] = r
    trl_note = None
    if args.no_trl:
        trl_note = "trl: skipped (--no-trl)"
    elif trl_version() is None:
        trl_note = "trl: skipped: trl not installed (pip install 'ser[bench]')"
    else:
        with section(f"training: trl {trl_version()} RewardTrainer defaults, {n_steps} steps"):
            train["trl"] = run_trl_rounds(cfg, tok, dm, n_steps, args, bf16)
            trl_note = f"trl {trl_version()}: {train['trl']['note']}; its own random batches"
    print(trl_note, flush=True)

    # the padded runs saw the very same batches; packed runs the same pairs (other layout)
    ref = next((v for v in variants if v in ("raw", "ser")), None)
    rows = []
    for v, r in train.items():
        real = [t[0] for t in r["tokens"]]
        per = rounds_of(r["times"], real, warmup, rounds, per_round)
        tok_s, secs = spread(x for x, _ in per), spread(s for _, s in per)
        lora = v == "ser lora8"
        flops = (4 if lora else 6) * n_params * tok_s["median"]
        row = {"variant": v, "real_tok_s": tok_s["median"], "min-max": f"{tok_s['min']:.0f}-{tok_s['max']:.0f}",
               "s_per_step": secs["median"] / per_round, "run/real": sum(t[1] for t in r["tokens"]) / sum(real),
               "GFLOP/s": flops / 1e9, "% of peak": 100 * flops / 1e9 / peak["gflops"], "FLOPs/token": "4N" if lora else "6N"}
        if ref and v != "trl":  # same pairs in the same batches, in the same order (real tokens of every step)
            row["same_batches_as_" + ref] = real == [x[0] for x in train[ref]["tokens"]]
        rows.append(row)
    for row in rows:  # ratios against the baseline measured in this run
        base = TRAIN_VARIANTS.get(row["variant"], (None, "ser"))[1]
        if base in train:
            row["vs"], row["x"] = base, ratio(row["real_tok_s"], rows_by(rows, base)["real_tok_s"])
    same_col = [c for c in (rows[0] if rows else {}) if c.startswith("same_batches_as_")]
    table(rows, ["variant", "real_tok_s", "min-max", "s_per_step", "run/real", "GFLOP/s", "% of peak", "FLOPs/token",
                 "vs", "x", *same_col], f"Training, {prec}, {args.model}, median of {rounds} rounds of {per_round} steps; {cpu}")

    # ---- scoring
    seqs = score_answers(dm, n_score)
    net = fresh_net(cfg, tok)
    scores, srows = {}, []
    for v, base in SCORE_VARIANTS.items():
        with section(f"scoring: {v}, {len(seqs)} sequences x {rounds} rounds"):
            scores[v], secs = score_rounds(net, seqs, dm.pad_id, args.score_batch, bf16, v == "ser packed",
                                           args.pack_length, rounds)
        real = sum(len(s) for s in seqs)
        seq_s = spread(len(seqs) / s for s in secs)
        flops = 2 * n_params * real * seq_s["median"] / len(seqs)
        row = {"variant": v, "seq_s": seq_s["median"], "min-max": f"{seq_s['min']:.1f}-{seq_s['max']:.1f}",
               "real_tok_s": real * seq_s["median"] / len(seqs), "GFLOP/s": flops / 1e9,
               "% of peak": 100 * flops / 1e9 / peak["gflops"]}
        if base:
            row["vs"], row["x"] = base, ratio(seq_s["median"], rows_by(srows, base)["seq_s"])
        srows.append(row)
    diff = float(abs(scores["ser packed"] - scores["ser padded"]).max())
    table(srows, ["variant", "seq_s", "min-max", "real_tok_s", "GFLOP/s", "% of peak", "vs", "x"],
          f"Scoring (score_sequences, batch {args.score_batch}), {prec}; max |packed - padded| reward {diff:.2g}")

    print(f"\nTargets (issue 23), {cpu}:")
    checks = []
    if "ser" in train:
        checks.append(check_line("ser training, % of the GEMM peak", rows_by(rows, "ser")["% of peak"], 50.0))
    checks.append(check_line("ser scoring (padded), % of the GEMM peak", rows_by(srows, "ser padded")["% of peak"], 60.0))
    if "ser" in train and "raw" in train:
        checks.append(check_line("ser / raw real tokens/s (same batches)", rows_by(rows, "ser")["x"], 0.95))
    if "ser packing" in train and "ser" in train:
        checks.append(check_line("training packed / padded real tokens/s", rows_by(rows, "ser packing")["x"], 1.3))
    checks.append(check_line("scoring packed / padded sequences/s", rows_by(srows, "ser packed")["x"], 1.3))
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    write_results(f"{NAME}{'-isa-' + cap.lower() if cap else ''}", {
        "benchmark": NAME, "quick": args.quick, "machine": {**info, "cpu_line": cpu},
        "work": {"model": args.model, "max_length": args.max_length, "batch_pairs": args.batch_pairs, "precision": prec,
                 "batching": args.batching, "pack_length": args.pack_length, "prompt_cut": args.prompt_cut,
                 "warmup": warmup, "rounds": rounds, "round_steps": per_round, "score_seqs": len(seqs),
                 "score_batch": args.score_batch, "non_embedding_params": n_params, "data_summary": dm.summary_line()},
        "gemm_peak": peak, "training": rows, "scoring": srows, "max_abs_packed_minus_padded": diff,
        "trl": trl_note, "shared_prefix_share": shared, "targets": checks}, args.quick, args.out)


def shared_prefix_share(pairs) -> float:
    """Share of the pairs' tokens (both sides) that are a shared prefix (:func:`shared_prefix_length`)."""
    from ser.data.prefix_sharing import shared_prefix_length

    total = sum(len(c) + len(r) for c, r in pairs)
    return sum(shared_prefix_length(c, r) for c, r in pairs) / max(total, 1)


def rows_by(rows: list[dict], variant: str) -> dict:
    return next(r for r in rows if r["variant"] == variant)


if __name__ == "__main__":
    main()
