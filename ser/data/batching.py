"""Batching of token-id pairs: dynamic right padding (:func:`pad_batch`), chosen and rejected
stacked into one batch (:class:`PairCollator`, padded or packed), the batch orders (:func:`length_grouped_batches`,
:func:`random_batches`, each rank's share with :func:`shard_batches`) and the sampler that replays
a fixed list of batches (:class:`FixedBatches`).
"""
from __future__ import annotations

import random
from typing import Sequence

import torch
from torch.utils.data import Sampler

from ser.data.packing import pack_batch
from ser.data.prefix_sharing import share_prefix_batch


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence of the batch (dynamic padding, never a fixed length)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


class PairCollator:
    """Stacks chosen then rejected into one batch of 2B sequences (one forward per step).

    ``packing``: the 2B sequences packed into rows (:func:`ser.data.packing.pack_batch`, rows of at
    most ``pack_length`` tokens, None: the longest sequence) instead of right-padded.
    ``prefix_sharing``: one row per pair, the tokens both sides start with computed once
    (:func:`ser.data.prefix_sharing.share_prefix_batch`).
    """

    def __init__(self, pad_id: int, packing: bool = False, pack_length: int | None = None, prefix_sharing: bool = False):
        if packing and prefix_sharing:
            raise ValueError("packing and prefix_sharing are two layouts of a batch: choose one")
        self.pad_id, self.packing, self.pack_length, self.prefix_sharing = pad_id, packing, pack_length, prefix_sharing

    def __call__(self, items: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        if self.prefix_sharing:
            batch = share_prefix_batch(items, self.pad_id)
        else:
            seqs = [c for c, _ in items] + [r for _, r in items]
            batch = pack_batch(seqs, self.pad_id, self.pack_length) if self.packing else pad_batch(seqs, self.pad_id)
        batch["n_pairs"] = torch.tensor(len(items))
        return batch


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, shuffle: bool = True,
                           mega_batch: int = 50, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Batches of similar length: shuffle, sort within mega-batches, shuffle the batches.

    ``shuffle=False`` sorts everything by length (scoring). With ``world_size > 1`` each rank gets
    every ``world_size``-th batch (the list is padded by repetition to a multiple of ``world_size``).
    """
    idx = list(range(len(lengths)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(idx)
        chunk = batch_size * mega_batch
        idx = [i for s in range(0, len(idx), chunk) for i in sorted(idx[s:s + chunk], key=lambda j: -lengths[j])]
    else:
        idx.sort(key=lambda j: -lengths[j])
    batches = [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return shard_batches(batches, rank, world_size)


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Every ``world_size``-th batch for ``rank``; padded by repetition so all ranks step equally."""
    if world_size > 1 and batches:
        batches = list(batches)
        while len(batches) % world_size:
            batches.append(batches[len(batches) % len(batches)])
        batches = batches[rank::world_size]
    return batches


def random_batches(n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return shard_batches([idx[s:s + batch_size] for s in range(0, n, batch_size)], rank, world_size)


class FixedBatches(Sampler):
    def __init__(self, batches: list[list[int]]):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
