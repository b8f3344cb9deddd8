"""The README's RM-Bench table (issue 24): Table 1's reward models on RM-Bench beside their own test split.

Reads what ``experiments/rm_bench.sh`` wrote (``RM_BENCH_DIR/<experiment>/seed_<s>/{seed,ser,full}/``
with ``rm_bench.json`` and ``rm_bench_scores.jsonl``) and the Table 1 runs it scored (``--runs``:
``<runs>/<experiment>/experiment=<experiment>,seed=<s>,...=False/results.json``), and prints a markdown
table: per dataset and reward model, the accuracy on its own test split, RM-Bench's hard / normal /
easy / average (domains chat, code and safety averaged, RM-Bench's rule), then SER final - seed RM
and full - seed RM on the same RM-Bench prompts with the stratified bootstrap CI and the paired
sign-flip p (:func:`ser.rm_bench.paired_by_domain`), Holm-adjusted over the table's comparisons of
one metric (``ser.significance.holm``), beside the same differences on the own test split (McNemar).

    python experiments/rm_bench_table.py multirun/rm_bench --runs multirun/length_balance [--out FILE]

``--copy DIR`` also copies the small files the table reads (json and scores, no weights) into DIR,
so ``python experiments/rm_bench_table.py DIR --runs DIR/runs`` regenerates it without the runs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ser.rm_bench import paired_by_domain
from ser.significance import N_BOOT, holm

MODELS = {"seed": "15% seed", "ser": "SER final", "full": "full data"}
METRICS = ("hard", "normal", "easy", "average")


def read_scores(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "rm_bench_scores.jsonl").read_text().splitlines() if line.strip()]


def find_run(runs: Path, exp: str, seed: str) -> Path | None:
    for cand in sorted((runs / exp).glob(f"experiment={exp},seed={seed}*")):
        if "length_balance=true" not in cand.name.lower() and (cand / "results.json").exists():
            return cand
    return None


def own_test(results: dict) -> dict:
    """Own-test accuracy of the seed, SER final and full RMs, and the run's paired SER/full - seed."""
    ser, full = results["phases"]["ser"], results["phases"].get("full") or {}
    acc = {"seed": ser["loops"][0]["test_acc"], "ser": ser.get("test_acc"), "full": full.get("test_acc")}
    stats = (results.get("statistics") or {}).get("test") or {}
    return {"acc": acc, "diff": {m: (stats.get(m) or {}).get("ci") for m in ("ser", "full")}}


def collect(root: Path, runs: Path, n_boot: int) -> list[dict]:
    rows = []
    for exp_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "runs"):
        for seed_dir in sorted(exp_dir.glob("seed_*")):
            if not all((seed_dir / m / "rm_bench.json").exists() for m in MODELS):
                print(f"skipped {seed_dir}: not every model scored", file=sys.stderr)
                continue
            seed = seed_dir.name.split("_", 1)[1]
            run = find_run(runs, exp_dir.name, seed)
            if run is None:
                raise SystemExit(f"rm_bench_table.py: no Table 1 run of {exp_dir.name} seed {seed} under {runs}; pass --runs")
            results = json.loads((run / "results.json").read_text())
            bench = {m: json.loads((seed_dir / m / "rm_bench.json").read_text()) for m in MODELS}
            scores = {m: read_scores(seed_dir / m) for m in MODELS}
            paired = {m: paired_by_domain(scores[m], scores["seed"], n_boot) for m in ("ser", "full")}
            rows.append({"exp": exp_dir.name, "data": results["data"], "seed": seed, "run": run, "dir": seed_dir,
                         "own": own_test(results), "bench": bench, "paired": paired,
                         "ties": {m: (bench[m]["ties"], bench[m]["comparisons"]) for m in MODELS},
                         "domains": list(bench["seed"]["domains"]), "prompts": bench["seed"]["prompts"],
                         "dtype": bench["seed"].get("dtype"), "max_length": bench["seed"]["formatting"]["max_length"]})
    return rows


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def diff(d: dict | None, p_adj: float | None = None) -> str:
    if not d:
        return "-"
    s = f"{100 * d['estimate']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    holds = d["low"] > 0 or d["high"] < 0
    if p_adj is not None:
        holds = holds and p_adj < 0.05
        s += f", p {p_adj:.2g}"
    return f"**{s}**" if holds else s


