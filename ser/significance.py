"""Uncertainty of accuracy differences measured on the same pairs: pure functions over 0/1 outcomes.

One run (one seed):

- :func:`paired_bootstrap`: accuracy of B minus accuracy of A on the same test pairs, with a
  percentile CI from resampling the pairs (the two models stay paired on each pair).
- :func:`mcnemar_exact`: two-sided exact sign test on the discordant pairs (B right, A wrong vs A
  right, B wrong): McNemar's test without the normal approximation. With few discordant pairs the
  percentile CI is anti-conservative, so a one-run verdict needs both (:func:`verdict`).

Several runs (seeds), :func:`across_seeds`: the mean over seeds of each seed's B - A, with a
t-interval whose variance has two parts (:func:`seed_moments`):

- the spread of the per-seed differences, ``s^2 / k`` (k - 1 degrees of freedom). It holds the
  seed-to-seed spread *and* each seed's own test-pair noise, so it is right as it is when every
  seed scores its own test pairs;
- what the seeds have in common when they score the *same* pairs (pairs matched by a content key:
  UltraFeedback's ``test_files``, ``data.eval_sets``, hub test splits): the mean over pairs of runs
  of the covariance of their per-pair differences on their common pairs, times ``|common| / (n_i
  n_j)``. That noise does not average out over seeds and cannot be seen in their spread. Five
  copies of one run get that run's CI, not one sqrt(5) narrower.

The degrees of freedom are Welch-Satterthwaite's (the shared part counts as known), so with 3-5
seeds the interval uses t with about k - 1 df, not a percentile bootstrap over seeds (gains 1, 3, 5:
bootstrap [+1.0, +4.9], t-interval [-2.0, +8.0]). The p-value is the same t-test's, so a Holm
adjustment and the interval agree. ``experiments/coverage.py`` checks the coverage by simulation
(known +3.0 gain, seed-level random effect; 3 and 5 seeds; shared and per-seed test pairs): 94-96%.
There the method before (:func:`seed_bootstrap`, a two-level bootstrap that treats the runs as
independent, kept for that comparison) covers 86-90% when the seeds share the pairs, and a two-level
bootstrap that knows the shared pairs (one weight per pair for every run that scored it, seeds drawn
on top) counts each run's own pair noise again on top of the seeds' spread, which already holds it:
96-98% as a percentile interval, 100% with its standard error and t(k - 1).

- :func:`fieller`: the CI of a ratio, here the gap closed (SER - seed) / (full - seed), from the
  (co)variances of numerator and denominator; None when the denominator is not above 0 at the level
  (the set is then unbounded: "undefined").
- :func:`holm`: Holm's step-down adjustment of a family of p-values.
- :func:`power_pairs`: test pairs per seed needed to detect a gain, from measured variance parts.
- :func:`verdict`: one plain line from a CI and its test's p-value.
- :func:`t_quantile`, :func:`t_pvalue`, :func:`t_cdf`, :func:`chi2_quantile`: Student's t and the
  chi-square quantile (``scipy.stats``).

Resampling pairs only needs how many pairs fall in each outcome pattern, so every resample is one
multinomial draw over at most 8 patterns: exact, and fast for any number of pairs. ``N_BOOT`` is the
one resample count of the package (``ser report --n-boot``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

#: resamples of every bootstrap in the package (``ser report --n-boot``, ``ser evaluate-rm --n-boot``)
N_BOOT = 10_000


@dataclass(frozen=True)
class Interval:
    """A difference (fraction of pairs) with its ``level`` CI; ``n`` = pairs (one run) or seeds.

    ``p``: the two-sided p-value of the test that goes with the interval (McNemar's exact test for
    one run, the t-test for seeds); ``df``: the t-interval's degrees of freedom (inf: normal)."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = 0.95
    p: float | None = None
    df: float | None = None

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        d = {"estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n, "level": self.level}
        if self.p is not None:
            d["p"] = self.p
        if self.df is not None:
            d["df"] = self.df
        return d

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        """``+3.4 [+0.9, +5.8]`` (percentage points by default)."""
        f = lambda x: f"{scale * x:+.{digits}f}"  # noqa: E731
        return f"{f(self.estimate)} [{f(self.low)}, {f(self.high)}]"


# -- Student's t and chi-square (scipy.stats) ---------------------------------------------------------
def t_pvalue(t: float, df: float) -> float:
    """Two-sided p-value of ``t`` under Student's t with ``df`` degrees of freedom (inf: normal)."""
    if math.isnan(t):
        return 1.0
    return float(min(1.0, 2 * stats.t.sf(abs(t), df)))


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom."""
    return float(stats.t.cdf(x, df))


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom."""
    if not 0 < q < 1:
        raise ValueError(f"quantile level must be in (0, 1): {q}")
    return float(stats.t.ppf(q, df))


def chi2_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of the chi-square distribution with ``df`` degrees of freedom."""
    return float(stats.chi2.ppf(q, df))


# -- one run ----------------------------------------------------------------------------------------
def _outcomes(*correct: Sequence[bool]) -> np.ndarray:
    arrays = [np.asarray(c, dtype=bool) for c in correct]
    n = {len(a) for a in arrays}
    if len(n) != 1:
        raise ValueError(f"paired outcomes need the same pairs: lengths {[len(a) for a in arrays]}")
    if not n.pop():
        raise ValueError("no pairs")
    return np.stack(arrays, axis=1).astype(np.int8)


def _pattern_draws(x: np.ndarray, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Means of the columns of ``x`` (pairs x models, 0/1) over ``size`` resamples of its rows."""
    patterns, counts = np.unique(x, axis=0, return_counts=True)
    draws = rng.multinomial(len(x), counts / counts.sum(), size=size)  # size + (n_patterns,)
    return draws @ patterns / len(x)  # size + (models,)


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(values, [a, 1 - a])
    return float(lo), float(hi)


def paired_bootstrap(a_correct: Sequence[bool], b_correct: Sequence[bool], n_boot: int = N_BOOT,
                     level: float = 0.95, seed: int = 0) -> Interval:
    """acc(B) - acc(A) on the same pairs, CI from ``n_boot`` resamples of the pairs; ``p`` is
    McNemar's exact p (:func:`mcnemar_exact`)."""
    x = _outcomes(a_correct, b_correct)
    means = _pattern_draws(x, (n_boot,), np.random.default_rng(seed))
    diff = means[:, 1] - means[:, 0]
    est = float(x[:, 1].mean() - x[:, 0].mean())
    p = mcnemar_exact(x[:, 0], x[:, 1])["p"]
    return Interval(est, *_percentile(diff, level), n=len(x), level=level, p=p)


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """Exact two-sided McNemar (sign) test: ``{"b_only", "a_only", "p"}``; p = 1 with no discordant pair."""
    x = _outcomes(a_correct, b_correct)
    b_only = int(np.sum((x[:, 1] == 1) & (x[:, 0] == 0)))
    a_only = int(np.sum((x[:, 0] == 1) & (x[:, 1] == 0)))
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return {"b_only": b_only, "a_only": a_only, "p": 1.0}
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return {"b_only": b_only, "a_only": a_only, "p": min(1.0, 2 * tail)}


# -- several runs -----------------------------------------------------------------------------------
def pair_ids(keys: Sequence[Sequence[int] | None]) -> list[np.ndarray | None]:
    """One integer id per pair of each run; pairs with the same content key get the same id across
    runs (the r-th repeat of a key in one run matches the r-th repeat in another). A run without
    keys gets None: its pairs count as its own."""
    rows, owner = [], []
    for i, k in enumerate(keys):
        if k is None:
            continue
        k = np.asarray(k, dtype=np.uint64)
        order = np.argsort(k, kind="stable")
        ks = k[order]
        start = np.r_[0, np.flatnonzero(ks[1:] != ks[:-1]) + 1]  # first index of each run of equal keys
        rank = np.empty(len(k), dtype=np.int64)
        rank[order] = np.arange(len(k)) - np.repeat(start, np.diff(np.r_[start, len(k)]))
        rows.append(np.stack([k.view(np.int64), rank], axis=1))
        owner.append(i)
    out: list[np.ndarray | None] = [None] * len(keys)
    if rows:
        _, inv = np.unique(np.concatenate(rows), axis=0, return_inverse=True)
        cuts = np.cumsum([len(r) for r in rows])[:-1]
        for i, ids in zip(owner, np.split(inv.reshape(-1), cuts)):
            out[i] = ids
    return out


def _psd(m: np.ndarray) -> np.ndarray:
    """The positive semi-definite part of a symmetric matrix (negative eigenvalues set to 0)."""
    m = (m + m.T) / 2
    w, v = np.linalg.eigh(m)
    return (v * np.clip(w, 0, None)) @ v.T


@dataclass(frozen=True)
class SeedMoments:
    """Mean over runs of each run's per-pair mean, and its variance in two parts (see the module doc).

    ``estimate``: (m,); ``cov`` = ``seed_cov`` + ``pair_cov``: (m, m) variance of ``estimate``;
    ``seed_cov`` is measured from the spread of the k runs (k - 1 df), ``pair_cov`` from the pairs the
    runs share; ``df``: (m,) Welch-Satterthwaite degrees of freedom; ``shared``: pairs scored by more
    than one run; ``within``: (m, m) mean over runs of the per-pair covariance (one pair's variance);
    ``shared_var``: the part of it that runs scoring the same pair share (the mean over pairs of
    runs of the covariance on their common pairs; 0 when none share); ``noise``: (m, m) mean over
    runs of the pair noise of one run's mean (its per-pair covariance / its pairs); ``run_means``:
    (k, m).
    """

    estimate: np.ndarray
    cov: np.ndarray
    seed_cov: np.ndarray
    pair_cov: np.ndarray
    df: np.ndarray
    k: int
    shared: int
    within: np.ndarray
    run_means: np.ndarray
    shared_var: np.ndarray
    noise: np.ndarray

    def se(self, j: int = 0) -> float:
        return math.sqrt(max(float(self.cov[j, j]), 0.0))

    def seed_var(self, j: int = 0) -> float | None:
        """Seed-to-seed variance of the true value: s^2 less the pair noise the runs do not share
        (clipped at 0); None for one run."""
        if self.k < 2:
            return None
        return max(0.0, float(self.k * self.seed_cov[j, j] - (self.noise[j, j] - self.pair_cov[j, j])))


def seed_moments(values: Sequence[np.ndarray], keys: Sequence[Sequence[int] | None] | None = None) -> SeedMoments:
    """:class:`SeedMoments` of runs' per-pair values (run i: an array of n_i pairs, or n_i x m).

    ``keys``: per run, a content key per pair (None: the run's pairs are its own). With k runs:

    - ``seed_cov`` = s^2 / k, where s^2 is the sample covariance of the k run means (it holds the
      seeds' spread and each run's pair noise that it does not share). When a few runs happen to
      agree the interval is narrow, and the t quantile with k - 1 df pays for that on average; only
      the variances are raised to the 2.5% quantile of what the unshared pair noise alone gives (a
      floor at the noise itself was tried: it over-covers, 99-100% with per-seed pairs);
    - ``pair_cov`` = mean over ordered pairs of runs (i != j) of |common| / (n_i n_j) times the sample
      covariance of their values on their common pairs (eigenvalues clipped at 0);
    - one run: ``pair_cov`` = its pair noise (covariance of its values / n), ``seed_cov`` = 0, df = inf.
    """
    xs = [np.asarray(v, dtype=float) for v in values]
    xs = [x[:, None] if x.ndim == 1 else x for x in xs]
    k = len(xs)
    if k == 0 or any(len(x) == 0 for x in xs) or len({x.shape[1] for x in xs}) != 1:
        raise ValueError("one non-empty array per run, the same quantities in each")
    m = xs[0].shape[1]
    means = np.stack([x.mean(axis=0) for x in xs])  # k x m
    est = means.mean(axis=0)

    def cov(x, y):
        return (x - x.mean(0)).T @ (y - y.mean(0)) / (len(x) - 1) if len(x) > 1 else np.zeros((m, m))

    within = np.mean([cov(x, x) for x in xs], axis=0)
    noise = np.mean([cov(x, x) / len(x) for x in xs], axis=0)  # pair noise of one run's mean
    if k == 1:
        zero = np.zeros((m, m))
        return SeedMoments(est, noise, zero, noise, np.full(m, math.inf), 1, 0, within, means, zero, noise)
    ids = pair_ids(keys if keys is not None else [None] * k)
    cross, per_pair, n_cross, shared = np.zeros((m, m)), np.zeros((m, m)), 0, set()
    for i in range(k):
        for j in range(i + 1, k):  # each unordered pair of runs once; (j, i) is the transpose
            if ids[i] is None or ids[j] is None:
                continue
            common, ia, ja = np.intersect1d(ids[i], ids[j], assume_unique=True, return_indices=True)
            shared.update(common.tolist())
            if len(common) > 1:
                c = cov(xs[i][ia], xs[j][ja])
                cross += len(common) * (c + c.T) / (len(xs[i]) * len(xs[j]))
                per_pair, n_cross = per_pair + c + c.T, n_cross + 2
    pair_cov = _psd(cross / (k * (k - 1)))
    seed_cov = np.atleast_2d(np.cov(means.T, ddof=1)) / k
    # pair noise the runs do not share: what s^2 / k estimates with no seed effect
    own = np.clip(np.diag(noise - pair_cov) / k, 0, None)
    # s^2 is taken as at least the 2.5% quantile of what that noise alone gives (chi-square, k - 1
    # df): runs that agree exactly (two seeds with the same gain) get no zero-width interval
    low = own * chi2_quantile(0.025, k - 1) / (k - 1)
    raise_by = np.clip(low - np.diag(seed_cov), 0, None)
    seed_cov = seed_cov + np.diag(raise_by)
    total = seed_cov + pair_cov
    # the df count the seed part at no less than that noise: runs that agree by chance would
    # otherwise get a large df as well as a small s^2
    vs = np.maximum(np.diag(seed_cov), own)
    vt = vs + np.diag(pair_cov)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(vs > 0, vt ** 2 / (vs ** 2 / (k - 1)), math.inf)
    shared_var = _psd(per_pair / n_cross) if n_cross else np.zeros((m, m))
    return SeedMoments(est, total, seed_cov, pair_cov, df, k, len(shared), within, means, shared_var, noise)


def t_interval(estimate: float, se: float, df: float, n: int, level: float = 0.95) -> Interval:
    """``estimate ± t_{df} se`` with the two-sided t-test p of ``estimate = 0``."""
    if se <= 0:
        return Interval(estimate, estimate, estimate, n=n, level=level, p=1.0 if estimate == 0 else 0.0, df=df)
    q = t_quantile(1 - (1 - level) / 2, df)
    return Interval(estimate, estimate - q * se, estimate + q * se, n=n, level=level,
                    p=t_pvalue(estimate / se, df), df=df)


def fieller(num: float, den: float, var_num: float, var_den: float, cov: float, q: float) -> tuple[float, float] | None:
    """Fieller's CI for ``num / den``: the ratios r with (num - r den)^2 <= q^2 Var(num - r den).

    Bounded only when ``den`` is above 0 at this ``q`` (den > q sd(den)); otherwise None (the set is
    the whole line or two half-lines: the ratio is undefined at this level)."""
    a = den ** 2 - q ** 2 * var_den
    if den <= 0 or a <= 0:
        return None
    b = num * den - q ** 2 * cov
    c = num ** 2 - q ** 2 * var_num
    root = math.sqrt(max(b * b - a * c, 0.0))
    return (b - root) / a, (b + root) / a


@dataclass(frozen=True)
class SeedSummary:
    """Across seeds: B - A, F - A and the gap closed (B - A) / (F - A), each with its CI.

    ``gap_closed`` is None when there is no full model or when F - A is not above 0 at the level
    (``gap_note`` says which); ``shared``: pairs scored by more than one run; ``keyless``: runs that
    saved no pair keys (their pairs were taken to be their own)."""

    gain: Interval
    full_gain: Interval | None
    gap_closed: Interval | None
    gap_note: str = ""
    shared: int = 0
    keyless: int = 0

    def to_dict(self) -> dict:
        return {"gain": self.gain.to_dict(), "full_gain": self.full_gain and self.full_gain.to_dict(),
                "gap_closed": self.gap_closed and self.gap_closed.to_dict(), "gap_note": self.gap_note,
                "shared": self.shared, "keyless": self.keyless}


def across_seeds(seed_correct: Sequence[Sequence[bool]], ser_correct: Sequence[Sequence[bool]],
                 full_correct: Sequence[Sequence[bool]] | None = None,
                 keys: Sequence[Sequence[int] | None] | None = None, n_boot: int = N_BOOT,
                 level: float = 0.95, seed: int = 0) -> SeedSummary:
    """Mean over seeds of acc(SER) - acc(seed) (and of full - seed, and the gap closed) with CIs.

    Item ``i`` of each list holds run ``i``'s outcomes on its test pairs (runs may differ in pairs
    and count); ``keys[i]`` the content key of each of its pairs (None: unknown; its pairs count as
    its own). Several runs: t-interval of :func:`seed_moments` with its t-test p. One run: the
    paired bootstrap CI with McNemar's exact p (:func:`paired_bootstrap`). The gap closed: Fieller's
    interval (:func:`fieller`) from the same variances, with the smaller df of the two.
    """
    k = len(seed_correct)
    if k == 0 or len(ser_correct) != k or (full_correct is not None and len(full_correct) != k):
        raise ValueError("one list of outcomes per run, the same runs in each")
    if keys is not None and len(keys) != k:
        raise ValueError("one list of pair keys (or None) per run")
    runs = [_outcomes(*(c[i] for c in (seed_correct, ser_correct, full_correct) if c is not None)) for i in range(k)]
    diffs = [x[:, 1:].astype(float) - x[:, :1] for x in runs]  # pairs x (gain, full gain)
    keys = list(keys) if keys is not None else [None] * k
    for i, kk in enumerate(keys):
        if kk is not None and len(kk) != len(runs[i]):
            raise ValueError(f"run {i}: {len(kk)} pair keys for {len(runs[i])} pairs")
    mom = seed_moments(diffs, keys)
    keyless = sum(kk is None for kk in keys) if k > 1 else 0

    def interval(j: int) -> Interval:
        if k == 1:
            return paired_bootstrap(runs[0][:, 0], runs[0][:, j + 1], n_boot=n_boot, level=level, seed=seed)
        return t_interval(float(mom.estimate[j]), mom.se(j), float(mom.df[j]), n=k, level=level)

    gain = interval(0)
    if full_correct is None:
        return SeedSummary(gain, None, None, shared=mom.shared, keyless=keyless)
    full_gain = interval(1)
    df = float(min(mom.df))
    q = t_quantile(1 - (1 - level) / 2, df)
    g, f = float(mom.estimate[0]), float(mom.estimate[1])
    bounds = fieller(g, f, float(mom.cov[0, 0]), float(mom.cov[1, 1]), float(mom.cov[0, 1]), q)
    if bounds is None:
        note = f"undefined: full - seed is not above 0 at {level:.0%} ({full_gain.fmt()} points)"
        return SeedSummary(gain, full_gain, None, note, shared=mom.shared, keyless=keyless)
    gap = Interval(g / f, *bounds, n=k, level=level, df=df)
    return SeedSummary(gain, full_gain, gap, shared=mom.shared, keyless=keyless)


def seed_bootstrap(seed_correct: Sequence[Sequence[bool]], ser_correct: Sequence[Sequence[bool]],
                   n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> Interval:
    """The method before :func:`across_seeds`, kept for comparison (``experiments/coverage.py``):
    the mean over seeds of acc(SER) - acc(seed) with a percentile CI from a two-level bootstrap that
    treats the runs as independent (draw seeds with replacement, then each drawn seed's pairs).

    It under-covers with 3-5 seeds, and more when the seeds score the same pairs (that noise is
    counted as if it averaged out). One run gives the pairs-only CI of :func:`paired_bootstrap`.
    """
    k = len(seed_correct)
    if k == 0 or len(ser_correct) != k:
        raise ValueError("one list of outcomes per run, the same runs in each")
    runs = [_outcomes(seed_correct[i], ser_correct[i]) for i in range(k)]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, k, size=(n_boot, k)) if k > 1 else np.zeros((n_boot, 1), dtype=int)
    # each run's pair-resampled means for every (resample, draw) slot; a slot uses its drawn run's
    means = np.stack([_pattern_draws(x, (n_boot, k), rng) for x in runs])  # runs x B x k x models
    drawn = means[pick, np.arange(n_boot)[:, None], np.arange(k)[None, :]]  # B x k x models
    boot = drawn.mean(axis=1)  # B x models: the mean over the drawn seeds
    point = np.mean([x.mean(axis=0) for x in runs], axis=0)
    return Interval(float(point[1] - point[0]), *_percentile(boot[:, 1] - boot[:, 0], level), n=k, level=level)


# -- many comparisons, planning -----------------------------------------------------------------------
def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (same order; None stays None and does not count): the
    i-th smallest of m is multiplied by m - i + 1, then made non-decreasing, capped at 1."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def power(delta: float, pairs: int, seeds: int, pair_var: float, seed_var: float, shared_var: float = 0.0,
          level: float = 0.95) -> float:
    """Power of the two-sided t-test of :func:`across_seeds` to detect a mean gain ``delta``.

    The mean over ``seeds`` runs of ``pairs`` test pairs each has variance ``seed_var / seeds +
    shared_var / pairs + (pair_var - shared_var) / (seeds * pairs)``: ``pair_var`` is one pair's
    variance of the per-pair difference, ``shared_var`` the part of it that every seed shares (0 when
    each seed scores its own pairs), ``seed_var`` the seed-to-seed variance of the true gain. The t
    has the Satterthwaite df of the part seen in the seeds' spread (shifted central t approximation).
    """
    own = seed_var / seeds + (pair_var - shared_var) / (seeds * pairs)
    var = own + shared_var / pairs
    if var <= 0:
        return 1.0
    df = var ** 2 / (own ** 2 / (seeds - 1)) if own > 0 and seeds > 1 else math.inf
    q = t_quantile(1 - (1 - level) / 2, df)
    ncp = abs(delta) / math.sqrt(var)
    return (1 - t_cdf(q - ncp, df)) + t_cdf(-q - ncp, df)


