"""Human-label acquisition (issue 25): which pool pairs a human should label next, and where the
labels come from. Pure functions over a loop's pool scores, plus the two oracles and the files a
user exchanges with a labelling tool.

When, in a loop (``ser.loop``): at the end of loop n the pool is scored and the selection computes
every alive pair's probability ``P(a1 > a2)``; before self-labelling, ``acquisition.rule`` asks for
:func:`request_size` pairs, their labels are revealed by the oracle, they join the labelled set
(trained from loop n + 1 on, never dropped, part of the labelled scores that centre and scale
``p``) and leave the pool; the rest of the pool is then self-labelled as without acquisition.
Loop 0 is trained and scored before anything is asked, so it is the same with or without
acquisition (and shared through phase reuse).

Rules (:func:`choose`), each over the alive pairs:

- ``uncertain``: the pairs of lowest confidence ``|P(a1 > a2) - 0.5|`` (ties: pool order);
- ``disagree``: the pairs the RM disagrees with itself about: the orientation flipped since the
  previous loop's saved pool scores (:func:`flipped`), plus the MC-dropout disagreement ``1 -
  agreement`` when ``selection.mc_passes > 0``; ties (e.g. every pair at loop 0, where no previous
  loop exists) broken by the lowest confidence, then pool order;
- ``random``: a seeded uniform draw (the control), from ``(seed, loop)``;
- ``none``: nothing is asked (the paper's SER).

``P(a1 > a2)`` is the probability the selection itself uses (:func:`pair_probability`): with
``selection.strategy=status`` the paper's answer-level ``p`` turned pairwise, ``0.5 + (p1 - p2) / 2``
(its confidence ``|p1 - p2| / 2`` ranks pairs as the status filter's gap does); with a confidence
strategy the temperature-scaled ``sigmoid((r1 - r2) / T)``.

Oracles (:func:`make_oracle`): ``hidden`` (experiments) reveals the pool's hidden labels of the
requested pairs only, and nothing else; ``file`` (real use) reads ``acquisition.answers``, a file
of answered pairs (:func:`read_answers`). Pairs are named by :func:`pair_id`, a content hash of the
prompt and the two answers in :func:`canonical_first` order, so an answer is the same whatever the
run's seed; ``ser acquire`` (:mod:`ser.acquire`) writes the requested pairs in that order.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ser import faults
from ser.errors import DataError
from ser.selection import previous_a1_better

log = logging.getLogger("ser.acquisition")

RULES = ("none", "random", "uncertain", "disagree")
ORACLES = ("hidden", "file")
#: the ``winner`` values of an answers file: the column of ``ser acquire``'s file holding the better answer
WINNERS = ("chosen", "rejected")


# --------------------------------------------------------------------------------------------
# How many, and which
# --------------------------------------------------------------------------------------------

def resolve_amount(value: float, of: int) -> int:
    """``value`` >= 1: a count; 0 < ``value`` < 1: that share of ``of``, rounded (at least 1); 0: none."""
    if value <= 0:
        return 0
    if value >= 1:
        return int(value)
    return max(1, int(round(value * of)))


def request_size(per_loop: float, budget: float, pool_now: int, pool_initial: int, used: int) -> int:
    """Pairs to ask for this loop: ``per_loop`` (count, or share of the initial pool, so that every
    rule spends the same budget over the same loops), no more than what is left of ``budget`` (count,
    or share of the initial pool) after ``used``, nor what the pool still holds."""
    left = max(0, resolve_amount(budget, pool_initial) - used)
    return max(0, min(resolve_amount(per_loop, pool_initial), left, pool_now))


def pair_probability(p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """``P(a1 > a2)`` from the paper's answer-level ``p`` (status strategy): ``0.5 + (p1 - p2) / 2``."""
    return 0.5 + (np.asarray(p1, float) - np.asarray(p2, float)) / 2


def confidence(p_first: np.ndarray) -> np.ndarray:
    """``|P(a1 > a2) - 0.5|``: 0 = the RM cannot tell, 0.5 = certain."""
    return np.abs(np.asarray(p_first, float) - 0.5)


