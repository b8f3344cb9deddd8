"""Preference data: loading the real formats, prompt-level splits, formatting, batching.

A *pair* is normalised to ``{"prompt": [messages], "chosen": str, "rejected": str, "key": str}``
where ``messages`` is a list of ``{"role", "content"}`` dicts (a plain-string prompt becomes one
user message) and ``key`` groups pairs of the same prompt so that a prompt never sits in two splits.

Supported sources (``data.format``):
- ``hh``: Anthropic HH-RLHF transcripts ``{"chosen", "rejected"}``, split at the shared prefix.
- ``summarize``: OpenAI summarize-from-feedback comparisons (``info``, ``summaries``, ``choice``).
- ``pairs``: explicit ``prompt/chosen/rejected`` strings, or TRL's conversational format
  (lists of messages; the prompt may be implicit in the shared prefix of chosen/rejected).
- ``stack_exchange``: ``HuggingFaceH4/stack-exchange-preferences`` questions with scored answers,
  one row giving several pairs (:mod:`ser.data.stack_exchange`: ``data.html``, ``data.pairs_per_prompt``).
- ``auto``: decided from the columns of the first row.
Local files may be jsonl/json (gzipped or not), parquet or csv; hub ids go through ``datasets``.

The package: :mod:`ser.data.formats` (reading files and normalising rows into pairs),
:mod:`ser.data.splits` (prompt-level splits), :mod:`ser.data.formatting` (prompt + answer -> token
ids), :mod:`ser.data.batching` (padding, collation, batch orders), :mod:`ser.data.packing` (padding-free
packing of decoder batches, ``data.packing``), :mod:`ser.data.prefix_sharing` (a training pair's shared
prefix computed once, ``data.prefix_sharing``) and :mod:`ser.data.datamodule`
(the DataModule); every name is importable from ``ser.data`` as before (``DataError`` too, from
:mod:`ser.errors`).
"""
from __future__ import annotations

from ser.data.batching import (FixedBatches, PairCollator, length_grouped_batches, pad_batch, random_batches,
                               shard_batches)
from ser.data.datamodule import PreferenceDataModule, gc_paused
from ser.data.formats import (DATA_DIR_ENV, HH_ASSISTANT, HH_HUMAN, PARSERS, LoadReport, detect_format, explicit_pair,
                              hh_pair, load_pairs, parse_hh_transcript, read_rows, resolve_data_path, summarize_pair,
                              summarize_prompt)
from ser.data.formatting import Formatter, render_plain_prompt
from ser.data.packing import pack_batch
from ser.data.splits import Splits, check_fraction, split_pairs
from ser.errors import DataError

__all__ = [
    "DATA_DIR_ENV", "DataError", "FixedBatches", "Formatter", "HH_ASSISTANT", "HH_HUMAN", "LoadReport", "PARSERS",
    "PairCollator", "PreferenceDataModule", "Splits", "check_fraction", "detect_format", "explicit_pair", "gc_paused",
    "hh_pair", "length_grouped_batches", "load_pairs", "pack_batch", "pad_batch", "parse_hh_transcript", "random_batches",
    "read_rows", "render_plain_prompt", "resolve_data_path", "shard_batches", "split_pairs", "summarize_pair",
    "summarize_prompt",
]
