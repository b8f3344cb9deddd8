"""Prompt-level splits: :func:`split_pairs` cuts the pairs into test, val, labeled and an unlabeled
pool (:class:`Splits`; the pool's answers in random order, its hidden labels kept for reporting
only) so that a prompt, grouped by its key (:func:`_prompt_key`), never sits in two splits;
:func:`check_fraction` checks the fractions it is given.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from collections import Counter

import numpy as np

from ser.errors import DataError


def _prompt_key(messages: list[dict]) -> str:
    return hashlib.sha1(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def pair_content_key(pair: dict) -> int:
    """A 64-bit hash of a labelled pair's content (prompt messages, chosen, rejected): the same pair
    gets the same key in every run and every split, whatever its row or prompt id."""
    text = json.dumps([pair["prompt"], pair["chosen"], pair["rejected"]], sort_keys=True)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@dataclasses.dataclass
class Splits:
    labeled: list[dict]
    pool: list[dict]  # {"prompt", "a1", "a2", "key"}: order randomised, no label
    pool_hidden: np.ndarray  # bool per pool pair: a1 is the human-preferred answer (reporting only)
    val: list[dict]
    test: list[dict]

    def counts(self) -> dict[str, int]:
        return {"labeled": len(self.labeled), "pool": len(self.pool), "val": len(self.val), "test": len(self.test)}


def _take_groups(keys: list[str], sizes: Counter, target: int) -> tuple[list[str], list[str]]:
    taken, n = [], 0
    for i, k in enumerate(keys):
        if n >= target:
            return taken, keys[i:]
        taken.append(k)
        n += sizes[k]
    return taken, []


def check_fraction(name: str, value: float, allow_zero: bool = False) -> None:
    lo_ok = value >= 0 if allow_zero else value > 0
    if not (lo_ok and value <= 1):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise DataError(f"{name}={value} is outside {interval}; pass a fraction such as {name}=0.15")


def split_pairs(
    pairs: list[dict],
    labeled_fraction: float = 0.15,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    test_pairs: list[dict] | None = None,
) -> Splits:
    """Deterministic prompt-level split: test, val, then labeled (a fraction of train) and pool.

    ``test_pairs`` given (a separate test file) replaces the carved test split; prompts found in
    it are removed from the rest so that no prompt sits in two splits.
    """
    check_fraction("data.labeled_fraction", labeled_fraction)
    check_fraction("data.val_fraction", val_fraction, allow_zero=True)
    check_fraction("data.test_fraction", test_fraction, allow_zero=True)
    rng = random.Random(seed)
    if test_pairs is not None:
        test_keys = {p["key"] for p in test_pairs}
        pairs = [p for p in pairs if p["key"] not in test_keys]
    sizes = Counter(p["key"] for p in pairs)
    keys = sorted(sizes)
    rng.shuffle(keys)
    n = len(pairs)
    if test_pairs is None:
        test_k, keys = _take_groups(keys, sizes, round(test_fraction * n))
    else:
        test_k = []
    val_k, keys = _take_groups(keys, sizes, round(val_fraction * n))
    n_train = sum(sizes[k] for k in keys)
    lab_k, pool_k = _take_groups(keys, sizes, math.ceil(labeled_fraction * n_train))
    by_key: dict[str, list[dict]] = {}
    for p in pairs:
        by_key.setdefault(p["key"], []).append(p)
    group = lambda ks: [p for k in ks for p in by_key[k]]  # noqa: E731
    pool_src = group(pool_k)
    hidden = np.array([rng.random() < 0.5 for _ in pool_src], dtype=bool)
    pool = [
        {"prompt": p["prompt"], "a1": p["chosen"] if h else p["rejected"], "a2": p["rejected"] if h else p["chosen"], "key": p["key"]}
        for p, h in zip(pool_src, hidden)
    ]
    splits = Splits(group(lab_k), pool, hidden, group(val_k), test_pairs if test_pairs is not None else group(test_k))
    for name in ("labeled", "test") + (("val",) if val_fraction > 0 else ()):
        if not getattr(splits, name):
            raise DataError(
                f"the {name} split is empty ({splits.counts()} from {n} pairs); "
                f"use more data or a larger data.{name if name != 'labeled' else 'labeled'}_fraction"
            )
    return splits
