"""fp32 vs bf16 autocast on the machine it runs on, and how close training is to its limit.

Times, with real HH-harmless batches and MiniLM (the main job's model), over repeated rounds:
- one training step (forward + backward + AdamW; 8 pairs = 16 sequences, length-grouped), and
- one scoring batch (64 sequences, ``inference_mode``),
in fp32 and under bf16 autocast (what ``trainer.precision=bf16-mixed`` runs), prints the
bf16/fp32 speed ratio, the choice ``trainer.precision=auto`` makes here and whether that choice is
the faster one, and the achieved FLOP/s of a training step (FLOPs counted by
``torch.utils.flop_counter``) against a measured GEMM peak (fp32, and bf16) of this CPU.

    python benchmarks/precision.py                                          # this CPU as it is
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/precision.py  # an AVX2-only CPU

Figures go to ``benchmarks/results/precision[-isa-<cap>].json``.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import base_parser, check_line, compose, machine_info, section, setup_env, table, write_results  # noqa: E402


def timed_rounds(fn, rounds: int, per_round: int) -> list[float]:
    """Seconds per call of ``fn``, one figure per round of ``per_round`` calls."""
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            fn()
        out.append((time.perf_counter() - t0) / per_round)
    return out


def plan(first_call_s: float, budget_s: float, max_rounds: int = 5, max_per_round: int = 5) -> tuple[int, int]:
    """Rounds and calls per round that fit ``budget_s`` given one call's time (at least 2 x 1)."""
    per_round = max(1, min(max_per_round, int(budget_s / max(first_call_s, 1e-6) / max_rounds)))
    rounds = max(2, min(max_rounds, int(budget_s / max(first_call_s * per_round, 1e-6))))
    return rounds, per_round


def gemm_peak(dtype, n: int, budget_s: float) -> dict:
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    t0 = time.perf_counter()
    torch.mm(a, b)
    rounds, per = plan(time.perf_counter() - t0, budget_s)
    times = timed_rounds(lambda: torch.mm(a, b), rounds, per)
    best = min(times)
    return {"n": n, "rounds": rounds, "s_per_gemm": statistics.median(times), "gflops": 2 * n ** 3 / best / 1e9}


