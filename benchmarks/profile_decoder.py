"""Where the time of a decoder reward model goes on this CPU (issue 23): torch.profiler on a training step and a scoring batch.

SmolLM2-135M as ser builds it (``ser.model.build_hf_model``), real HH-harmless pairs: a training
step is what ``RewardModel.training_step`` + Lightning run (collate the batch, rewards of chosen and
rejected in one forward, pairwise loss, backward, gradient clipping, AdamW with ser's parameter
groups), a scoring batch is what ``score_sequences`` runs (pad or pack, ``inference_mode``); each
in fp32 and under bf16 autocast (what ``trainer.precision=bf16-mixed`` runs). The self time of
every profiled op goes to one category:

- GEMMs/linear: ``mm``, ``addmm``, ``bmm``, ``linear`` ... (forward and backward)
- attention (SDPA): the scaled-dot-product kernels and their backward
- optimizer step: everything under ``AdamW.step`` and the gradient clipping
- casts/copies: ``to``, ``_to_copy``, ``copy_``, ``clone``, ``contiguous``, ``cat``, ...
- embedding/lm-norm: the embedding lookup and its backward, RMSNorm's ``pow``/``mean``/``rsqrt``
  (forward and backward) and every op inside an RMSNorm module's forward
- padding/data path: collating the batch (``pad_batch`` / ``pack_batch``)
- other: the rest (rotary, SiLU, residual adds, masks, the loss, autograd bookkeeping)

    python benchmarks/profile_decoder.py                                   # this CPU, both precisions
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/profile_decoder.py --precision fp32
    OMP_NUM_THREADS=1 python benchmarks/profile_decoder.py --model tiny --steps 1   # smoke (seconds)

Figures go to ``benchmarks/results/profile_decoder[-isa-<cap>].json`` (``-quick`` with ``--quick``).
"""
from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import base_parser, cpu_line, machine_info, setup_env, write_results  # noqa: E402
from decoder_work import (add_work_args, autocast, load_work, median_batch, non_embedding_params,  # noqa: E402
                          score_answers)

CATEGORIES = ("GEMMs/linear", "attention (SDPA)", "optimizer step", "casts/copies", "embedding/lm-norm",
              "padding/data path", "other")
GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul",
            "aten::_addmm_activation", "aten::addmv", "aten::mv", "aten::dot", "aten::_mkldnn_linear",
            "aten::mkldnn_linear", "aten::_weight_int8pack_mm"}
CAST_OPS = {"aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous", "aten::cat",
            "aten::stack", "aten::_copy_from", "aten::_copy_from_and_resize", "aten::type_as", "aten::index_select"}
NORM_NAMES = ("Embedding", "embedding", "RsqrtBackward", "PowBackward", "MeanBackward", "aten::rsqrt", "aten::pow",
              "aten::mean")
# scopes opened with record_function around parts of the step
SCOPE_DATA, SCOPE_OPT, SCOPE_NORM = "ser::data", "ser::optimizer", "ser::norm"


def category(names: list[str]) -> str:
    """The category of an op, from its own name and its ancestors' (innermost first)."""
    op = names[0]
    if any(n == SCOPE_OPT or n.startswith("Optimizer.") for n in names):
        return "optimizer step"
    if any(n == SCOPE_DATA for n in names):
        return "padding/data path"
    if any("scaled_dot_product" in n or "ScaledDotProduct" in n or "Sdpa" in n for n in names):
        return "attention (SDPA)"
    if op in GEMM_OPS:
        return "GEMMs/linear"
    if any(n == SCOPE_NORM for n in names) or any(k in n for n in names for k in NORM_NAMES):
        return "embedding/lm-norm"
    if op in CAST_OPS:
        return "casts/copies"
    return "other"


