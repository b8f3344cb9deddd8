"""Accuracy that length cannot fake: length-controlled figures of reward models, pure functions.

Per pair of a set: the lengths of its chosen and rejected answers (``chosen_len``, ``rejected_len``,
in one unit: ``"tokens"`` of the model's tokenizer or ``"chars"``; a function takes the lengths of
the unit wanted, the readers take ``unit``) and the model's outcome ``correct`` (chosen scored
strictly above rejected; a score tie is wrong, as everywhere in ser).

**The direction** of the length-only rule is the one the *training* labels favour
(:func:`label_direction`): ``"longer"`` when the chosen answer is the longer one in at least half of
the labelled pairs of unequal lengths, else ``"shorter"``. It comes from the labelled training pairs
(``PreferenceDataModule.labeled_length_direction``, recorded as ``length_direction`` in each
phase's results and in an export's ``ser_reward.json``), never from the evaluated pairs: that would
be an oracle.

**Strata** (:func:`strata`): a pair of unequal lengths is *right way* when length points to its
chosen answer in that direction (chosen longer with "longer", chosen shorter with "shorter"), *wrong
way* otherwise; a pair of equal lengths is in neither.

- :func:`length_baseline`: accuracy of "prefer the {direction} answer" on the same pairs: right on
  right-way pairs, wrong on wrong-way pairs, **half right on pairs of equal length** (the expected
  score of a coin flip), so its denominator is every pair, like the model's accuracy.
- :func:`stratum_accuracy`: the model's accuracy on the right-way and on the wrong-way pairs.
- :func:`balanced_accuracy`: the mean of the two strata accuracies. **Pairs of equal length are
  left out** (length says nothing there and they are in neither stratum); None when a stratum is
  empty. Any rule that reads only lengths scores exactly 50% on it (all of one stratum and none of
  the other, or the same share of both), so 50% is chance and the excess is what the model knows
  beyond length. It does not depend on the direction (the two strata swap).
- :func:`prefers_longer`: share of the pairs of unequal lengths where the model scores the longer
  answer above the shorter one (from outcomes: a score tie counts as preferring the rejected answer).
- :func:`balanced_pair_values`: per-pair values whose mean is the balanced accuracy (equal-length
  pairs 0, a pair of stratum s weighs n / (2 n_s)): what across-seed statistics over per-pair
  values (``ser.significance.seed_moments``) need.

**Uncertainty** (``ser.significance``'s conventions: :class:`~ser.significance.Interval`, level
0.95, seeded percentile CIs): the balanced and per-stratum figures resample pairs *within* each
stratum, its size fixed (a stratified bootstrap: :func:`length_cis`, one model, and
:func:`paired_length_cis`, model B - model A on the same pairs). Why stratified: the balanced
accuracy weighs each stratum 1/2 whatever its size, and the sizes are set by the data (answer
lengths, known before any model scores them), not by the models; resampling across strata would let
the wrong-way stratum shrink (14% of AlpacaEval's test pairs: ~270) and add a variance the estimate
does not have. The baseline and the model minus the baseline are shares of every pair and resample
every pair (:func:`baseline_cis`).

**Selection** (``selection.length_balance``): :func:`balance_by_length` keeps, of the pairs a
strategy selected, as many "chosen-by-RM is the longer" as "chosen-by-RM is the shorter" pairs (the
most confident of each side), so self-labels add no length signal; the human labels keep theirs.

**Readers and lines**: :func:`run_length_statistics` (a run's saved ``eval_scores_loopN.npz``, the
seed RM, SER final and the full-data RM), :func:`length_lines` (the lines under a run's table),
:func:`summary_figures` (wandb summary), :func:`loop_test_fields` / :func:`pool_fields` (per-loop
diagnostics).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ser.significance import N_BOOT, Interval

UNITS = ("tokens", "chars")
DIRECTIONS = ("longer", "shorter")
RIGHT, WRONG, EQUAL = 1, -1, 0

#: the models of a run's table: key -> label (as in ser.report.paired.COMPARED)
MODELS = {"seed": "seed RM", "ser": "SER final", "full": "full data"}
#: paired comparisons printed under a run's table: (B, A)
PAIRS = (("ser", "seed"), ("full", "seed"), ("ser", "full"))


# -- the figures ------------------------------------------------------------------------------------
def _lengths(chosen_len: Sequence[int], rejected_len: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    lc, lr = np.asarray(chosen_len), np.asarray(rejected_len)
    if lc.shape != lr.shape or lc.ndim != 1:
        raise ValueError(f"one chosen and one rejected length per pair: shapes {lc.shape} and {lr.shape}")
    return lc, lr


def label_direction(chosen_len: Sequence[int], rejected_len: Sequence[int]) -> dict:
    """How often the chosen answer of labelled pairs is the longer one: ``{"longer", "shorter",
    "equal"}`` (pair counts), ``share_longer`` (of the pairs of unequal lengths; None when none) and
    ``direction``: "longer" when that share is >= 1/2 (also when undefined), else "shorter"."""
    lc, lr = _lengths(chosen_len, rejected_len)
    longer, shorter = int(np.sum(lc > lr)), int(np.sum(lc < lr))
    share = longer / (longer + shorter) if longer + shorter else None
    return {"longer": longer, "shorter": shorter, "equal": int(np.sum(lc == lr)), "share_longer": share,
            "direction": "longer" if share is None or share >= 0.5 else "shorter"}


def strata(chosen_len: Sequence[int], rejected_len: Sequence[int], direction: str) -> np.ndarray:
    """Per pair: ``RIGHT`` (1) when length points to the chosen answer in ``direction``, ``WRONG``
    (-1) when it points to the rejected one, ``EQUAL`` (0) for equal lengths."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}: {direction!r}")
    lc, lr = _lengths(chosen_len, rejected_len)
    s = np.sign(lc.astype(np.int64) - lr.astype(np.int64)).astype(np.int8)  # 1: chosen longer
    return s if direction == "longer" else -s


