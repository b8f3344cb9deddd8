"""What a reward model's scores on preference rows say: pure functions over scores (each tested by
hand in ``tests/test_rm_eval.py``), used by ``ser evaluate-rm`` (:mod:`ser.rm_eval`).

- :func:`bootstrap_accuracy`: accuracy with a seeded percentile bootstrap CI; pairs that share a row
  (a RewardBench 2 row gives one pair per rejected answer) are resampled together.
- :func:`best_of_n_correct`: a row is right when its chosen answer scores strictly above every
  rejected one.
- :func:`subset_accuracy` and :func:`rewardbench_sections`: per-subset accuracy, and RewardBench's
  section scores and overall score, weighted as RewardBench weights them.
- :func:`length_bias`: accuracy when the chosen answer is the longer one vs the shorter one, in
  characters of the answer text (not tokens: the same split whatever the model's tokenizer).
- length control (:mod:`ser.length_control`, in :func:`summarize`): the length-only baseline,
  the length-balanced accuracy and the wrong-way accuracy with CIs, in tokens and characters.
- :func:`pair_calibration`: the expected calibration error of p = sigmoid(r_chosen - r_rejected).
- :func:`summarize`: all of them from the scores of a file's rows.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from ser.calibration import expected_calibration_error, reliability
from ser.length_control import evaluation_report
from ser.significance import N_BOOT, Interval



def bootstrap_accuracy(correct: Sequence[bool], groups: Sequence | None = None, n_boot: int = N_BOOT,
                       level: float = 0.95, seed: int = 0) -> Interval:
    """Share of ``correct`` with a percentile CI from ``n_boot`` resamples (seeded: reproducible).

    With ``groups`` (one label per item) whole groups are resampled and the accuracy of a resample
    is its right items over its items (a cluster bootstrap). A resample only needs how many groups
    fall in each (right, size) pattern, so each is one multinomial draw: exact and fast.
    """
    ok = np.asarray(correct, dtype=bool)
    if ok.size == 0:
        raise ValueError("no items to compute an accuracy on")
    if groups is None:
        stats = np.stack([ok.astype(np.int64), np.ones(ok.size, dtype=np.int64)], axis=1)
    else:
        _, inv = np.unique(np.asarray(groups), return_inverse=True)
        stats = np.stack([np.bincount(inv, weights=ok).astype(np.int64), np.bincount(inv)], axis=1)
    patterns, counts = np.unique(stats, axis=0, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(len(stats), counts / counts.sum(), size=n_boot)
    sums = draws @ patterns  # n_boot x (right, items)
    acc = sums[:, 0] / sums[:, 1]
    a = (1 - level) / 2
    lo, hi = np.quantile(acc, [a, 1 - a])
    return Interval(float(ok.mean()), float(lo), float(hi), n=int(ok.size), level=level)


def best_of_n_correct(chosen: Sequence[float], rejected: Sequence[Sequence[float]]) -> np.ndarray:
    """Per row: the chosen score is strictly greater than every rejected score.

    RewardBench 2 gives 1/k credit when the chosen answer ties k - 1 rejected ones at the top
    (``rewardbench/utils.py``, ``reroll_and_score_dataset``); here a tie at the top is wrong.
    """
    return np.array([c > max(r) for c, r in zip(chosen, rejected)], dtype=bool)


def subset_accuracy(subsets: Sequence[str], correct: Sequence[bool]) -> dict[str, dict]:
    """``{subset: {"n", "accuracy"}}`` in sorted subset order."""
    by: dict[str, list[bool]] = defaultdict(list)
    for s, c in zip(subsets, correct):
        by[str(s)].append(bool(c))
    return {s: {"n": len(v), "accuracy": float(np.mean(v))} for s, v in sorted(by.items())}


# RewardBench v1 (allenai/reward-bench at 05a9005, rewardbench/constants.py): the subsets of each
# section and the example counts that weight a subset inside its section (math-prm counts 984 for
# its 447 rows, "upweighting to be equal to code"). A section score is sum(acc * count) / sum(count)
# over its subsets present (calculate_scores_per_section in rewardbench/utils.py).
REWARDBENCH_SECTIONS = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
    "Chat Hard": ["mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"],
    "Safety": ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}
REWARDBENCH_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28, "mt-bench-med": 40,
    "mt-bench-hard": 37, "math-prm": 984, "refusals-dangerous": 100, "refusals-offensive": 100, "llmbar-natural": 100,
    "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "xstest-should-refuse": 154, "xstest-should-respond": 250, "donotanswer": 136, "hep-cpp": 164, "hep-go": 164,
    "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}
# The "prior sets" (allenai/pref-test-sets): their plain mean is one more section, "Prior Sets
# (0.5 weight)", and the overall score weights Chat, Chat Hard, Safety, Reasoning 2 each and the
# prior sets 1, leaving out what is missing (analysis/get_benchmark_results.py,
# get_average_over_rewardbench: np.ma.average with weights [2, 2, 2, 2, 1]).
REWARDBENCH_PRIOR_SETS = ["anthropic_helpful", "anthropic_hhh", "shp", "summarize"]
PRIOR = "Prior Sets (0.5 weight)"
SECTION_WEIGHTS = {"Chat": 2, "Chat Hard": 2, "Safety": 2, "Reasoning": 2, PRIOR: 1}


def rewardbench_sections(accuracy: dict[str, float]) -> dict | None:
    """RewardBench v1 section scores and overall score from ``{subset: accuracy}`` (fractions).

    ``{"sections": {section: score}, "score": overall}``, sections without any subset present are
    left out; None when no subset is one of RewardBench's.
    """
    sections = {}
    for section, subsets in REWARDBENCH_SECTIONS.items():
        present = [s for s in subsets if s in accuracy]
        if present:
            w = [REWARDBENCH_COUNTS[s] for s in present]
            sections[section] = float(np.average([accuracy[s] for s in present], weights=w))
    prior = [accuracy[s] for s in REWARDBENCH_PRIOR_SETS if s in accuracy]
    if prior:
        sections[PRIOR] = float(np.mean(prior))
    if not sections:
        return None
    score = float(np.average(list(sections.values()), weights=[SECTION_WEIGHTS[k] for k in sections]))
    return {"sections": sections, "score": score}


def length_bias(chosen_len: Sequence[int], rejected_len: Sequence[int], correct: Sequence[bool]) -> dict:
    """Accuracy split by whether the chosen answer is longer, shorter or as long as the rejected one,
    and how often the model prefers the longer answer of a pair of unequal lengths."""
    lc, lr = np.asarray(chosen_len), np.asarray(rejected_len)
    ok = np.asarray(correct, dtype=bool)
    out = {}
    for name, m in (("chosen_longer", lc > lr), ("chosen_shorter", lc < lr), ("same_length", lc == lr)):
        out[name] = {"n": int(m.sum()), "accuracy": float(ok[m].mean()) if m.any() else None}
    unequal = lc != lr
    # the longer answer wins: the chosen one when it is longer and right, the rejected one when it
    # is longer and the model got the pair wrong
    prefers = np.where(lc > lr, ok, ~ok)[unequal]
    out["prefers_longer"] = float(prefers.mean()) if unequal.any() else None
    out["unit"] = "characters"
    return out


def pair_calibration(chosen: Sequence[float], rejected: Sequence[float], bins: int = 10) -> dict:
    """Calibration of p = sigmoid(r_chosen - r_rejected), read as the model's confidence that a pair
    is ordered as labeled.

    The model predicts the orientation of p (chosen first when p > 0.5) with confidence
    max(p, 1 - p); a pair counts as right when r_chosen > r_rejected (a tie, p = 0.5, is wrong).
    ECE = sum over ``bins`` equal-width bins of that confidence over [0.5, 1] (its whole range) of
    (share of pairs in the bin) * |accuracy in the bin - mean confidence in the bin|, as the SER loop
    logs it (:mod:`ser.calibration`).
    """
    d = np.asarray(chosen, dtype=np.float64) - np.asarray(rejected, dtype=np.float64)
    p = 0.5 * (1.0 + np.tanh(d / 2))  # sigmoid, without overflow
    conf = np.maximum(p, 1.0 - p)
    right = d > 0
    return {"ece": expected_calibration_error(conf, right, bins), "bins": bins,
            "mean_confidence": float(conf.mean()), "accuracy": float(right.mean()),
            "reliability": reliability(conf, right, bins)}


def summarize(chosen: Sequence[float], rejected: Sequence[Sequence[float]], chosen_text: Sequence[str],
              rejected_text: Sequence[Sequence[str]], subsets: Sequence[str | None] | None = None,
              n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95,
              chosen_tokens: Sequence[int] | None = None, rejected_tokens: Sequence[Sequence[int]] | None = None,
              length_direction: dict | None = None) -> dict:
    """Every figure from the scores of the rows: row ``i`` has one chosen answer (score ``chosen[i]``)
    and one or more rejected ones (``rejected[i]``). Pairwise figures use every (chosen, rejected)
    pair; best-of-N figures the rows with two or more rejected answers.

    ``length_control``: per unit (``tokens`` when ``chosen_tokens``/``rejected_tokens`` are given,
    shaped like the texts, and ``chars``), :func:`ser.length_control.evaluation_report` with the
    training labels' direction of that unit from ``length_direction`` (an export's record) when given;
    pairs are resampled (within length strata), not rows."""
    rows = len(chosen)
    pc, pr, lc, lr, grp, tc, tr = [], [], [], [], [], [], []
    for i in range(rows):
        for j, (r, t) in enumerate(zip(rejected[i], rejected_text[i])):
            pc.append(chosen[i])
            pr.append(r)
            lc.append(len(chosen_text[i]))
            lr.append(len(t))
            grp.append(i)
            if chosen_tokens is not None:
                tc.append(chosen_tokens[i])
                tr.append(rejected_tokens[i][j])
    pc, pr = np.asarray(pc, dtype=np.float64), np.asarray(pr, dtype=np.float64)
    right = pc > pr
    clustered = len(pc) > rows
    acc = bootstrap_accuracy(right, grp if clustered else None, n_boot, level, seed)
    out = {"rows": rows, "pairs": int(len(pc)), "ties": int(np.sum(pc == pr)),
           "accuracy": {**acc.to_dict(), "n_boot": n_boot, "resampled": "rows" if clustered else "pairs"},
           "best_of_n": None, "subsets": None, "rewardbench": None, "subset_mean": None,
           "length_bias": length_bias(lc, lr, right), "calibration": pair_calibration(pc, pr),
           "reward": {"chosen_mean": float(pc.mean()), "rejected_mean": float(pr.mean()),
                      "margin_mean": float(np.mean(pc - pr)), "std": float(np.std(np.r_[chosen, pr]))}}
    units = {"tokens": (tc, tr)} if chosen_tokens is not None else {}
    units["chars"] = (lc, lr)
    out["length_control"] = {u: evaluation_report(right, a, b, (length_direction or {}).get(u), n_boot, level, seed)
                             for u, (a, b) in units.items()}
    row_ok = best_of_n_correct(chosen, rejected)
    multi = np.array([len(r) > 1 for r in rejected])
    if multi.any():
        b = bootstrap_accuracy(row_ok[multi], None, n_boot, level, seed)
        ns = [len(r) + 1 for r, m in zip(rejected, multi) if m]
        out["best_of_n"] = {**b.to_dict(), "n_boot": n_boot, "answers_per_row": sorted(set(ns)),
                            "chance": float(np.mean([1 / n for n in ns]))}
    if subsets is not None and any(s is not None for s in subsets):
        names = ["(none)" if s is None else str(s) for s in subsets]
        table = subset_accuracy(names, row_ok)
        for s, v in table.items():
            v["kind"] = "best-of-N" if any(m for n, m in zip(names, multi) if n == s) else "pairs"
        out["subsets"] = table
        out["rewardbench"] = rewardbench_sections({s: v["accuracy"] for s, v in table.items()})
        # RewardBench 2's overall score is this unweighted mean over its subsets (scored best-of-4)
        out["subset_mean"] = float(np.mean([v["accuracy"] for v in table.values()]))
    return out
