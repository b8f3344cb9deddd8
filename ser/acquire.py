"""``ser acquire RUN``: the pairs a run asks humans to label, as a preference file to label elsewhere.

The pairs are those the run's last loop requested (``<phase>/acquired_loop{n}.json``, written by
:mod:`ser.acquisition` when the loop asks, before any answer), or, for a run without acquisition,
those a rule would request from its last saved pool scores (``--rule``, ``--count``; the
confidence there is ``0.5 + (p1 - p2) / 2`` from the saved answer-level ``p``).

The file (JSON lines) has ser's ``prompt/chosen/rejected`` layout with ``order: "unlabelled"``:
``chosen`` and ``rejected`` hold the two answers in canonical order (by text), not a preference;
``pair_id`` names the pair. The answers file a labeller returns has one row per answered pair,
``{"pair_id": ..., "winner": "chosen" | "rejected"}`` (the column holding the better answer),
as JSON lines or CSV; ``acquisition.oracle=file acquisition.answers=FILE`` resumes the run with it.

The pool's texts come from the run's data, rebuilt from its saved config (``.hydra/config.yaml``)
as the run built it; the pair ids are checked against the ones the run recorded.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from ser import acquisition as aq
from ser.errors import DataError


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run folder (outputs/train/...), with its .hydra/config.yaml")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="the preference file to write (default: RUN/acquire_loop{n}.jsonl)")
    p.add_argument("--phase", default="ser", help="the phase folder of the run (default: ser)")
    p.add_argument("--rule", choices=aq.RULES[1:], default=None,
                   help="a run without acquisition: the rule that picks the pairs (default: uncertain)")
    p.add_argument("--count", type=int, default=None,
                   help="a run without acquisition: how many pairs to pick from its last pool scores")


def _loop_files(phase_dir: Path, pattern: str) -> dict[int, Path]:
    rx = re.compile(pattern)
    return {int(m.group(1)): f for f in phase_dir.glob("*") if (m := rx.fullmatch(f.name))}


def latest_request(phase_dir: Path) -> dict | None:
    """The record of the last loop that asked for human labels, or None."""
    files = _loop_files(phase_dir, r"acquired_loop(\d+)\.json")
    return json.loads(files[max(files)].read_text()) if files else None


def would_request(phase_dir: Path, rule: str, count: int, seed: int) -> dict:
    """What ``rule`` would ask for from the run's last saved pool scores: a request record."""
    files = _loop_files(phase_dir, r"pool_scores_loop(\d+)\.npz")
    if not files:
        raise DataError(f"{phase_dir}: no pool scores saved (pool_scores_loop*.npz): did the run score its pool?")
    loop = max(files)
    with np.load(files[loop]) as z:
        index, p_first = z["pool_index"], aq.pair_probability(z["p1"], z["p2"])
    score = None
    if rule == "disagree" and loop - 1 in files:
        from ser.selection import previous_a1_better

        with np.load(files[loop - 1]) as prev:
            score = aq.disagreement(aq.flipped(previous_a1_better(dict(prev), index), p_first), None, len(index))
    pos = aq.choose(rule, p_first, count, seed, loop, score)
    return {"loop": loop, "rule": rule, "oracle": None, "index": [int(i) for i in index[pos]], "pair_id": None,
            "p_a1_better": [float(p) for p in p_first[pos]], "a1_better": None}


def export_rows(record: dict, rows: list[dict], ids: np.ndarray) -> list[dict]:
    """The preference-file rows of a request: answers in canonical order, no preference."""
    out = []
    for k, i in enumerate(record["index"]):
        r = rows[i]
        if record.get("pair_id") and record["pair_id"][k] != ids[i]:
            raise DataError(f"pool pair {i}: id {ids[i]} differs from the {record['pair_id'][k]} the run recorded "
                            "(its data changed since the run?)")
        first, second = (r["a1"], r["a2"]) if aq.canonical_first(r["a1"], r["a2"]) else (r["a2"], r["a1"])
        out.append({"pair_id": str(ids[i]), "prompt": r["prompt"], "chosen": first, "rejected": second,
                    "order": "unlabelled", "loop": record["loop"]})
    return out


def pool_of_run(run_dir: Path):
    """The run's pool as it built it: (rows, pair ids), from its saved config."""
    from omegaconf import OmegaConf

    from ser.data import PreferenceDataModule
    from ser.model import load_tokenizer

    cfg_file = run_dir / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        raise DataError(f"{cfg_file}: no saved config (give the folder `python -m ser.train` ran in)")
    cfg = OmegaConf.load(cfg_file)
    dm = PreferenceDataModule(cfg.data, load_tokenizer(cfg.model), seed=cfg.seed)
    dm.setup()
    return dm.pool_rows(), dm.pool_pair_ids()


def cli_acquire(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    phase_dir = run_dir / args.phase
    if not phase_dir.is_dir():
        raise DataError(f"{phase_dir}: no such phase folder (a run with loop.max_loops > 0 has a ser/ phase)")
    record = latest_request(phase_dir)
    if record is None:
        if not args.count:
            raise DataError(f"{phase_dir}: the run asked for no human labels (acquisition=none): pass --count N "
                            "(and --rule) to pick the pairs its last pool scores would ask for")
        from omegaconf import OmegaConf

        seed = int(OmegaConf.load(run_dir / ".hydra" / "config.yaml").seed) if (run_dir / ".hydra").is_dir() else 0
        record = would_request(phase_dir, args.rule or "uncertain", args.count, seed)
    elif args.rule or args.count:
        raise DataError(f"{phase_dir}: the run asked for its own pairs (loop {record['loop']}, rule {record['rule']}); "
                        "--rule and --count are for runs without acquisition")
    rows, ids = pool_of_run(run_dir)
    out = Path(args.out) if args.out else run_dir / f"acquire_loop{record['loop']}.jsonl"
    lines = export_rows(record, rows, ids)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in lines))
    print(f"wrote {len(lines)} pairs loop {record['loop']} asks about ({record['rule']}) to {out}; label each as a row "
          '{"pair_id": ..., "winner": "chosen" or "rejected"} (the column holding the better answer), then run the '
          "same training command with acquisition.oracle=file acquisition.answers=ANSWERS_FILE")
    return 0