def length_baseline(chosen_len: Sequence[int], rejected_len: Sequence[int], direction: str) -> float | None:
    """Accuracy of "prefer the ``direction`` answer": right-way pairs right, wrong-way pairs wrong,
    equal-length pairs half right; None without pairs."""
    s = strata(chosen_len, rejected_len, direction)
    return float(np.mean(_baseline_values(s))) if len(s) else None


def _baseline_values(s: np.ndarray) -> np.ndarray:
    return np.where(s == RIGHT, 1.0, np.where(s == WRONG, 0.0, 0.5))


def _outcomes(correct: Sequence[bool], n: int) -> np.ndarray:
    ok = np.asarray(correct, dtype=bool)
    if ok.shape != (n,):
        raise ValueError(f"one outcome per pair: {ok.shape[0] if ok.ndim else 0} outcomes for {n} pairs")
    return ok


def stratum_accuracy(correct: Sequence[bool], chosen_len: Sequence[int], rejected_len: Sequence[int],
                     direction: str) -> dict:
    """``{"right_way", "wrong_way"}``: the model's accuracy on each stratum (None when empty), with
    ``n_right_way``, ``n_wrong_way`` and ``n_equal`` (pair counts)."""
    s = strata(chosen_len, rejected_len, direction)
    ok = _outcomes(correct, len(s))
    acc = lambda m: float(ok[m].mean()) if m.any() else None  # noqa: E731
    return {"right_way": acc(s == RIGHT), "wrong_way": acc(s == WRONG), "n_right_way": int(np.sum(s == RIGHT)),
            "n_wrong_way": int(np.sum(s == WRONG)), "n_equal": int(np.sum(s == EQUAL))}


