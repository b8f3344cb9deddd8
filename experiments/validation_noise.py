"""How big must the validation split be to choose a loop with (``loop.select=best_val``)?

Reads the per-pair scores every loop saved (``eval_scores_loopN.npz``) in the runs under a folder
and prints, per run group (dataset):

1. the noise of the validation split as it is: the standard error of one loop's accuracy and of the
   paired difference between two loops, on validation and on test (bootstrap over pairs);
2. a selection simulation: a stand-in validation set of m pairs is drawn (with replacement) from a
   run's test pairs, the loop with the best accuracy on it is chosen, and that loop's accuracy on
   the whole test split is compared with the best loop's (regret) and with the last loop's. This
   uses test pairs only as a population to measure selection noise; nothing here selects a result.

    python experiments/validation_noise.py multirun/table1_cpu [--sizes 115,230,460,920] [--out DIR]
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from ser.report import load_runs
from ser.report.paired import eval_outcomes, main_phase


def loop_outcomes(run: dict) -> dict[str, np.ndarray] | None:
    """``{"val": loops x pairs, "test": loops x pairs}`` (0/1) of the run's main phase, or None."""
    main = main_phase(run["results"])
    if main is None:
        return None
    name, phase = main
    per = [eval_outcomes(run["path"], name, d["loop"]) for d in phase["loops"]]
    if len(per) < 2 or any(p is None or "val" not in p for p in per):
        return None
    return {s: np.stack([p[s] for p in per]).astype(float) for s in ("val", "test")}


def se_boot(x: np.ndarray, rng, n_boot: int = 2000) -> float:
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    return float(x[idx].mean(axis=1).std())


def simulate(test: np.ndarray, m: int, rng, n_sim: int = 2000) -> dict:
    """Choose the loop by accuracy on m test pairs drawn with replacement; score it on all pairs."""
    acc = test.mean(axis=1)
    idx = rng.integers(0, test.shape[1], size=(n_sim, m))
    val_acc = test[:, idx].mean(axis=2)  # loops x sims
    pick = val_acc.argmax(axis=0)  # first maximum: ties to the earlier loop, as loop.select
    return {"p_oracle": float(np.mean(pick == acc.argmax())), "regret": float(np.mean(acc.max() - acc[pick])),
            "vs_last": float(np.mean(acc[pick] - acc[-1]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--sizes", default="115,230,460,920")
    ap.add_argument("--out", default=None, help="folder for validation_noise.png (default: PATH/report)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    groups: dict[str, list] = defaultdict(list)
    for run in load_runs(Path(args.path)):
        if run["status"] == "finished" and (o := loop_outcomes(run)) is not None:
            groups[str(run["results"].get("data"))].append(o)
    if not groups:
        raise SystemExit(f"{args.path}: no finished run with per-pair validation scores")
    curves = {}
    for data, runs in groups.items():
        n_val, n_test = runs[0]["val"].shape[1], runs[0]["test"].shape[1]
        se = {s: np.mean([se_boot(r[s][0], rng) for r in runs]) for s in ("val", "test")}
        dse = {s: np.mean([se_boot(r[s][-1] - r[s][0], rng) for r in runs]) for s in ("val", "test")}
        picked_val = [int(np.argmax(r["val"].mean(axis=1))) for r in runs]
        best_test = [int(np.argmax(r["test"].mean(axis=1))) for r in runs]
        corr = np.corrcoef(np.concatenate([r["val"].mean(axis=1) - r["val"].mean() for r in runs]),
                           np.concatenate([r["test"].mean(axis=1) - r["test"].mean() for r in runs]))[0, 1]
        print(f"## {data}: {len(runs)} runs, validation {n_val} pairs, test {n_test} pairs")
        print(f"- SE of one loop's accuracy: val {100 * se['val']:.1f} pts, test {100 * se['test']:.1f} pts")
        print(f"- SE of (last loop - seed), paired: val {100 * dse['val']:.1f} pts, test {100 * dse['test']:.1f} pts")
        print(f"- loop chosen on validation: {picked_val}; best loop on test: {best_test}; "
              f"correlation of within-run loop accuracies, val vs test: {corr:.2f}")
        print("| validation pairs m | P(chooses the best test loop) | mean regret (pts) | chosen - last loop (pts) |")
        print("|---|---|---|---|")
        curves[data] = []
        for m in sizes:
            sims = [simulate(r["test"], m, rng) for r in runs]
            agg = {k: float(np.mean([s[k] for s in sims])) for k in sims[0]}
            curves[data].append(agg["regret"])
            print(f"| {m} | {agg['p_oracle']:.2f} | {100 * agg['regret']:.2f} | {100 * agg['vs_last']:+.2f} |")
        print()
    out = Path(args.out) if args.out else Path(args.path) / "report"
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for data, reg in curves.items():
        ax.plot(sizes, [100 * r for r in reg], marker="o", label=data)
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(m) for m in sizes])
    ax.set_xlabel("validation pairs (simulated)")
    ax.set_ylabel("test accuracy lost by choosing on validation (pts)")
    ax.set_title("Selection noise of loop.select=best_val")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "validation_noise.png", dpi=120)
    print(f"figure: {out / 'validation_noise.png'}")


if __name__ == "__main__":
    main()