def flipped(previous_a1_better: np.ndarray, p_first: np.ndarray) -> np.ndarray:
    """1.0 where the previous loop ranked the pair the other way round (``previous_a1_better``: 1,
    0, or -1 = not scored then, counted as no flip), else 0.0."""
    prev = np.asarray(previous_a1_better)
    now = np.asarray(p_first, float) > 0.5
    return ((prev >= 0) & ((prev == 1) != now)).astype(float)


def disagreement(flips: np.ndarray | None, mc_agreement: np.ndarray | None, n: int) -> np.ndarray:
    """Per pair: orientation flip (0/1) plus MC-dropout disagreement ``1 - agreement`` (NaN, a pair
    not scored with dropout: 0)."""
    out = np.zeros(n)
    if flips is not None:
        out += np.asarray(flips, float)
    if mc_agreement is not None:
        out += np.nan_to_num(1.0 - np.asarray(mc_agreement, float), nan=0.0)
    return out


def _order(*keys: np.ndarray) -> np.ndarray:
    """Positions sorted by ``keys`` (the first the most significant, ascending), ties in position
    order; NaN sorts last."""
    n = len(keys[0])
    cols = [np.nan_to_num(np.asarray(k, float), nan=np.inf) for k in keys]
    return np.lexsort([np.arange(n), *reversed(cols)])


def choose(rule: str, p_first: np.ndarray, k: int, seed: int = 0, loop: int = 0,
           disagree_score: np.ndarray | None = None) -> np.ndarray:
    """Positions (into the alive pairs) of the ``k`` pairs ``rule`` asks for, in ascending order."""
    n = len(p_first)
    k = min(k, n)
    if rule == "none" or k <= 0:
        return np.zeros(0, dtype=np.int64)
    conf = confidence(p_first)
    if rule == "uncertain":
        picked = _order(conf)[:k]
    elif rule == "disagree":
        d = disagreement(None, None, n) if disagree_score is None else np.asarray(disagree_score, float)
        picked = _order(-d, conf)[:k]
    elif rule == "random":
        picked = np.random.default_rng([int(seed), int(loop), 25]).choice(n, size=k, replace=False)
    else:
        raise ValueError(f"acquisition.rule='{rule}' must be one of {', '.join(RULES)}")
    return np.sort(np.asarray(picked, dtype=np.int64))


def request_fields(p_first: np.ndarray, a1_better: np.ndarray, used_before: int) -> dict:
    """Diagnostics of one loop's request: pairs asked, their mean confidence, how often the RM had
    them the wrong way round (its ``P > 0.5`` against the oracle's label; a pair at exactly 0.5
    counts as wrong: the RM could not tell), the human labels used so far, this loop included."""
    p = np.asarray(p_first, float)
    truth = np.asarray(a1_better, bool)
    n = len(p)
    return {"human_asked": n,
            "human_confidence": float(confidence(p).mean()) if n else None,
            "human_rm_wrong": float(np.mean(~((p > 0.5) & truth | (p < 0.5) & ~truth))) if n else None,
            "human_labels_used": int(used_before + n)}


# --------------------------------------------------------------------------------------------
# Pair ids, answers files, oracles
# --------------------------------------------------------------------------------------------

def canonical_first(a1: str, a2: str) -> bool:
    """True when ``a1`` comes first in the canonical order of a pair's answers (by text): the order
    ``ser acquire`` writes them in, whatever order the run's pool drew."""
    return a1 <= a2