def power_pairs(delta: float, seeds: int, pair_var: float, seed_var: float, shared_var: float = 0.0,
                target: float = 0.8, level: float = 0.95, max_pairs: int = 10_000_000) -> int | None:
    """The fewest test pairs per seed for :func:`power` >= ``target``; None when even ``max_pairs``
    pairs do not reach it (the seed spread alone is too large for that many seeds)."""
    ok = lambda n: power(delta, n, seeds, pair_var, seed_var, shared_var, level) >= target  # noqa: E731
    if not ok(max_pairs):
        return None
    lo, hi = 1, 1
    while not ok(hi):
        lo, hi = hi, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if not ok(mid) else (lo, mid)
    return hi


def verdict(gain: Interval, what: str = "SER", than: str = "the seed RM", test: str = "p",
            holm_p: float | None = None, family: str = "") -> str:
    """One plain line: whether ``what`` beats ``than`` at the CI's level.

    "beats" (or "is worse than") needs the CI to exclude 0 *and* the test's p (``gain.p``: McNemar's
    exact p for one run, the t-test's for seeds; ``test`` names it) to be below 1 - level; in a
    family of comparisons (``family``, e.g. "3 configurations") the Holm-adjusted ``holm_p`` decides
    instead. Without a p the CI alone decides."""
    pct, alpha = f"{gain.level:.0%}", 1 - gain.level
    p = gain.p if holm_p is None else holm_p
    ptxt = "" if gain.p is None else f", {test} = {gain.p:.2g}"
    if holm_p is not None:
        ptxt += f" (Holm-adjusted over {family}: {holm_p:.2g})" if family else f" (Holm-adjusted: {holm_p:.2g})"
    side = "beats" if gain.low > 0 else "is worse than" if gain.high < 0 else None
    if side and (p is None or p < alpha):
        return f"{what} {side} {than} at {pct}: {gain.fmt()} points{ptxt}."
    if side is None:
        return f"{what} does not beat {than} at {pct}: {gain.fmt()} points (the CI includes 0)."
    return f"{what} does not beat {than} at {pct}: {gain.fmt()} points{ptxt}: not below {alpha:.2g}."
