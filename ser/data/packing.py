"""Padding-free packing of token sequences (``data.packing``): several sequences share one row.

A packed batch has rows of concatenated sequences; each sequence's position ids restart at 0, so a
decoder's attention (transformers' packed-sequence mask, found from the position ids) is causal
*within* a sequence and blocked *between* sequences, and its reward is read at its last token.
The tail of a row that is not full holds padding with position ids restarting at 0 too: a segment
of its own that no sequence can see and whose outputs are never read.

The math is in pure functions on lists of lengths (:func:`first_fit_decreasing`,
:func:`position_ids`, :func:`segment_ids`, :func:`last_token_index`); :func:`pack_batch` turns
token-id lists into the tensors a forward takes.
"""
from __future__ import annotations

from typing import Sequence

import torch


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``capacity`` tokens.

    First-fit decreasing: take the sequences longest first (ties: lower index first) and put each in
    the first row with room, opening a new row when none has. Rows are in the order they were
    opened; a row lists its sequences in the order they were placed (= their order in the row).
    """
    if capacity < 1:
        raise ValueError(f"packing capacity {capacity} must be >= 1 token")
    too_long = [n for n in lengths if n > capacity]
    if too_long:
        raise ValueError(f"a sequence of {max(too_long)} tokens does not fit in a packed row of {capacity}")
    if any(n < 1 for n in lengths):
        raise ValueError("cannot pack an empty sequence")
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        for r, room in enumerate(free):
            if lengths[i] <= room:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(capacity - lengths[i])
    return rows


def position_ids(lengths: Sequence[int]) -> list[int]:
    """Positions of one row holding sequences of ``lengths`` back to back: 0..n-1 for each."""
    return [p for n in lengths for p in range(n)]


def segment_ids(lengths: Sequence[int]) -> list[int]:
    """Which sequence of the row each token belongs to: 0 for the first ``lengths[0]`` tokens, ..."""
    return [s for s, n in enumerate(lengths) for _ in range(n)]


def last_token_index(lengths: Sequence[int]) -> list[int]:
    """Column of each sequence's last token in a row holding ``lengths`` back to back."""
    out, end = [], 0
    for n in lengths:
        end += n
        out.append(end - 1)
    return out


def pack_batch(seqs: Sequence[Sequence[int]], pad_id: int, capacity: int | None = None) -> dict[str, torch.Tensor]:
    """Sequences packed into rows by :func:`first_fit_decreasing`.

    ``capacity``: tokens per row; None = the longest sequence, so a row is never wider than the
    padded batch would be and packing never costs more attention than padding. The rows are as wide
    as the fullest one. Returns ``input_ids`` and ``position_ids`` (rows x width), ``last_index``
    (one flat index into ``rows * width`` per sequence, in the order of ``seqs``: where its reward is
    read) and ``lengths`` (tokens of each sequence, in the order of ``seqs``).
    """
    lengths = [len(s) for s in seqs]
    rows = first_fit_decreasing(lengths, capacity if capacity is not None else max(lengths))
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    last = torch.zeros(len(seqs), dtype=torch.long)
    for r, row in enumerate(rows):
        row_lengths = [lengths[i] for i in row]
        used = sum(row_lengths)
        ids[r, :used] = torch.as_tensor([t for i in row for t in seqs[i]], dtype=torch.long)
        pos[r] = torch.as_tensor(position_ids(row_lengths + ([width - used] if used < width else [])), dtype=torch.long)
        for i, col in zip(row, last_token_index(row_lengths)):
            last[i] = r * width + col
    return {"input_ids": ids, "position_ids": pos, "last_index": last,
            "lengths": torch.as_tensor(lengths, dtype=torch.long)}
