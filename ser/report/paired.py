"""Paired statistics of runs, from the per-pair scores each loop saves (``eval_scores_loopN.npz``).

- :func:`run_outcomes`: one run's 0/1 outcomes per evaluation set for the seed RM (loop 0), SER
  final (the selected loop), SER selected on validation (``best_val``, whatever the run's
  ``loop.select``: the loop with the best validation accuracy, ties to the earlier) and the
  full-data RM, with each pair's content key when the run saved keys (:func:`eval_keys`). All
  phases of a run score the same pairs in the same order, so they pair up.
- :func:`run_statistics`: per set, the paired bootstrap CI and exact McNemar p of SER - seed,
  best_val - seed and full - seed (:mod:`ser.significance`).
- :func:`group_statistics`: across the runs of a group (seeds), the mean gain, the full-data gain
  and the gap closed with their CIs (:func:`ser.significance.across_seeds`: seeds that scored the
  same pairs, matched by key, share that noise), with the verdict line.
- :func:`adjust_families`: Holm's adjustment of those verdicts across the configurations of a report.
- :func:`statistics_lines`: the lines printed under a run's table.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ser.significance import N_BOOT, Interval, across_seeds, holm, mcnemar_exact, paired_bootstrap, verdict

#: the models compared with the seed RM: key -> label
COMPARED = {"ser": "SER final", "ser_best_val": "SER (best val loop)", "full": "full data"}


def main_phase(results: dict) -> tuple[str, dict] | None:
    """``(name, phase)`` of the phase that holds the run's loops (``ser``, else ``seed``)."""
    phases = results.get("phases") or {}
    for name in ("ser", "seed"):
        if phases.get(name) and phases[name].get("loops"):
            return name, phases[name]
    return None


def eval_outcomes(run_dir: Path, phase: str, loop: int) -> dict[str, np.ndarray] | None:
    """``{eval set: bool per pair (chosen scored above rejected)}`` of one loop, from its
    ``eval_scores_loopN.npz``; None when the loop saved none."""
    f = Path(run_dir) / phase / f"eval_scores_loop{loop}.npz"
    if not f.exists():
        return None
    with np.load(f) as z:
        sets = sorted({k.rsplit("_", 1)[0] for k in z.files if k.endswith("_chosen")})
        return {s: z[f"{s}_chosen"] > z[f"{s}_rejected"] for s in sets}


def eval_keys(run_dir: Path, phase: str, loop: int) -> dict[str, np.ndarray]:
    """``{eval set: uint64 content key per pair (prompt + chosen + rejected), in the order of
    eval_outcomes}`` for the sets whose ``{set}_key`` array the loop saved (runs from before keys
    were saved give ``{}``)."""
    f = Path(run_dir) / phase / f"eval_scores_loop{loop}.npz"
    if not f.exists():
        return {}
    with np.load(f) as z:
        return {k[: -len("_key")]: z[k].astype(np.uint64) for k in z.files if k.endswith("_key")}


def best_val_loop(loops: Sequence[dict]) -> int | None:
    """The loop with the best validation accuracy (the first of equals); None without validation."""
    vals = [(d.get("val_acc"), d["loop"]) for d in loops if d.get("val_acc") is not None]
    if not vals:
        return None
    best = max(v for v, _ in vals)
    return next(k for v, k in vals if v == best)


def run_outcomes(run_dir, results: dict) -> dict[str, dict[str, np.ndarray]]:
    """``{set: {"seed", "ser", "ser_best_val", "full": bool per pair, "key": uint64 per pair}}`` for
    what the run saved (runs from before per-pair scores were saved give ``{}``; ``key`` only when
    the run saved pair keys; a model whose saved keys differ from the seed RM's is left out)."""
    main = main_phase(results)
    if main is None:
        return {}
    name, phase = main
    loops = phase["loops"]
    picks = {"seed": (name, loops[0]["loop"])}
    if name == "ser":  # a SER run that stopped at loop 0 ends with the seed RM: a gain of 0, which counts
        picks["ser"] = (name, phase.get("selected_loop", loops[-1]["loop"]))
        bv = best_val_loop(loops)
        if bv is not None:
            picks["ser_best_val"] = (name, bv)
    full = (results.get("phases") or {}).get("full")
    if full and full.get("loops"):
        picks["full"] = ("full", full.get("selected_loop", full["loops"][-1]["loop"]))
    out: dict[str, dict[str, np.ndarray]] = {}
    seed_keys: dict[str, np.ndarray] = {}
    for model, (ph, loop) in picks.items():
        scored = eval_outcomes(run_dir, ph, loop)
        if scored is None:
            if model == "seed":
                return {}
            continue
        keys = eval_keys(run_dir, ph, loop)
        if model == "seed":
            seed_keys = {s: k for s, k in keys.items() if s in scored and len(k) == len(scored[s])}
        for s, correct in scored.items():
            if model != "seed" and s in keys and s in seed_keys and not np.array_equal(keys[s], seed_keys[s]):
                continue  # not the same pairs as the seed RM's
            out.setdefault(s, {})[model] = correct
    for s, k in seed_keys.items():
        if s in out:
            out[s]["key"] = k
    return {s: v for s, v in out.items() if "seed" in v and s != "val"}


