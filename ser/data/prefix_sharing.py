"""Prefix sharing (``data.prefix_sharing``): a pair's two answers share one row after the tokens they have in common.

Chosen and rejected are the same prompt followed by two answers. A decoder can compute the prompt
once if a pair's row is laid out as ``[shared prefix, rest of chosen, rest of rejected]``: the
rejected part's position ids continue from the prefix, as if it followed the prefix directly, and
attention lets each answer see the prefix and itself, never the other answer (prefix sharing,
arXiv 2410.20305). The shared prefix is the longest common prefix of the two token-id lists, at most
every token but the last of the shorter one, so each side keeps its own last token, where its reward
is read. Exact: every token sees the same tokens at the same positions as in its own padded row, so
rewards equal padding's up to float rounding; only the FLOPs of the prefix are saved once.

What it saves depends on the prefix the two sides really share. ser cuts an over-long prompt from
the left per side (``ser.data.formatting``), so two answers of different lengths keep different
prompt tails and share nothing once either side was cut (HH-RLHF harmless, SmolLM2's tokenizer:
7.7% of the training tokens are a shared prefix at ``max_length`` 128, 21% at 256, 34% at 512;
``benchmarks/decoder_rm.py`` prints the share of the run it measures).

Pure functions on lengths (:func:`shared_prefix_length`, :func:`row_positions`, :func:`row_segments`,
:func:`attention_allowed`); :func:`share_prefix_batch` builds the tensors a forward takes.
"""
from __future__ import annotations

from typing import Sequence

import torch

PREFIX, CHOSEN, REJECTED, PAD = 0, 1, 2, 3  # segment of a token in a pair's row


def shared_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Tokens at the start of ``a`` and ``b`` that are equal, leaving each at least its last token."""
    n, cap = 0, min(len(a), len(b)) - 1
    while n < cap and a[n] == b[n]:
        n += 1
    return max(n, 0)


def row_positions(prefix: int, chosen: int, rejected: int, width: int) -> list[int]:
    """Position ids of a row ``[prefix, chosen rest, rejected rest, padding]``: both rests continue from the prefix."""
    used = prefix + chosen + rejected
    return [*range(prefix + chosen), *range(prefix, prefix + rejected), *([0] * (width - used))]


def row_segments(prefix: int, chosen: int, rejected: int, width: int) -> list[int]:
    """The segment (PREFIX, CHOSEN, REJECTED, PAD) of every column of such a row."""
    return [PREFIX] * prefix + [CHOSEN] * chosen + [REJECTED] * rejected + [PAD] * (width - prefix - chosen - rejected)


def attention_allowed(segments: torch.Tensor) -> torch.Tensor:
    """(..., width, width) bool: query q may attend key k when k <= q and k is in the prefix or in q's own segment.

    So the prefix is causal, each answer sees the prefix and itself causally, never the other answer;
    a padding column sees the prefix and the padding before it (never read, and never an empty row).
    """
    width = segments.shape[-1]
    q, k = torch.arange(width)[:, None], torch.arange(width)[None, :]
    seg_q, seg_k = segments[..., :, None], segments[..., None, :]
    return (k <= q) & ((seg_k == PREFIX) | (seg_k == seg_q))


def share_prefix_batch(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """One row per pair, right-padded to the widest row.

    Returns ``input_ids`` and ``position_ids`` (pairs x width), ``prefix_mask`` (pairs x 1 x width x
    width, bool, True = may attend: a prepared 4D mask transformers uses as given), ``last_index``
    (flat index into ``pairs * width`` of each side's last token: every chosen, then every rejected,
    as :class:`ser.data.batching.PairCollator` stacks them), ``lengths`` (each side's own tokens, in
    the same order: the real tokens the pair stands for) and ``shared`` (the prefix of each pair).
    """
    shared = [shared_prefix_length(c, r) for c, r in pairs]
    rests = [(len(c) - p, len(r) - p) for (c, r), p in zip(pairs, shared)]
    width = max(p + a + b for p, (a, b) in zip(shared, rests))
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(pairs), width), dtype=torch.long)
    seg = torch.zeros((len(pairs), width), dtype=torch.long)
    last = torch.zeros(2 * len(pairs), dtype=torch.long)
    for i, ((c, r), p, (a, b)) in enumerate(zip(pairs, shared, rests)):
        ids[i, : p + a + b] = torch.as_tensor([*c, *r[p:]], dtype=torch.long)
        pos[i] = torch.as_tensor(row_positions(p, a, b, width), dtype=torch.long)
        seg[i] = torch.as_tensor(row_segments(p, a, b, width), dtype=torch.long)
        last[i] = i * width + p + a - 1
        last[len(pairs) + i] = i * width + p + a + b - 1
    lengths = [len(c) for c, _ in pairs] + [len(r) for _, r in pairs]
    return {"input_ids": ids, "position_ids": pos, "prefix_mask": attention_allowed(seg)[:, None],
            "last_index": last, "lengths": torch.as_tensor(lengths, dtype=torch.long),
            "shared": torch.as_tensor(shared, dtype=torch.long)}