def table(rows: list[dict]) -> str:
    # one Holm family per RM-Bench metric: every dataset's SER - seed and full - seed
    adj: dict[tuple, float] = {}
    for metric in METRICS:
        keys = [(i, m, metric) for i, _ in enumerate(rows) for m in ("ser", "full")]
        ps = holm([rows[i]["paired"][m]["overall"][metric]["p"] for i, m, _ in keys])
        adj.update(dict(zip(keys, ps)))
    out = ["| data (seed) | reward model | own test acc % | RM-Bench hard % | normal % | easy % | average % |"
           " vs seed on own test, pts | vs seed on RM-Bench average, pts (Holm p) | vs seed on RM-Bench hard, pts (Holm p) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        for m, name in MODELS.items():
            o = r["bench"][m]["overall"]
            cells = [f"{r['data']} ({r['seed']})", name, pct(r["own"]["acc"][m])]
            cells += [pct(o[k]["estimate"]) for k in METRICS]
            if m == "seed":
                cells += ["", "", ""]
            else:
                cells += [diff(r["own"]["diff"][m]),
                          diff(r["paired"][m]["overall"]["average"], adj[(i, m, "average")]),
                          diff(r["paired"][m]["overall"]["hard"], adj[(i, m, "hard")])]
            out.append("| " + " | ".join(cells) + " |")
    first = rows[0]
    ties = max(t / c for r in rows for t, c in r["ties"].values())
    out += ["", f"RM-Bench: {first['prompts']} prompts, domains {', '.join(first['domains'])} (RM-Bench's own rule: "
            f"safety-refuse and safety-response pooled as safety), 9 chosen-rejected comparisons per prompt; scored in "
            f"{first['dtype']} at max length {first['max_length']}, ties (counted wrong) at most {100 * ties:.1f}% of "
            f"comparisons. CIs: 95% bootstrap over prompts stratified by domain (RM-Bench) and over test pairs "
            f"(own test, McNemar beside); bold: the CI excludes 0 and, on RM-Bench, the Holm-adjusted sign-flip p "
            f"< 0.05 ({2 * len(rows)} comparisons per metric). hard: the chosen answer less styled than the rejected."]
    return "\n".join(out)


def copy_small(rows: list[dict], dest: Path) -> None:
    for r in rows:
        for m in MODELS:
            to = dest / r["exp"] / f"seed_{r['seed']}" / m
            to.mkdir(parents=True, exist_ok=True)
            for f in ("rm_bench.json", "rm_bench_scores.jsonl", "rm_bench.md", "rm_bench_matrix.png"):
                if (r["dir"] / m / f).exists():
                    shutil.copy2(r["dir"] / m / f, to / f)
        run_to = dest / "runs" / r["exp"] / r["run"].name
        run_to.mkdir(parents=True, exist_ok=True)
        shutil.copy2(r["run"] / "results.json", run_to / "results.json")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rm_bench_dir", type=Path)
    ap.add_argument("--runs", type=Path, default=Path("multirun/length_balance"))
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    ap.add_argument("--copy", type=Path, default=None, help="copy the files the table reads here (no weights)")
    ap.add_argument("--n-boot", type=int, default=N_BOOT)
    a = ap.parse_args(argv)
    rows = collect(a.rm_bench_dir, a.runs, a.n_boot)
    if not rows:
        raise SystemExit(f"rm_bench_table.py: no scored models under {a.rm_bench_dir}")
    md = table(rows)
    print(md)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(md + "\n")
    if a.copy:
        copy_small(rows, a.copy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