def run_statistics(outcomes: dict[str, dict[str, np.ndarray]], n_boot: int = N_BOOT) -> dict:
    """Per set and compared model: ``{"ci": Interval dict (with McNemar's p), "mcnemar": {...}}``."""
    stats: dict = {}
    for s, models in outcomes.items():
        for model in COMPARED:
            if model in models and len(models[model]) == len(models["seed"]):
                ci = paired_bootstrap(models["seed"], models[model], n_boot=n_boot)
                stats.setdefault(s, {})[model] = {"ci": ci.to_dict(), "mcnemar": mcnemar_exact(models["seed"], models[model])}
    return stats


def _verdict_line(summary: dict, model: str, runs: int, family: int = 1, p_holm: float | None = None) -> str:
    gain = Interval(**summary["gain"])
    test = "McNemar exact p" if runs == 1 else "p"
    return verdict(gain, COMPARED[model], "the seed RM", test=test, holm_p=p_holm if family > 1 else None,
                   family=f"{family} configurations")


def group_statistics(per_run: Sequence[dict[str, dict[str, np.ndarray]]], n_boot: int = N_BOOT) -> dict:
    """Across the runs of a group: ``{set: {model: SeedSummary dict + "verdict", "runs": k,
    "keyless": runs without pair keys, "shared": pairs scored by more than one run}}``
    (:func:`ser.significance.across_seeds`; pairs are matched across seeds by their keys).

    Only runs that saved per-pair scores count; ``runs`` says how many did. Verdicts are for this
    group alone; :func:`adjust_families` redoes them with Holm's adjustment across groups.
    """
    out: dict = {}
    sets = sorted({s for o in per_run for s in o}, key=lambda s: (s != "test", s))
    for s in sets:
        runs = [o[s] for o in per_run if s in o]
        res: dict = {"runs": len(runs), "keyless": sum("key" not in r for r in runs) if len(runs) > 1 else 0,
                     "shared": 0}
        for model in ("ser", "ser_best_val"):
            have = [r for r in runs if model in r]
            if not have:
                continue
            full = [r["full"] for r in have] if all("full" in r for r in have) else None
            summ = across_seeds([r["seed"] for r in have], [r[model] for r in have], full,
                                keys=[r.get("key") for r in have], n_boot=n_boot)
            res[model] = summ.to_dict()
            res[model]["runs"] = len(have)
            res[model]["verdict"] = _verdict_line(res[model], model, len(have))
            res["shared"] = max(res["shared"], summ.shared)
        if "ser" not in res and all("full" in r for r in runs) and runs:
            summ = across_seeds([r["seed"] for r in runs], [r["full"] for r in runs],
                                keys=[r.get("key") for r in runs], n_boot=n_boot)
            res["full"] = {"gain": summ.gain.to_dict()}
        out[s] = res
    return out


def adjust_families(groups: Sequence[dict]) -> None:
    """Holm's adjustment across configurations: for each evaluation set and each comparison with
    the seed RM (SER final, SER best val loop), the p-values of all groups of the report form one
    family; each group's entry gets ``p_holm``, ``family`` (how many) and its verdict redone with
    the adjusted p. In place; a family of one is left as it is."""
    families: dict[tuple[str, str], list[dict]] = {}
    for g in groups:
        for s, res in (g.get("paired") or {}).items():
            for model in ("ser", "ser_best_val"):
                if model in res and res[model]["gain"].get("p") is not None:
                    families.setdefault((s, model), []).append(res[model])
    for (s, model), members in families.items():
        if len(members) < 2:
            continue
        for entry, p in zip(members, holm([m["gain"]["p"] for m in members])):
            entry.update(p_holm=p, family=len(members))
            entry["verdict"] = _verdict_line(entry, model, entry["runs"], len(members), p)


def _fmt_ci(d: dict) -> str:
    f = lambda x: f"{100 * x:+.1f}"  # noqa: E731
    return f"{f(d['estimate'])} [{f(d['low'])}, {f(d['high'])}]"


def statistics_lines(stats: dict) -> list[str]:
    """Lines under one run's table: each comparison with the seed RM, its CI, McNemar p, a verdict.

    The verdict says "beats" only when the bootstrap CI excludes 0 *and* McNemar's exact p < 0.05:
    with few discordant pairs the percentile CI alone is too optimistic."""
    lines = []
    for s, models in stats.items():
        for model, st in models.items():
            ci, mc = st["ci"], st["mcnemar"]
            lines.append(f"{COMPARED[model]} - seed on {s} ({ci['n']} pairs): {_fmt_ci(ci)} pts, 95% paired bootstrap CI; "
                         f"McNemar exact p = {mc['p']:.3g} ({mc['b_only']} pairs right only with {COMPARED[model]}, "
                         f"{mc['a_only']} only with the seed RM)")
        if "ser" in models:
            ci = Interval(**{**models["ser"]["ci"], "p": models["ser"]["mcnemar"]["p"]})
            line = verdict(ci, "SER final", "the seed RM", test="McNemar exact p")
            lines.append(f"verdict ({s}, this run): {line} Across seeds see `ser report`.")
    return lines