def balanced_accuracy(correct: Sequence[bool], chosen_len: Sequence[int], rejected_len: Sequence[int]) -> float | None:
    """Mean of the accuracies on the chosen-longer and the chosen-shorter pairs (equal lengths left
    out); None when either is empty. The same whichever the direction."""
    st = stratum_accuracy(correct, chosen_len, rejected_len, "longer")
    if st["right_way"] is None or st["wrong_way"] is None:
        return None
    return (st["right_way"] + st["wrong_way"]) / 2


def prefers_longer(correct: Sequence[bool], chosen_len: Sequence[int], rejected_len: Sequence[int]) -> float | None:
    """Share of the pairs of unequal lengths where the longer answer won: chosen longer and right,
    or chosen shorter and wrong; None when every pair has equal lengths."""
    lc, lr = _lengths(chosen_len, rejected_len)
    ok = _outcomes(correct, len(lc))
    unequal = lc != lr
    return float(np.where(lc > lr, ok, ~ok)[unequal].mean()) if unequal.any() else None


def balanced_pair_values(correct: Sequence[float], chosen_len: Sequence[int], rejected_len: Sequence[int]) -> np.ndarray:
    """Per pair, ``correct`` weighed so that the mean over all pairs is the balanced accuracy: a pair
    of a stratum of n_s pairs (of n) weighs n / (2 n_s), an equal-length pair 0. ``correct`` may be
    a difference of two models' outcomes (then the mean is the difference of balanced accuracies)."""
    s = strata(chosen_len, rejected_len, "longer")
    x = np.asarray(correct, dtype=float)
    if x.shape != s.shape:
        raise ValueError(f"one value per pair: {x.shape} for {s.shape}")
    n_r, n_w = int(np.sum(s == RIGHT)), int(np.sum(s == WRONG))
    if not n_r or not n_w:
        raise ValueError("the balanced accuracy needs pairs whose chosen answer is the longer and pairs whose "
                         "chosen answer is the shorter")
    w = np.where(s == RIGHT, len(s) / (2 * n_r), np.where(s == WRONG, len(s) / (2 * n_w), 0.0))
    return x * w


def length_summary(correct: Sequence[bool], chosen_len: Sequence[int], rejected_len: Sequence[int],
                   direction: str | None) -> dict:
    """Every figure of one model on one set: ``n``, ``accuracy``, ``balanced``, ``prefers_longer``
    and, with a ``direction``, ``baseline``, ``right_way``, ``wrong_way`` and the strata sizes
    (without one, those are None)."""
    lc, lr = _lengths(chosen_len, rejected_len)
    ok = _outcomes(correct, len(lc))
    st = stratum_accuracy(ok, lc, lr, direction or "longer")
    out = {"n": len(ok), "accuracy": float(ok.mean()) if len(ok) else None, "direction": direction,
           "balanced": balanced_accuracy(ok, lc, lr), "prefers_longer": prefers_longer(ok, lc, lr),
           "baseline": length_baseline(lc, lr, direction) if direction else None, **st}
    if direction is None:
        out.update(right_way=None, wrong_way=None, n_right_way=None, n_wrong_way=None)
    return out


