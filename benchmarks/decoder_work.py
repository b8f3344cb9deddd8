"""The work of the decoder reward-model benchmarks (``profile_decoder.py``, ``decoder_rm.py``):
SmolLM2-135M (or the tiny random decoder with SmolLM2's tokenizer, for smoke runs) as ser builds
it, real HH-RLHF harmless pairs tokenized once by ser's DataModule, the precision, and counts.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics

from common import compose

# --model: conf/model/<name>
MODELS = {"smollm2": "smollm2_135m", "tiny": "tiny_decoder"}


def add_work_args(p: argparse.ArgumentParser, max_length: int = 128, batch_pairs: int = 8) -> None:
    p.add_argument("--model", choices=sorted(MODELS), default="smollm2",
                   help="smollm2: SmolLM2-135M; tiny: a 2-layer random Llama with the real tokenizer (smoke)")
    p.add_argument("--max-length", type=int, default=max_length, help=f"data.max_length (default {max_length})")
    p.add_argument("--batch-pairs", type=int, default=batch_pairs, help=f"pairs per training batch (default {batch_pairs})")


def use_bf16(precision: str) -> bool:
    """``auto``: what ``trainer.precision=auto`` chooses on this CPU (bf16 autocast where native)."""
    from ser.precision import BF16, resolve_precision

    if precision == "auto":
        return resolve_precision("auto", "cpu").precision == BF16
    return precision == "bf16"


def autocast(bf16: bool):
    """bf16 autocast (what Lightning's bf16-mixed runs on CPU), or nothing (fp32)."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def load_work(model: str, max_length: int, batch_pairs: int, seed: int, bf16: bool, overrides=()):
    """(cfg, tokenizer, DataModule set up) for HH harmless, every train pair labeled (the train split)."""
    from ser.data import PreferenceDataModule
    from ser.model import load_tokenizer

    cfg = compose(["experiment=ser_hh_smollm2", f"model={MODELS[model]}", "labeled_fraction=1.0", f"seed={seed}",
                   f"data.max_length={max_length}", f"data.batch_size={batch_pairs}",
                   f"trainer.precision={'bf16-mixed' if bf16 else '32-true'}", *overrides])
    tok = load_tokenizer(cfg.model)
    dm = PreferenceDataModule(cfg.data, tok, seed=seed)
    dm.setup()
    return cfg, tok, dm


def non_embedding_params(net) -> int:
    """N of the 6N / 2N FLOP rule: every parameter but the token embedding (a lookup, no FLOPs)."""
    return sum(p.numel() for n, p in net.named_parameters() if "embed_tokens" not in n)


def median_batch(dm, batch_pairs: int, seed: int) -> list:
    """The length-grouped training batch (as ser batches the train split) of median padded width."""
    from ser.data import length_grouped_batches

    pairs = dm.labeled
    batches = length_grouped_batches([max(len(a), len(b)) for a, b in pairs], batch_pairs, seed, True)
    batches.sort(key=lambda b: max(max(len(pairs[i][0]), len(pairs[i][1])) for i in b))
    return [pairs[i] for i in batches[len(batches) // 2]]


def score_answers(dm, n: int | None = None) -> list:
    """Answers to score: both sides of the test pairs, in split order (the first ``n``)."""
    seqs = [a for a, _ in dm.test] + [b for _, b in dm.test]
    return seqs[:n] if n else seqs


def spread(values) -> dict:
    """Median, min and max of repeated rounds."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}