def main() -> None:
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timing per measured figure (default 20)")
    p.add_argument("--gemm-n", type=int, default=1024, help="matrix size of the GEMM peak (default 1024)")
    args = p.parse_args()
    setup_env(args.threads)
    import torch

    from ser.data import PreferenceDataModule, pad_batch
    from ser.losses import pairwise_loss
    from ser.model import RewardModel, build_hf_model, load_tokenizer
    from ser.rewards import sequence_rewards
    from ser.precision import BF16, resolve_precision

    choice = resolve_precision("auto", "cpu")
    info = machine_info(args.threads)
    print(f"CPU: {info['cpu']}; torch {info['torch']}, {args.threads} threads, ATen capability "
          f"{torch.backends.cpu.get_cpu_capability()}\n{choice.line()}", flush=True)
    budget = 3.0 if args.quick else args.budget

    cfg = compose(["experiment=ser_hh_minilm"])
    tok = load_tokenizer(cfg.model)
    dm = PreferenceDataModule(cfg.data, tok, seed=args.seed)
    dm.setup()
    train_batches = list(dm._loader(dm.labeled))  # the main job's seed-loop batches
    # a batch of median length (what a typical step costs), and 64 pool answers of median length
    train_batches.sort(key=lambda b: b["input_ids"].shape[1])
    batch = train_batches[len(train_batches) // 2]
    answers = sorted((s for pair in dm.pool for s in pair), key=len)
    mid = len(answers) // 2
    score_batch = pad_batch(answers[mid - 32: mid + 32], dm.pad_id)
    print(f"training batch: {batch['input_ids'].shape[0]} x {batch['input_ids'].shape[1]} tokens; "
          f"scoring batch: {score_batch['input_ids'].shape[0]} x {score_batch['input_ids'].shape[1]}", flush=True)

    module = RewardModel(build_hf_model(cfg.model, tok), cfg.loss, cfg.optim)
    module.set_schedule(0, 10_000)  # a long flat-ish schedule: only the step cost matters here
    opt = module.configure_optimizers()["optimizer"]

    def train_step(bf16: bool):
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                rc, rr = module._pair_rewards(batch)  # what RewardModel.training_step computes
                loss = pairwise_loss(rc, rr, cfg.loss.kind, cfg.loss.margin, cfg.loss.centring_coef)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    def score(bf16: bool):
        @torch.inference_mode()
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                sequence_rewards(module.net, score_batch["input_ids"], score_batch["attention_mask"])
        return run

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        train_step(False)()
    train_flops = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        score(False)()
    score_flops = fc.get_total_flops()

    rows, figures = [], {}
    for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
        for what, make, flops in (("train step", train_step, train_flops), ("scoring batch", score, score_flops)):
            with section(f"{what}, {name}"):
                fn = make(bf16)
                module.net.train(what == "train step")
                fn()  # warm-up (first call allocates, oneDNN picks kernels)
                t0 = time.perf_counter()
                fn()
                rounds, per = plan(time.perf_counter() - t0, budget)
                times = timed_rounds(fn, rounds, per)
            med = statistics.median(times)
            figures[(what, name)] = med
            rows.append({"what": what, "precision": name, "rounds x calls": f"{rounds} x {per}",
                         "s (median)": med, "s (min-max)": f"{min(times):.3g}-{max(times):.3g}",
                         "GFLOP/s": flops / med / 1e9})
    with section("GEMM peak"):
        peak32 = gemm_peak(torch.float32, args.gemm_n, budget)
        peak16 = gemm_peak(torch.bfloat16, args.gemm_n, budget)
    for r in rows:
        peak = peak32 if r["precision"] == "fp32" else peak16
        r["% of GEMM peak"] = 100 * r["GFLOP/s"] / peak["gflops"]
    table(rows, ["what", "precision", "rounds x calls", "s (median)", "s (min-max)", "GFLOP/s", "% of GEMM peak"],
          title=f"fp32 vs bf16 autocast, MiniLM, {info['cpu']}")
    table([{"GEMM": f"{args.gemm_n}^3 fp32", "GFLOP/s": peak32["gflops"]},
           {"GEMM": f"{args.gemm_n}^3 bf16", "GFLOP/s": peak16["gflops"]}], ["GEMM", "GFLOP/s"], title="measured peak")

    ratios = {what: figures[(what, "fp32")] / figures[(what, "bf16 autocast")] for what in ("train step", "scoring batch")}
    print(f"\nbf16 autocast speed vs fp32: training {ratios['train step']:.2f}x, scoring {ratios['scoring batch']:.2f}x "
          f"(> 1: bf16 faster)\n{choice.line()}", flush=True)
    auto = "bf16 autocast" if choice.precision == BF16 else "fp32"
    checks = [check_line(f"auto ({auto}) training step vs fp32 (speed ratio)",
                         figures[("train step", "fp32")] / figures[("train step", auto)], 0.95),
              check_line(f"auto ({auto}) scoring batch vs fp32 (speed ratio)",
                         figures[("scoring batch", "fp32")] / figures[("scoring batch", auto)], 0.95)]
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    write_results(f"precision{'-isa-' + cap.lower() if cap else ''}", {
        "machine": {**info, "aten_capability": torch.backends.cpu.get_cpu_capability(),
                    "onednn_max_cpu_isa": cap, "aten_cpu_capability_env": os.environ.get("ATEN_CPU_CAPABILITY")},
        "auto": choice.to_dict(), "train_batch_shape": list(batch["input_ids"].shape),
        "score_batch_shape": list(score_batch["input_ids"].shape), "train_step_flops": train_flops,
        "score_batch_flops": score_flops, "rows": rows, "gemm_peak": {"fp32": peak32, "bf16": peak16},
        "bf16_speedup": ratios, "checks": checks}, args.quick, args.out)


if __name__ == "__main__":
    main()
