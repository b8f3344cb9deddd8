"""Growth: time per SER loop and labeling time as the pool grows (AlpacaEval pairs).

For each pool size (the first N pairs of ``alpaca-eval-gpt4/pairs.jsonl.gz``, ``data=alpaca_eval``;
5% labeled, 5% val, 5% test, the rest is the pool) the DataModule is built once and its load and
tokenization are timed. Then ``--loops`` self-labeling loops run with the same model, each as
``SERLoop`` does it: ``dm.setup()`` again (Lightning calls it at every fit; it must be cached), the
pool's token ids, ``score_sequences`` over the whole pool (the labeling time), and the learning-status
step (probabilities, status, selection, histogram). RSS is read after every loop.

Checks: labeling time grows linearly with the pool (log-log slope <= 1.1 and R^2 of a straight
line >= 0.99 over the sizes), tokenization happens once per run (no ``Formatter.encode`` call
during the loops, the repeated ``setup()`` costs ~0), and memory does not grow with the number of
loops (RSS after the last loop - after the first <= 32 MiB at every size).

Scale: MiniLM labels about 30-50 answers/s on 2 cores (31/s measured at 138 tokens on a loaded
machine), so 40k pairs (~68k answers) would take 20-35 min per loop. The full mode therefore runs the size sweep with ``model=tiny`` (a
2-layer random BERT with MiniLM's real tokenizer: the same data path, token ids and batching)
at max_length 128, and MiniLM itself on the two small sizes (``--minilm-sizes``).

    python benchmarks/growth.py            # full (2 threads; ~10 min)
    OMP_NUM_THREADS=1 python benchmarks/growth.py --quick    # 1k and 5k, tiny model, 2 loops
"""
from __future__ import annotations

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Timer, base_parser, check_line, compose, machine_info, peak_rss_mb, rss_mb,  # noqa: E402
                    section, setup_env, table, write_results)

NAME = "growth"
MEM_TOLERANCE_MB = 32.0