# -- uncertainty ------------------------------------------------------------------------------------
def _resampled_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` means of ``x`` over resamples of its items (one multinomial draw over its distinct
    values: exact, and fast for any number of pairs)."""
    values, counts = np.unique(x, return_counts=True)
    draws = rng.multinomial(len(x), counts / counts.sum(), size=n_boot)
    return draws @ values / len(x)


def _interval(estimate: float, draws: np.ndarray, n: int, level: float) -> Interval:
    a = (1 - level) / 2
    lo, hi = np.quantile(draws, [a, 1 - a])
    return Interval(float(estimate), float(lo), float(hi), n=n, level=level)


def _stratified(values: np.ndarray, s: np.ndarray, n_boot: int, level: float, seed: int) -> dict:
    """``{"balanced", "right_way", "wrong_way"}``: Intervals of the mean of ``values`` over each
    stratum and of the mean of those two, pairs resampled within each stratum (None when empty)."""
    rng = np.random.default_rng(seed)
    out: dict = {}
    draws = {}
    for name, k in (("right_way", RIGHT), ("wrong_way", WRONG)):
        x = values[s == k]
        if len(x):
            draws[name] = _resampled_means(x, n_boot, rng)
            out[name] = _interval(x.mean(), draws[name], len(x), level)
        else:
            out[name] = None
    if out["right_way"] is None or out["wrong_way"] is None:
        out["balanced"] = None
    else:
        est = (out["right_way"].estimate + out["wrong_way"].estimate) / 2
        n = out["right_way"].n + out["wrong_way"].n
        out["balanced"] = _interval(est, (draws["right_way"] + draws["wrong_way"]) / 2, n, level)
    return out


def length_cis(correct: Sequence[bool], chosen_len: Sequence[int], rejected_len: Sequence[int], direction: str,
               n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> dict:
    """One model: ``{"balanced", "right_way", "wrong_way"}`` accuracies as Intervals (None when
    undefined), pairs resampled within their stratum."""
    s = strata(chosen_len, rejected_len, direction)
    return _stratified(_outcomes(correct, len(s)).astype(float), s, n_boot, level, seed)


def paired_length_cis(a_correct: Sequence[bool], b_correct: Sequence[bool], chosen_len: Sequence[int],
                      rejected_len: Sequence[int], direction: str, n_boot: int = N_BOOT, level: float = 0.95,
                      seed: int = 0) -> dict:
    """Model B - model A on the same pairs: ``{"balanced", "right_way", "wrong_way"}`` differences
    as Intervals (None when undefined); each resampled pair keeps both models' outcomes (paired),
    pairs resampled within their stratum."""
    s = strata(chosen_len, rejected_len, direction)
    d = _outcomes(b_correct, len(s)).astype(float) - _outcomes(a_correct, len(s)).astype(float)
    return _stratified(d, s, n_boot, level, seed)


def baseline_cis(correct: Sequence[bool], chosen_len: Sequence[int], rejected_len: Sequence[int], direction: str,
                 n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> dict:
    """``{"baseline": the length-only accuracy, "model_minus_baseline": the model's accuracy minus
    it on the same pairs}`` as Intervals, every pair resampled (paired); None without pairs."""
    s = strata(chosen_len, rejected_len, direction)
    ok = _outcomes(correct, len(s)).astype(float)
    if not len(s):
        return {"baseline": None, "model_minus_baseline": None}
    rng = np.random.default_rng(seed)
    base = _baseline_values(s)
    return {"baseline": _interval(base.mean(), _resampled_means(base, n_boot, rng), len(s), level),
            "model_minus_baseline": _interval((ok - base).mean(), _resampled_means(ok - base, n_boot, rng), len(s),
                                              level)}


# -- selection --------------------------------------------------------------------------------------
def balance_by_length(first_is_chosen: Sequence[bool], margin: Sequence[float], len_a1: Sequence[int],
                      len_a2: Sequence[int]) -> np.ndarray:
    """Which of a strategy's selected pairs to keep so that the RM's chosen answer is the longer one
    as often as the shorter one: with n_L pairs oriented chosen-longer and n_S chosen-shorter, the
    min(n_L, n_S) largest ``margin`` (the RM's confidence) of each side; pairs of equal lengths all
    stay (they carry no length signal). Ties in margin keep the earlier pair. A bool mask over the
    selected pairs (their order kept)."""
    first = np.asarray(first_is_chosen, dtype=bool)
    m = np.asarray(margin, dtype=float)
    l1, l2 = np.asarray(len_a1), np.asarray(len_a2)
    if not (len(first) == len(m) == len(l1) == len(l2)):
        raise ValueError("one orientation, margin and pair of lengths per selected pair")
    lc, lr = np.where(first, l1, l2), np.where(first, l2, l1)
    longer, shorter = np.flatnonzero(lc > lr), np.flatnonzero(lc < lr)
    k = min(len(longer), len(shorter))
    keep = lc == lr
    for side in (longer, shorter):
        order = side[np.argsort(-m[side], kind="stable")]
        keep[order[:k]] = True
    return keep


# -- per-loop diagnostics ---------------------------------------------------------------------------
def loop_test_fields(chosen: np.ndarray, rejected: np.ndarray, chosen_len: Sequence[int], rejected_len: Sequence[int],
                     direction: str | None) -> dict:
    """A loop's test figures in one unit: ``test_length_balanced``, ``test_wrong_way`` (the
    accuracy on the pairs where length points to the rejected answer) and ``test_prefers_longer``."""
    ok = np.asarray(chosen) > np.asarray(rejected)
    s = length_summary(ok, chosen_len, rejected_len, direction)
    return {"test_length_balanced": s["balanced"], "test_wrong_way": s["wrong_way"],
            "test_prefers_longer": s["prefers_longer"]}


def pool_fields(s1: np.ndarray, s2: np.ndarray, len_a1: np.ndarray, len_a2: np.ndarray, kept: np.ndarray,
                first_is_chosen: np.ndarray, hidden_a1_better: np.ndarray) -> dict:
    """Self-labelling and length, on the scored pool (``s1``/``s2``: scores of its answers; ``kept``:
    positions of the selected pairs, oriented by ``first_is_chosen``): ``pool_prefers_longer`` (share
    of pairs of unequal lengths whose longer answer scores higher), ``kept_prefers_longer`` (share of
    the kept pairs of unequal lengths whose chosen-by-RM answer is the longer) and
    ``pool_labels_longer`` (share of pairs of unequal lengths whose hidden-label better answer is the
    longer: what an unbiased RM would show)."""
    l1, l2 = np.asarray(len_a1), np.asarray(len_a2)
    a1_longer = l1 > l2
    unequal = l1 != l2
    share = lambda x, m: float(np.mean(x[m])) if m.any() else None  # noqa: E731
    a1_higher = np.asarray(s1) > np.asarray(s2)
    longer_higher = np.where(a1_longer, a1_higher, np.asarray(s2) > np.asarray(s1))
    kept = np.asarray(kept, dtype=np.int64)
    first = np.asarray(first_is_chosen, dtype=bool)
    return {"pool_prefers_longer": share(longer_higher, unequal),
            "kept_prefers_longer": share(first == a1_longer[kept], unequal[kept]),
            "pool_labels_longer": share(np.asarray(hidden_a1_better, dtype=bool) == a1_longer, unequal)}


# -- a run ------------------------------------------------------------------------------------------
def _picks(results: dict) -> tuple[str, dict[str, tuple[str, int]]] | None:
    """The main phase's name and ``{model: (phase, loop)}`` for the seed RM, SER final and full."""
    phases = results.get("phases") or {}
    name = next((p for p in ("ser", "seed") if (phases.get(p) or {}).get("loops")), None)
    if name is None:
        return None
    loops = phases[name]["loops"]
    picks = {"seed": (name, loops[0]["loop"])}
    if name == "ser":
        picks["ser"] = (name, phases[name].get("selected_loop", loops[-1]["loop"]))
    full = phases.get("full")
    if full and full.get("loops"):
        picks["full"] = ("full", full.get("selected_loop", full["loops"][-1]["loop"]))
    return name, picks


def _load(run_dir: Path, phase: str, loop: int) -> dict[str, np.ndarray] | None:
    f = Path(run_dir) / phase / f"eval_scores_loop{loop}.npz"
    if not f.exists():
        return None
    with np.load(f) as z:
        return {k: z[k] for k in z.files}


def run_length_statistics(run_dir, results: dict, sets: Sequence[str] = ("test",), units: Sequence[str] = UNITS,
                          n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """``{set: {unit: {"direction": the training labels' (label_direction dict, or None),
    "models": {model: length_summary + "balanced_ci"}, "paired": {"B-A": {"balanced", "wrong_way"}
    Interval dicts}}}}`` from a run's saved scores and lengths; ``{}`` for runs that saved none.
    A model whose pairs (keys) differ from the seed RM's is left out."""
    got = _picks(results)
    if got is None:
        return {}
    main, picks = got
    loaded = {m: _load(run_dir, ph, loop) for m, (ph, loop) in picks.items()}
    if loaded.get("seed") is None:
        return {}
    directions = ((results.get("phases") or {}).get(main) or {}).get("length_direction") or {}
    out: dict = {}
    for s in sets:
        seed_z = loaded["seed"]
        if f"{s}_chosen_tokens" not in seed_z:
            continue
        outcomes = {}
        for m, z in loaded.items():
            if z is None or f"{s}_chosen" not in z:
                continue
            if f"{s}_key" in z and f"{s}_key" in seed_z and not np.array_equal(z[f"{s}_key"], seed_z[f"{s}_key"]):
                continue
            outcomes[m] = z[f"{s}_chosen"] > z[f"{s}_rejected"]
        for unit in units:
            lc, lr = seed_z[f"{s}_chosen_{unit}"], seed_z[f"{s}_rejected_{unit}"]
            d = directions.get(unit)
            direction = d["direction"] if d else None
            models = {}
            for m, ok in outcomes.items():
                models[m] = length_summary(ok, lc, lr, direction)
                ci = length_cis(ok, lc, lr, direction or "longer", n_boot=n_boot, seed=seed)["balanced"]
                models[m]["balanced_ci"] = ci.to_dict() if ci else None
            paired = {}
            for b, a in PAIRS:
                if a in outcomes and b in outcomes:
                    cis = paired_length_cis(outcomes[a], outcomes[b], lc, lr, direction or "longer", n_boot=n_boot,
                                            seed=seed)
                    paired[f"{b}-{a}"] = {"balanced": cis["balanced"] and cis["balanced"].to_dict(),
                                          "wrong_way": cis["wrong_way"] and cis["wrong_way"].to_dict()
                                          if direction else None}
            out.setdefault(s, {})[unit] = {"direction": d, "models": models, "paired": paired}
    return out


# -- lines ------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(d: dict | None, points: bool = True) -> str:
    if not d:
        return "undefined"
    if points:
        return Interval(**d).fmt() + " pts"
    return f"{100 * d['estimate']:.1f}% [{100 * d['low']:.1f}, {100 * d['high']:.1f}]"


UNIT_WORDS = {"tokens": "tokens", "chars": "characters"}


def length_lines(length: dict) -> list[str]:
    """The lines under a run's table, per set and unit: the training labels' direction, the
    length-only baseline, each model's length-balanced and wrong-way accuracy, and the paired
    differences on them."""
    lines = []
    for s, units in length.items():
        for unit, r in units.items():
            d, models = r["direction"], r["models"]
            any_model = next(iter(models.values()), None)
            if any_model is None:
                continue
            if d:
                head = (f"length control on {s} ({UNIT_WORDS[unit]}): the training labels' chosen answer is the longer "
                        f"in {_pct(d['share_longer'])} of {d['longer'] + d['shorter']} labelled pairs of unequal length, so "
                        f"the length-only rule is \"prefer the {d['direction']}\": {_pct(any_model['baseline'])} on "
                        f"these {any_model['n']} pairs ({any_model['n_right_way']} where length points to the chosen "
                        f"answer, {any_model['n_wrong_way']} to the rejected, {any_model['n_equal']} of equal length "
                        f"counted half right)")
            else:
                head = (f"length control on {s} ({UNIT_WORDS[unit]}): no training-label direction recorded (an older "
                        f"run): length-only baseline and wrong-way accuracy not shown")
            lines.append(head)
            for m, v in models.items():
                wrong = f", wrong-way {_pct(v['wrong_way'])}" if d else ""
                lines.append(f"  {MODELS[m]}: accuracy {_pct(v['accuracy'])}, length-balanced "
                             f"{_ci(v.get('balanced_ci'), points=False)}{wrong}, prefers the longer answer in "
                             f"{_pct(v['prefers_longer'])}")
            for key, p in r["paired"].items():
                b, a = key.split("-")
                wrong = f"; wrong-way {_ci(p['wrong_way'])}" if d else ""
                lines.append(f"  {MODELS[b]} - {MODELS[a]}: length-balanced {_ci(p['balanced'])}{wrong} "
                             f"(95% CI, pairs resampled within length strata)")
    return lines


def summary_figures(length: dict | None, unit: str = "tokens") -> dict:
    """Flat figures for a tracker's run summary, in %: per set, the baseline, each model's
    length-balanced and wrong-way accuracy, and each paired difference on the balanced accuracy
    with its CI bounds."""
    out = {}
    for s, units in (length or {}).items():
        r = units.get(unit)
        if not r:
            continue
        pct = lambda x: None if x is None else 100 * x  # noqa: E731
        for m, v in r["models"].items():
            out[f"{s}/{m}_length_balanced"] = pct(v["balanced"])
            out[f"{s}/{m}_wrong_way"] = pct(v["wrong_way"])
            out[f"{s}/{m}_prefers_longer"] = pct(v["prefers_longer"])
            out[f"{s}/length_baseline"] = pct(v["baseline"])
        for key, p in r["paired"].items():
            if p["balanced"]:
                name = key.replace("-", "_minus_")
                out[f"{s}/{name}_length_balanced"] = pct(p["balanced"]["estimate"])
                out[f"{s}/{name}_length_balanced_low"] = pct(p["balanced"]["low"])
                out[f"{s}/{name}_length_balanced_high"] = pct(p["balanced"]["high"])
    return {k: v for k, v in out.items() if v is not None}


# -- one model on one file (ser evaluate-rm) --------------------------------------------------------
def evaluation_report(correct: Sequence[bool], chosen_len: Sequence[int], rejected_len: Sequence[int],
                      training: dict | None = None, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> dict:
    """Every length-controlled figure of one model on one set of pairs, with CIs (``ci``: Interval
    dicts of ``balanced``, ``right_way``, ``wrong_way``, ``baseline``, ``model_minus_baseline``).

    ``training``: the training labels' :func:`label_direction` (an export's ``ser_reward.json``);
    without it the direction is these pairs' own majority (``direction_source`` says which): the
    baseline is then the better of the two length-only rules here, an upper bound for any of them."""
    here = label_direction(chosen_len, rejected_len)
    direction, source = (training["direction"], "training labels") if training else (here["direction"], "these pairs")
    out = {**length_summary(correct, chosen_len, rejected_len, direction), "direction_source": source,
           "share_longer_here": here["share_longer"]}
    cis = {**length_cis(correct, chosen_len, rejected_len, direction, n_boot, level, seed),
           **baseline_cis(correct, chosen_len, rejected_len, direction, n_boot, level, seed)}
    out["ci"] = {k: v.to_dict() if v is not None else None for k, v in cis.items()}
    return out


def evaluation_lines(report: dict, unit: str) -> list[str]:
    """Two lines of ``ser evaluate-rm`` for one unit."""
    r, ci = report, report["ci"]
    src = ("from the training labels" if r["direction_source"] == "training labels" else
           "from these pairs' own labels, no training direction recorded: an upper bound for a length-only rule")
    return [f"length control ({UNIT_WORDS[unit]}): length-only baseline \"prefer the {r['direction']}\" ({src}) "
            f"{_ci(ci['baseline'], points=False)}; model - baseline {_ci(ci['model_minus_baseline'])}",
            f"  length-balanced accuracy {_ci(ci['balanced'], points=False)} (chance 50%; mean of the two length "
            f"strata, pairs of equal length left out: {r['n_equal']}); wrong-way {_ci(ci['wrong_way'], points=False)} "
            f"of {r['n_wrong_way']} pairs, right-way {_pct(r['right_way'])} of {r['n_right_way']}; "
            f"prefers the longer answer in {_pct(r['prefers_longer'])}"]
