"""The Lightning DataModule of the SER loop: :class:`PreferenceDataModule` loads, splits and
tokenises once, then rebuilds the training pairs whenever the loop selects pool pairs (its
``state_dict`` holds the selections, so a resumed run trains on the same pairs); :func:`gc_paused`
keeps the cyclic garbage collector off while it tokenises.
"""
from __future__ import annotations

import copy
import gc
import logging
from collections import Counter
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ser.acquisition import canonical_first, pair_id
from ser.data.batching import FixedBatches, PairCollator, length_grouped_batches, random_batches
from ser.data.formats import load_pairs
from ser.data.stack_exchange import options_from_config
from ser.data.formatting import Formatter
from ser.data.prefix_sharing import shared_prefix_length
from ser.data.splits import pair_content_key, split_pairs
from ser.errors import DataError

log = logging.getLogger("ser.data")


@contextmanager
def gc_paused():
    """Cyclic garbage collection off for a block that only allocates (token-id lists): each full
    collection walks every live object, so it costs more the more is loaded (measured: 5k
    AlpacaEval pairs tokenized in 3.8 s with it, 2.0 s without; less memory at the end, too)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class PreferenceDataModule(pl.LightningDataModule):
    """Loads, splits and tokenises once; rebuilds the training pairs whenever the loop selects.

    Training pairs = the labeled seed pairs (unless ``keep_seed`` is off after loop 0), the pool
    pairs humans labelled on request (``acquisition``: always, oriented by their label), plus every
    selection so far, each a pool pair oriented by the reward model. ``state_dict`` holds the
    human labels and the selections, so a resumed run trains on exactly the same pairs.
    """

    def __init__(self, cfg, tokenizer, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.seed = seed
        self.selections: list[dict] = []  # [{"loop": n, "index": [...], "first_is_chosen": [...]}]
        self.human: list[dict] = []  # acquisition: [{"loop": n, "index": [...], "a1_better": [...]}] (human labels)
        self.include_seed = True
        self._ready = False
        self._kept_rows: dict[str, list[dict]] = {}  # split -> the rows that survived formatting, in order
        self._eval_meta: dict[str, np.ndarray] | None = None
        self._pool_lengths: dict[str, np.ndarray] | None = None
        self._pool_ids: tuple[np.ndarray, np.ndarray] | None = None
        self._label_direction: dict | None = None

    # -- set-up --------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        import time

        c = self.cfg
        t0 = time.perf_counter()
        columns = dict(c.columns) if c.get("columns") else None
        options = options_from_config(c)
        pairs, rep = load_pairs(c.files, c.format, c.get("data_dir"), c.get("hub_id"), c.get("hub_config"),
                                c.get("hub_split", "train"), c.get("hub_data_dir"), c.get("limit"), columns, options,
                                hub_revision=c.get("hub_revision"))
        test_pairs = trep = None
        if c.get("hub_test_split") and not c.files:
            test_pairs, trep = load_pairs(None, c.format, None, c.hub_id, c.get("hub_config"), c.hub_test_split,
                                          c.get("hub_data_dir"), None, columns, options, hub_revision=c.get("hub_revision"))
        elif c.get("test_files"):
            test_pairs, trep = load_pairs(c.test_files, c.format, c.get("data_dir"), columns=columns, options=options)
        if trep is not None:  # the separate test split counts in the same load report
            log.info("test split: %s", trep.line())
            rep.rows += trep.rows
            rep.kept += trep.kept
            rep.dropped.update(trep.dropped)
        self.load_report = rep
        self.splits = split_pairs(pairs, c.labeled_fraction, c.val_fraction, c.test_fraction, self.seed, test_pairs)
        t1 = time.perf_counter()
        fmt = Formatter(self.tokenizer, c.max_length, c.template, c.use_chat_template, c.overlength)
        self.cut = Counter()
        with gc_paused():  # millions of new small lists, nothing to collect
            self.labeled = self._encode_pairs(fmt, self.splits.labeled, "chosen", "rejected", "labeled")
            self.val = self._encode_pairs(fmt, self.splits.val, "chosen", "rejected", "val")
            self.test = self._encode_pairs(fmt, self.splits.test, "chosen", "rejected", "test")
            pool = self._encode_pairs(fmt, self.splits.pool, "a1", "a2", "pool", keep_index=True)
            self.eval_sets = {name: self._encode_pairs(fmt, self._eval_rows(name, spec), "chosen", "rejected", name)
                              for name, spec in (c.get("eval_sets") or {}).items()}
        self.pool = [(a, b) for a, b, _ in pool]
        self.pool_hidden = self.splits.pool_hidden[[i for _, _, i in pool]] if pool else np.zeros(0, bool)
        self.pool_alive = np.ones(len(self.pool), dtype=bool)
        self.timings = {"load_s": round(t1 - t0, 2), "tokenize_s": round(time.perf_counter() - t1, 2)}
        self._ready = True
        log.debug("data: %s", self.summary_line())

    def _eval_rows(self, name: str, spec) -> list[dict]:
        """The pairs of evaluation set ``name``: its test files when it has them (a data config), else
        its files or hub split; pairs whose prompt is in this run's training data are dropped, then a
        seeded sample of ``sample`` pairs is kept (seed 0: the same pairs whatever the run's seed)."""
        c = self.cfg
        files = spec.get("test_files") or spec.get("files")
        columns = dict(spec.columns) if spec.get("columns") else None
        pairs, rep = load_pairs(files, spec.get("format", "auto"), spec.get("data_dir") or c.get("data_dir"),
                                spec.get("hub_id"), spec.get("hub_config"),
                                spec.get("hub_test_split") or spec.get("hub_split", "train"), spec.get("hub_data_dir"),
                                spec.get("limit"), columns, options_from_config(spec), hub_revision=spec.get("hub_revision"))
        train_keys = {p["key"] for p in self.splits.labeled} | {p["key"] for p in self.splits.pool}
        kept = [p for p in pairs if p["key"] not in train_keys]
        if len(kept) < len(pairs):
            self.cut[f"dropped_in_train_{name}"] += len(pairs) - len(kept)
        n = spec.get("sample")
        if n and n < len(kept):
            idx = sorted(np.random.default_rng(0).choice(len(kept), size=int(n), replace=False))
            kept = [kept[i] for i in idx]
        if not kept:
            raise DataError(f"data.eval_sets.{name}: no pairs left ({rep.line()}; all prompts are in the training data?)")
        log.info("eval set %s: %d pairs (%s)", name, len(kept), rep.line())
        return kept

    def _encode_pairs(self, fmt: Formatter, rows: list[dict], a: str, b: str, split: str, keep_index=False):
        out, kept = [], []
        per_pair = self.cfg.get("prompt_cut", "answer") == "pair"
        for i, r in enumerate(rows):
            if per_pair:
                (ia, wa), (ib, wb) = fmt.encode_pair(r["prompt"], r[a], r[b])
            else:
                (ia, wa), (ib, wb) = fmt.encode(r["prompt"], r[a]), fmt.encode(r["prompt"], r[b])
            for w in (wa, wb):
                if w in ("truncated", "answer_truncated"):
                    self.cut[w] += 1
            if ia is None or ib is None:
                self.cut[f"dropped_overlength_{split}"] += 1
                continue
            if ia == ib:
                self.cut[f"dropped_identical_after_cut_{split}"] += 1
                continue
            out.append((ia, ib, i) if keep_index else (ia, ib))
            kept.append(i)
        self._kept_rows[split] = [rows[i] for i in kept]
        return out

    def counts(self) -> dict[str, int]:
        return {"labeled": len(self.labeled), "pool": len(self.pool), "val": len(self.val), "test": len(self.test),
                **{name: len(pairs) for name, pairs in self.eval_sets.items()}}

    def evaluation_sets(self) -> dict[str, list]:
        """Every set scored at each loop's end: test, val (when there is one) and the named eval sets."""
        return {"test": self.test, **({"val": self.val} if self.val else {}), **self.eval_sets}

    def evaluation_metadata(self) -> dict[str, np.ndarray]:
        """Per evaluation set ``s``, aligned with its pairs: ``{s}_key`` (uint64 content hash of prompt,
        chosen and rejected: the same pair has the same key in every run, so ``ser report`` knows which
        runs share test pairs), ``{s}_chosen_chars`` / ``{s}_rejected_chars`` and ``{s}_chosen_tokens`` /
        ``{s}_rejected_tokens`` (answer lengths, tokens of this model's tokenizer without special
        tokens, before any cut): what length-controlled accuracy is computed from."""
        if self._eval_meta is not None:
            return self._eval_meta
        out: dict[str, np.ndarray] = {}
        for name in self.evaluation_sets():
            rows = self._kept_rows.get(name, [])
            out[f"{name}_key"] = np.array([pair_content_key(r) for r in rows], dtype=np.uint64)
            for side in ("chosen", "rejected"):
                texts = [r[side] for r in rows]
                out[f"{name}_{side}_chars"] = np.array([len(t) for t in texts], dtype=np.int32)
                ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
                out[f"{name}_{side}_tokens"] = np.array([len(x) for x in ids], dtype=np.int32)
        self._eval_meta = out
        return out

    def pool_lengths(self) -> dict[str, np.ndarray]:
        """Answer lengths of every pool pair (indexed like the pool): ``a1_chars``, ``a2_chars``,
        ``a1_tokens``, ``a2_tokens`` (as in :meth:`evaluation_metadata`); saved beside each loop's
        pool scores so ``ser report`` can show whether self-labelling favours the longer answer."""
        if self._pool_lengths is None:
            rows = self._kept_rows.get("pool", [])
            self._pool_lengths = {}
            for side in ("a1", "a2"):
                texts = [r[side] for r in rows]
                self._pool_lengths[f"{side}_chars"] = np.array([len(t) for t in texts], dtype=np.int32)
                ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
                self._pool_lengths[f"{side}_tokens"] = np.array([len(x) for x in ids], dtype=np.int32)
        return self._pool_lengths

    def _pool_identity(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pool_ids is None:
            rows = self._kept_rows.get("pool", [])
            self._pool_ids = (np.array([pair_id(r["prompt"], r["a1"], r["a2"]) for r in rows], dtype="<U16"),
                              np.array([canonical_first(r["a1"], r["a2"]) for r in rows], dtype=bool))
        return self._pool_ids

    def pool_pair_ids(self) -> np.ndarray:
        """The stable id of every pool pair (indexed like the pool): :func:`ser.acquisition.pair_id`."""
        return self._pool_identity()[0]

    def pool_a1_first(self) -> np.ndarray:
        """Per pool pair: a1 comes first in the canonical order (:func:`ser.acquisition.canonical_first`)."""
        return self._pool_identity()[1]

    def pool_rows(self) -> list[dict]:
        """The pool's rows as loaded (``prompt``, ``a1``, ``a2``), indexed like the pool."""
        return self._kept_rows.get("pool", [])

    def labeled_length_direction(self) -> dict[str, dict]:
        """Per unit (``chars``, ``tokens`` as in :meth:`evaluation_metadata`): how often the chosen
        answer of a labelled pair is the longer one, and so the direction of the length-only rule
        that the training labels favour (:func:`ser.length_control.label_direction`)."""
        if self._label_direction is None:
            from ser.length_control import label_direction

            rows = self._kept_rows.get("labeled", [])
            out = {}
            for unit in ("chars", "tokens"):
                lengths = []
                for side in ("chosen", "rejected"):
                    texts = [r[side] for r in rows]
                    if unit == "chars":
                        lengths.append([len(t) for t in texts])
                    else:
                        lengths.append([len(x) for x in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
                                       if texts else [])
                out[unit] = label_direction(*lengths)
            self._label_direction = out
        return self._label_direction

    def summary_line(self) -> str:
        cut = ", ".join(f"{k}={v}" for k, v in sorted(self.cut.items())) or "none"
        splits = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return f"{self.load_report.line()}; splits: {splits}; formatting: {cut}"

    # -- the loop's view -------------------------------------------------------------------
    def add_selection(self, loop: int, index: Sequence[int], first_is_chosen: Sequence[bool], remove_from_pool: bool) -> None:
        index = [int(i) for i in index]
        self.selections.append({"loop": int(loop), "index": index, "first_is_chosen": [bool(x) for x in first_is_chosen]})
        if remove_from_pool:
            self.pool_alive[index] = False

    def add_human(self, loop: int, index: Sequence[int], a1_better: Sequence[bool]) -> None:
        """Human labels of pool pairs (``acquisition``): they leave the pool for good."""
        index = [int(i) for i in index]
        self.human.append({"loop": int(loop), "index": index, "a1_better": [bool(x) for x in a1_better]})
        self.pool_alive[index] = False

    def human_count(self) -> int:
        return sum(len(h["index"]) for h in self.human)

    def human_pairs(self) -> list[tuple[list[int], list[int]]]:
        """The human-labelled pool pairs as (chosen, rejected), in the order they were asked."""
        return [(self.pool[i][0], self.pool[i][1]) if first else (self.pool[i][1], self.pool[i][0])
                for h in self.human for i, first in zip(h["index"], h["a1_better"])]

    def labeled_pairs(self) -> list[tuple[list[int], list[int]]]:
        """The labelled set whose scores centre and scale ``p``: the seed pairs and the human-labelled ones."""
        return list(self.labeled) + self.human_pairs() if self.human else self.labeled

    def pool_indices(self) -> np.ndarray:
        return np.flatnonzero(self.pool_alive)

    def train_pairs(self) -> list[tuple[list[int], list[int]]]:
        pairs = list(self.labeled) if self.include_seed else []
        pairs += self.human_pairs()  # human labels never leave
        # a pool pair appears once, oriented by its latest selection (it can be re-selected,
        # possibly flipped, when selected pairs stay in the pool); a human label overrides it
        oriented: dict[int, bool] = {}
        for s in self.selections:
            oriented.update(zip(s["index"], s["first_is_chosen"]))
        for h in self.human:
            for i in h["index"]:
                oriented.pop(i, None)
        for i, first in oriented.items():
            a1, a2 = self.pool[i]
            pairs.append((a1, a2) if first else (a2, a1))
        return pairs

    def state_dict(self) -> dict:
        return {"selections": copy.deepcopy(self.selections), "include_seed": self.include_seed,
                "pool_alive": self.pool_alive.tolist() if self._ready else None, "human": copy.deepcopy(self.human)}

    def load_state_dict(self, state: dict) -> None:
        self.selections = copy.deepcopy(state["selections"])
        self.human = copy.deepcopy(state.get("human", []))  # checkpoints before acquisition have none
        self.include_seed = state["include_seed"]
        if state.get("pool_alive") is not None:
            self.setup()
            self.pool_alive = np.array(state["pool_alive"], dtype=bool)

    # -- loaders ---------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        t = getattr(self, "trainer", None)
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _loader(self, pairs, epoch: int = 0) -> DataLoader:
        """The training loader of ``epoch``: shuffled (length-grouped when configured), this rank's share."""
        c = self.cfg
        rank, world = self._rank_world()
        if c.group_by_length and len(pairs) > 0:
            # chosen and rejected are padded together, so a pair costs its longer side; with prefix
            # sharing a pair is one row of both sides less their shared prefix
            if c.get("prefix_sharing"):
                lengths = [len(a) + len(b) - shared_prefix_length(a, b) for a, b in pairs]
            else:
                lengths = [max(len(a), len(b)) for a, b in pairs]
            batches = length_grouped_batches(lengths, c.batch_size, self.seed + epoch, True, rank=rank, world_size=world)
        else:
            batches = random_batches(len(pairs), c.batch_size, self.seed + epoch, rank, world)
        # a generator of its own: creating the loader's iterator draws a base seed, which from the
        # global RNG would shift the dropout masks depending on when Lightning creates it (a resumed
        # run creates its first iterator before the epoch's re-seeding, an uninterrupted one after)
        return DataLoader(pairs, batch_sampler=FixedBatches(batches), collate_fn=PairCollator(self.pad_id, c.packing, c.pack_length, c.get("prefix_sharing", False)),
                          num_workers=c.num_workers, generator=torch.Generator().manual_seed(self.seed + epoch))

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def train_dataloader(self) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        epoch = trainer.current_epoch if trainer is not None else 0
        pairs = self.train_pairs()
        if not pairs:
            raise DataError("no training pairs: the labeled split is empty and nothing was selected")
        return self._loader(pairs, epoch=epoch)