def pair_id(prompt, a1: str, a2: str) -> str:
    """A stable id of an unlabelled pair: a 64-bit hash (16 hex digits) of the prompt and the two
    answers in canonical order (the same pair has the same id in every run and every seed)."""
    first, second = (a1, a2) if canonical_first(a1, a2) else (a2, a1)
    text = json.dumps([prompt, first, second], sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def read_answers(path: str | Path) -> dict[str, bool]:
    """An answers file -> ``{pair_id: the canonical first answer wins}``.

    JSON lines (``.jsonl``, ``.json``) or CSV (``.csv``), one answered pair a row: ``pair_id`` (as
    ``ser acquire`` wrote it) and ``winner``: ``chosen`` or ``rejected``, the column of ``ser
    acquire``'s file that holds the better answer. A bad row raises a ``DataError`` naming the file,
    the row and what to do; an id answered twice the same way is fine, two ways an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"acquisition.answers={path}: no such file (write it from the file `ser acquire RUN` gave)")
    fix = ("each row needs pair_id (from `ser acquire`) and winner: chosen or rejected (the column holding the "
           "better answer); fix that row and run the same command again")
    rows: list[tuple[int, object]] = []
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            rows = [(i + 2, r) for i, r in enumerate(csv.DictReader(fh))]  # row 1 is the header
    elif path.suffix in (".jsonl", ".json"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((i, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path} row {i}: not JSON ({e.msg}); {fix}") from None
    else:
        raise DataError(f"acquisition.answers={path}: use a .jsonl or .csv file ({fix})")
    out: dict[str, bool] = {}
    for i, r in rows:
        if not isinstance(r, dict) or not r.get("pair_id"):
            raise DataError(f"{path} row {i}: no pair_id; {fix}")
        winner = str(r.get("winner", "")).strip().lower()
        if winner not in WINNERS:
            raise DataError(f"{path} row {i}: winner={r.get('winner')!r} is not chosen or rejected; {fix}")
        pid, first_wins = str(r["pair_id"]).strip(), winner == "chosen"
        if out.get(pid, first_wins) != first_wins:
            raise DataError(f"{path} row {i}: pair {pid} is answered both ways; keep one answer and run again")
        out[pid] = first_wins
    return out


class AnswersPending(DataError):
    """A file oracle was asked for pairs its answers file does not answer (yet)."""


class HiddenOracle:
    """Experiments: the pool's hidden labels, revealed only for the pairs asked for (logged)."""

    kind = "hidden"

    def __init__(self, hidden: np.ndarray):
        self._hidden = np.asarray(hidden, bool)

    def reveal(self, index: np.ndarray, loop: int) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        log.info("acquisition: loop %d reveals the hidden labels of %d requested pool pairs (no other)", loop, len(index))
        return self._hidden[index].copy()


class FileOracle:
    """Real use: the answers of ``acquisition.answers`` (None: none yet), by pair id."""

    kind = "file"

    def __init__(self, answers: str | None, pair_ids: np.ndarray, a1_first: np.ndarray):
        self.path = answers
        self._answers = read_answers(answers) if answers else {}
        self._ids, self._a1_first = np.asarray(pair_ids), np.asarray(a1_first, bool)

    def reveal(self, index: np.ndarray, loop: int) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        missing = [i for i in index if str(self._ids[i]) not in self._answers]
        if missing:
            where = f"acquisition.answers={self.path} answers" if self.path else "no acquisition.answers file answers"
            raise AnswersPending(f"loop {loop} asks for {len(index)} human labels and {where} {len(missing)} of them: "
                                 "run `ser acquire RUN` to write them, label them, then run the same command with "
                                 "acquisition.answers=FILE")
        first_wins = np.array([self._answers[str(self._ids[i])] for i in index], dtype=bool)
        log.info("acquisition: loop %d takes %d answers from %s", loop, len(index), self.path)
        return first_wins == self._a1_first[index]  # a1 is better: the canonical first wins and a1 is first, or neither


def make_oracle(acq, hidden: np.ndarray, pair_ids: np.ndarray | None, a1_first: np.ndarray | None):
    """The oracle ``acquisition.oracle`` names."""
    if acq.oracle == "hidden":
        return HiddenOracle(hidden)
    return FileOracle(acq.get("answers"), pair_ids, a1_first)


@dataclass
class Acquired:
    """One loop's request: the pool pairs asked for, what the oracle said, and the diagnostics."""

    loop: int
    index: np.ndarray  # pool indices
    a1_better: np.ndarray  # the oracle's labels
    p_first: np.ndarray  # the RM's P(a1 > a2) of each, when asked
    fields: dict

    def record(self, rule: str, oracle: str, pair_ids: np.ndarray | None) -> dict:
        """What ``acquired_loop{n}.json`` holds (``ser acquire`` reads it)."""
        return {"loop": self.loop, "rule": rule, "oracle": oracle, "index": [int(i) for i in self.index],
                "pair_id": [str(pair_ids[i]) for i in self.index] if pair_ids is not None else None,
                "p_a1_better": [float(p) for p in self.p_first],
                "a1_better": [bool(x) for x in self.a1_better] if self.a1_better is not None else None, **self.fields}


def is_active(acq) -> bool:
    return acq is not None and acq.get("rule", "none") != "none"


# --------------------------------------------------------------------------------------------
# One loop's request, between scoring and self-labelling
# --------------------------------------------------------------------------------------------

def label_and_acquire(label: Callable, scores: np.ndarray, labeled: np.ndarray | None, alive: np.ndarray,
                      mc: np.ndarray | None, acq, oracle, seed: int, loop: int, used: int, pool_initial: int,
                      previous: dict | None = None, write_request: Callable[[Acquired], None] | None = None
                      ) -> tuple[object, Acquired | None]:
    """Self-label the pool after asking for human labels (``acquisition``, :mod:`ser.acquisition`).

    ``label(scores, labeled, alive, mc)`` is :func:`ser.loop.label_pool` with the run's settings,
    returning its ``Labeling``. Without acquisition (``rule=none``) this is that one call. Else: the pairs the rule chooses from the
    full pool's ``P(a1 > a2)`` are revealed by ``oracle`` (only those), leave the pool, and their
    scores (oriented by the oracle) join ``labeled`` before the rest is labelled again with them.
    ``write_request`` gets the request before the oracle answers (``a1_better`` None)
    and after. ``previous``: the previous loop's saved pool scores (``disagree``)."""
    lab = label(scores, labeled, alive, mc)
    if not is_active(acq):
        return lab, None
    n = len(alive)
    k = request_size(acq.per_loop, acq.budget, n, pool_initial, used)
    if k == 0:
        lab = lab if acq.self_label else _kept_nothing(lab, n)
        lab.fields.update(human_asked=0, human_labels_used=used)
        return lab, None
    score = None
    if acq.rule == "disagree":
        flips = flipped(previous_a1_better(previous, alive), lab.p_first) if previous is not None else None
        score = disagreement(flips, mc, n)
    pos = choose(acq.rule, lab.p_first, k, seed, loop, score)
    req = Acquired(loop, alive[pos], None, lab.p_first[pos], {})
    if write_request is not None:
        write_request(req)
    req.a1_better = oracle.reveal(req.index, loop)
    faults.point("acquired")
    req.fields = request_fields(req.p_first, req.a1_better, used)
    if write_request is not None:
        write_request(req)
    s1, s2 = scores[:n], scores[n:]
    if labeled is not None:  # the human pairs' scores, chosen then rejected, join the labelled scores
        chosen, rejected = np.where(req.a1_better, s1[pos], s2[pos]), np.where(req.a1_better, s2[pos], s1[pos])
        labeled = np.concatenate([labeled, np.column_stack([chosen, rejected]).ravel()])
    keep = np.ones(n, dtype=bool)
    keep[pos] = False
    if keep.any() and acq.self_label:
        lab = label(np.concatenate([s1[keep], s2[keep]]), labeled, alive[keep], mc[keep] if mc is not None else None)
    else:
        lab = _kept_nothing(lab, int(keep.sum()))
    lab.fields.update(req.fields)
    lab.stop = False  # new human labels: the next loop trains on them
    return lab, req


def _kept_nothing(lab, pool_left: int):
    """No self-labelling (``acquisition.self_label=false``, or nothing left in the pool): nothing kept."""
    fields = {"pool": pool_left, "status": "STOP", "kept": 0, "pseudo_label_precision": None}
    empty = np.zeros(0, dtype=np.int64)
    return dataclasses.replace(lab, fields=fields, pool_index=empty, first_is_chosen=np.zeros(0, dtype=bool), stop=True,
                               arrays={**lab.arrays, "kept": empty})


def write_request(out_dir: Path, req: Acquired, rule: str, oracle_kind: str, pair_ids: np.ndarray) -> None:
    """``acquired_loop{n}.json``: the pairs loop n asked for (``ser acquire`` reads it), and once
    answered what the oracle said."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"acquired_loop{req.loop}.json.tmp"
    tmp.write_text(json.dumps(req.record(rule, oracle_kind, pair_ids), indent=1))
    tmp.replace(out_dir / f"acquired_loop{req.loop}.json")