def parse_args():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="model of the size sweep (default tiny)")
    p.add_argument("--sizes", default=None, help="pairs loaded, comma separated (default 1000,5000,20000,40000; quick 1000,5000)")
    p.add_argument("--minilm-sizes", default=None, help="sizes also run with MiniLM (default 1000,5000; quick none)")
    p.add_argument("--loops", type=int, default=None, help="loops per size (default 3; quick 2)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=None, help="answers per scoring batch (default loop.score_batch_size)")
    return p.parse_args()


class EncodeCounter:
    """Counts calls of ``ser.data.Formatter.encode`` (every tokenization of an answer goes through it)."""

    def __init__(self):
        from ser.data import Formatter

        self.calls = 0
        self._orig = Formatter.encode
        counter = self

        def encode(self_fmt, *a, **kw):
            counter.calls += 1
            return counter._orig(self_fmt, *a, **kw)

        Formatter.encode = encode


def fit_line(x, y) -> dict:
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return {"slope_s_per_answer": None, "intercept_s": None, "r2": None, "loglog_slope": None}
    b, a = np.polyfit(x, y, 1)
    pred = a + b * x
    ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    ll = float(np.polyfit(np.log(x), np.log(y), 1)[0])
    return {"slope_s_per_answer": float(b), "intercept_s": float(a), "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 1.0,
            "loglog_slope": ll}


def run_sizes(model_name: str, sizes: list[int], loops: int, args, tok, counter: EncodeCounter) -> list[dict]:
    import numpy as np
    import torch

    from ser import status as st
    from ser.data import PreferenceDataModule
    from ser.loop import thresholds_from_config
    from ser.model import build_hf_model, score_sequences

    net = None
    rows = []
    for size in sizes:
        cfg = compose([f"model={model_name}", "data=alpaca_eval", f"data.limit={size}", f"data.max_length={args.max_length}",
                       "labeled_fraction=0.05", "data.val_fraction=0.05", "data.test_fraction=0.05", f"seed={args.seed}"])
        bs = args.batch_size or int(cfg.loop.score_batch_size)
        if net is None:
            torch.manual_seed(cfg.seed)
            net = build_hf_model(cfg.model, tok).eval()
        th = thresholds_from_config(cfg.thresholds)
        gc.collect()
        rss0 = rss_mb()
        with section(f"{model_name}: {size:,} pairs, {loops} loops"):
            calls0 = counter.calls
            dm = PreferenceDataModule(cfg.data, tok, seed=cfg.seed)
            with Timer() as t_setup:
                dm.setup()
            setup_calls = counter.calls - calls0
            rss_data = rss_mb()
            n_pool = len(dm.pool)
            per_loop = []
            for loop in range(loops):
                calls_before = counter.calls
                with Timer() as t_loop:
                    with Timer() as t_again:
                        dm.setup()  # Lightning calls setup() at every fit: must be a no-op now
                    alive = dm.pool_indices()
                    seqs = [dm.pool[i][0] for i in alive] + [dm.pool[i][1] for i in alive]
                    with Timer() as t_label:
                        scores = score_sequences(net, seqs, dm.pad_id, batch_size=bs)
                    n = len(alive)
                    # the rest of SERLoop._self_label: centring/scaling (may score the labeled pairs), status, selection
                    centring, scaling = cfg.thresholds.centring, cfg.thresholds.get("scaling", "none")
                    labeled = None
                    if centring == "labeled_mean" or scaling == "labeled_std":
                        labeled = score_sequences(net, [s for pair in dm.labeled for s in pair], dm.pad_id, batch_size=bs)
                    centred = st.centre_scores(scores, centring, labeled)
                    p = st.probabilities(st.scale_scores(centred, scaling, scores, labeled))
                    decision = st.decide_status(p[:n], p[n:], th)
                    sel = st.select_pairs(p[:n], p[n:], decision.status, th)
                    st.gap_histogram(p[:n], p[n:])
                    del seqs, scores, p, centred, labeled
                per_loop.append({"loop": loop, "loop_s": t_loop.s, "label_s": t_label.s, "setup_again_s": t_again.s,
                                 "encode_calls": counter.calls - calls_before, "rss_mb": rss_mb(),
                                 "status": decision.status.name, "kept": len(sel)})
                print(f"   loop {loop}: {t_loop.s:.2f} s (labeling {t_label.s:.2f} s, setup again {t_again.s * 1e3:.2f} ms), "
                      f"RSS {per_loop[-1]['rss_mb']:.0f} MiB, tokenizer calls {per_loop[-1]['encode_calls']}", flush=True)
        answers = 2 * n_pool
        label = [r["label_s"] for r in per_loop]
        rows.append({
            "model": model_name, "pairs": size, "pool_pairs": n_pool, "pool_answers": answers,
            "load_s": dm.timings["load_s"], "tokenize_s": dm.timings["tokenize_s"], "setup_s": t_setup.s,
            "setup_encode_calls": setup_calls, "loops": loops,
            "loop_s_first": per_loop[0]["loop_s"], "loop_s_last": per_loop[-1]["loop_s"],
            "label_s": float(np.median(label)), "label_s_min": min(label), "label_s_max": max(label),
            "us_per_answer": 1e6 * float(np.median(label)) / max(1, answers),
            "answers_s": answers / float(np.median(label)),
            "setup_again_ms_max": 1e3 * max(r["setup_again_s"] for r in per_loop),
            "encode_calls_in_loops": sum(r["encode_calls"] for r in per_loop),
            "rss_before_mb": rss0, "rss_after_data_mb": rss_data,
            "rss_loop_first_mb": per_loop[0]["rss_mb"], "rss_loop_last_mb": per_loop[-1]["rss_mb"],
            "rss_growth_over_loops_mb": per_loop[-1]["rss_mb"] - per_loop[0]["rss_mb"],
            "per_loop": per_loop,
        })
        del dm
        gc.collect()
    return rows


def main():
    args = parse_args()
    setup_env(args.threads)
    import torch

    from ser.model import load_tokenizer

    info = machine_info(args.threads)
    sizes = [int(s) for s in (args.sizes or ("1000,5000" if args.quick else "1000,5000,20000,40000")).split(",") if s]
    msizes = args.minilm_sizes if args.minilm_sizes is not None else ("" if args.quick else "1000,5000")
    msizes = [int(s) for s in msizes.split(",") if s]
    loops = args.loops or (2 if args.quick else 3)
    print(f"{NAME}: data=alpaca_eval sizes={sizes} model={args.model}"
          f"{f' + minilm sizes={msizes}' if msizes and args.model != 'minilm' else ''} loops={loops} "
          f"max_length={args.max_length} threads={torch.get_num_threads()}{' (quick)' if args.quick else ''}")
    cfg = compose([f"model={args.model}"])
    tok = load_tokenizer(cfg.model)  # tiny and minilm share MiniLM's tokenizer
    counter = EncodeCounter()
    rows = run_sizes(args.model, sizes, loops, args, tok, counter)
    if msizes and args.model != "minilm":
        mtok = load_tokenizer(compose(["model=minilm"]).model)
        rows += run_sizes("minilm", msizes, min(loops, 2), args, mtok, counter)

    cols = ["model", "pairs", "pool_answers", "load_s", "tokenize_s", "loop_s_first", "loop_s_last", "label_s",
            "us_per_answer", "answers_s", "setup_again_ms_max", "encode_calls_in_loops", "rss_after_data_mb",
            "rss_loop_first_mb", "rss_loop_last_mb", "rss_growth_over_loops_mb"]
    table(rows, cols, "Growth with the pool size (labeling = score_sequences over the whole pool; median over loops)")

    fits = {}
    print("\nTargets (issue 5):")
    checks = []
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        f = fit_line([r["pool_answers"] for r in rs], [r["label_s"] for r in rs])
        f["tokenize"] = fit_line([r["pool_answers"] for r in rs], [r["tokenize_s"] for r in rs])
        if len(rs) >= 2:
            f["us_per_answer_largest_over_smallest"] = rs[-1]["us_per_answer"] / rs[0]["us_per_answer"]
        fits[model] = f
        if f["loglog_slope"] is not None:
            print(f"  info  {model}: labeling time = {f['intercept_s']:.3f} s + {f['slope_s_per_answer'] * 1e6:.1f} us x answers; "
                  f"R^2 {f['r2']:.4f}; log-log slope {f['loglog_slope']:.3f}; us/answer largest/smallest "
                  f"{f['us_per_answer_largest_over_smallest']:.2f}; tokenize log-log slope {f['tokenize']['loglog_slope']:.3f}")
            checks.append(check_line(f"{model}: labeling time log-log slope vs pool size", f["loglog_slope"], 1.1, "<="))
            checks.append(check_line(f"{model}: R^2 of a straight line (labeling time vs pool answers)", f["r2"], 0.99))
        checks.append(check_line(f"{model}: tokenizer calls during loops (all sizes)",
                                 float(sum(r["encode_calls_in_loops"] for r in rs)), 0.0, "<="))
        checks.append(check_line(f"{model}: worst RSS growth first->last loop, MiB",
                                 max(r["rss_growth_over_loops_mb"] for r in rs), MEM_TOLERANCE_MB, "<="))
    payload = {"benchmark": NAME, "quick": args.quick, "machine": info,
               "work": {"data": "alpaca_eval", "sizes": sizes, "minilm_sizes": msizes, "model": args.model, "loops": loops,
                        "max_length": args.max_length, "splits": "labeled 5%, val 5%, test 5%, pool the rest"},
               "sizes": rows, "fits": fits, "targets": checks, "peak_rss_mb": peak_rss_mb()}
    write_results(NAME, payload, args.quick, args.out)


if __name__ == "__main__":
    main()