def breakdown(prof, steps: int) -> dict:
    """Self CPU time per category (ms per step) from the profiler's event tree."""
    out: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    for evt in prof.events():
        if evt.self_cpu_time_total <= 0:
            continue
        names, e = [], evt
        while e is not None:
            names.append(e.name)
            e = e.cpu_parent
        out[category(names)] += evt.self_cpu_time_total / 1e3 / steps
        ops[evt.name] += evt.self_cpu_time_total / 1e3 / steps
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:5]
    return {"ms": {c: out.get(c, 0.0) for c in CATEGORIES}, "top_ops": top}


class NormScopes:
    """record_function scopes around every RMSNorm / embedding forward (forward hooks)."""

    def __init__(self, net):
        import torch

        self.handles, self.open = [], []
        for m in net.modules():
            name = type(m).__name__
            if name.endswith("RMSNorm") or isinstance(m, torch.nn.Embedding):
                self.handles.append(m.register_forward_pre_hook(self._enter))
                self.handles.append(m.register_forward_hook(self._exit))

    def _enter(self, module, args):
        import torch

        rf = torch.profiler.record_function(SCOPE_NORM)
        rf.__enter__()
        self.open.append(rf)

    def _exit(self, module, args, output):
        self.open.pop().__exit__(None, None, None)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def main() -> None:
    p = base_parser(__doc__.split("\n")[0])
    add_work_args(p)
    p.add_argument("--steps", type=int, default=3, help="profiled training steps and scoring batches (default 3)")
    p.add_argument("--precision", choices=("both", "fp32", "bf16"), default="both")
    p.add_argument("--score-batch", type=int, default=64, help="sequences per scoring batch (loop.score_batch_size)")
    p.add_argument("--packing", action="store_true", help="data.packing=true: packed batches instead of padded")
    p.add_argument("--lora", type=int, default=0, help="model.lora.r (0: full fine-tuning)")
    p.add_argument("--cpu-impl", choices=("default", "foreach"), default="default", help="optim.cpu_impl (AdamW's kernel)")
    args = p.parse_args()
    setup_env(args.threads)
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from ser.data import PairCollator, pad_batch
    from ser.data.packing import pack_batch
    from ser.losses import pairwise_loss
    from ser.model import RewardModel, build_hf_model
    from ser.rewards import packed_rewards, sequence_rewards

    steps = 1 if args.quick else args.steps
    info = machine_info(args.threads)
    cpu = cpu_line()
    overrides = [f"model.lora.r={args.lora}", f"optim.cpu_impl={args.cpu_impl}"] + (["data.packing=true"] if args.packing else [])
    cfg, tok, dm = load_work(args.model, args.max_length, args.batch_pairs, args.seed, False, overrides)
    items = median_batch(dm, args.batch_pairs, args.seed)
    answers = sorted(score_answers(dm), key=len)
    mid = len(answers) // 2
    score_seqs = answers[max(0, mid - args.score_batch // 2): mid + (args.score_batch + 1) // 2]
    collate = PairCollator(dm.pad_id, args.packing, cfg.data.pack_length)
    net = build_hf_model(cfg.model, tok)
    module = RewardModel(net, cfg.loss, cfg.optim)
    module.set_schedule(0, 10_000)
    opt = module.configure_optimizers()["optimizer"]
    clip = cfg.trainer.get("gradient_clip_val")
    params = [q for q in module.parameters() if q.requires_grad]
    n_params = non_embedding_params(net)
    scopes = NormScopes(net)

    def train_step(bf16: bool):
        with record_function(SCOPE_DATA):
            batch = collate(items)
        with autocast(bf16):
            rc, rr = module._pair_rewards(batch)  # what RewardModel.training_step computes
            loss = pairwise_loss(rc, rr, cfg.loss.kind, cfg.loss.margin, cfg.loss.centring_coef)
        loss.backward()
        with record_function(SCOPE_OPT):
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return batch

    @torch.inference_mode()
    def score_batch(bf16: bool):
        with record_function(SCOPE_DATA):
            b = pack_batch(score_seqs, dm.pad_id, cfg.data.pack_length) if args.packing else pad_batch(score_seqs, dm.pad_id)
        with autocast(bf16):
            if args.packing:
                packed_rewards(net, b["input_ids"], b["position_ids"], b["last_index"])
            else:
                sequence_rewards(net, b["input_ids"], b["attention_mask"])
        return b

    precisions = {"both": (False, True), "fp32": (False,), "bf16": (True,)}[args.precision]
    real_train = sum(len(a) + len(b) for a, b in items)
    real_score = sum(len(s) for s in score_seqs)
    print(f"profile_decoder: {cpu}\n  torch {torch.__version__}, {torch.get_num_threads()} threads; model={args.model} "
          f"({n_params / 1e6:.1f}M non-embedding params{', LoRA r=' + str(args.lora) if args.lora else ''}); "
          f"AdamW {args.cpu_impl}; "
          f"{'packed' if args.packing else 'padded'} batches\n  training batch: {len(items)} pairs, {real_train} real "
          f"tokens, widest {max(max(len(a), len(b)) for a, b in items)}; scoring batch: {len(score_seqs)} sequences, "
          f"{real_score} real tokens; {steps} profiled step(s) each after 1 warm-up", flush=True)
    runs = {}
    for bf16 in precisions:
        prec = "bf16" if bf16 else "fp32"
        for what, fn, real, flops_per_token in (("train", train_step, real_train, 6), ("score", score_batch, real_score, 2)):
            module.net.train(what == "train")
            shape = tuple(fn(bf16)["input_ids"].shape)  # warm-up: allocations, oneDNN kernel choice
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                for _ in range(steps):
                    fn(bf16)
                wall = (time.perf_counter() - t0) / steps
            b = breakdown(prof, steps)
            runs[f"{what} {prec}"] = {"wall_s": wall, "shape": shape, **b,
                                     "gflops": flops_per_token * n_params * real / wall / 1e9}
    scopes.close()

    cols = list(runs)
    width = max(len(c) for c in CATEGORIES)
    print(f"\n### Self CPU time per training step / scoring batch (ms, % of the profiled total); {cpu}")
    print("| " + "category".ljust(width) + " | " + " | ".join(c.rjust(15) for c in cols) + " |")
    print("|" + "-" * (width + 2) + "|" + "|".join("-" * 17 for _ in cols) + "|")
    for c in CATEGORIES:
        cells = []
        for k in cols:
            ms, total = runs[k]["ms"][c], sum(runs[k]["ms"].values())
            cells.append(f"{ms:8.1f} {100 * ms / total:4.0f}%".rjust(15))
        print("| " + c.ljust(width) + " | " + " | ".join(cells) + " |")
    print("| " + "profiled total".ljust(width) + " | " + " | ".join(f"{sum(runs[k]['ms'].values()):8.1f}".rjust(15) for k in cols) + " |")
    print("| " + "wall s / step".ljust(width) + " | " + " | ".join(f"{runs[k]['wall_s']:.3f}".rjust(15) for k in cols) + " |")
    print("| " + "GFLOP/s (6N|2N)".ljust(width) + " | " + " | ".join(f"{runs[k]['gflops']:.1f}".rjust(15) for k in cols) + " |")
    print("| " + "batch (rows x w)".ljust(width) + " | " + " | ".join(f"{runs[k]['shape'][0]} x {runs[k]['shape'][1]}".rjust(15) for k in cols) + " |")
    for k in cols:
        print(f"  top ops, {k}: " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in runs[k]["top_ops"]))
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    write_results(f"profile_decoder{'-isa-' + cap.lower() if cap else ''}", {
        "machine": {**info, "cpu_line": cpu}, "model": args.model, "non_embedding_params": n_params,
        "packing": args.packing, "lora_r": args.lora, "cpu_impl": args.cpu_impl, "steps": steps, "train_real_tokens": real_train,
        "score_real_tokens": real_score, "runs": runs}, args.quick, args.out)


if __name__ == "__main__":
    main()
