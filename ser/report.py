"""Results tables and reports.

One run: ``run_rows`` / ``format_run_table`` (the paper's Table 1 layout, printed by ``ser.train``).

Many runs (``ser report RUN_OR_SWEEP_DIR``): ``find_runs`` finds the run folders of a run, an
``outputs/`` folder or a Hydra multirun folder; ``load_run`` reads one (finished: ``results.json``;
unfinished: what was logged so far and whether it can resume); ``summary_rows`` gives one row per
finished run; ``aggregate`` groups runs that differ only by seed (mean, sample std, n);
``format_markdown`` renders both; ``write_report`` writes ``report.md``, ``runs.csv`` and the
figures (accuracy per loop: Fig. 2; pairs per loop: Fig. 3; score gaps: Fig. 6).
"""
from __future__ import annotations

import csv
import json
import math
import re
import statistics
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

PHASES = ("ser", "seed", "full")
#: folders never searched for runs (inside a run, or our own output)
_SKIP_DIRS = {"report", "checkpoints", "lightning_logs", "wandb", "reward_model", "__pycache__", "csv_logs"}
_MAX_DEPTH = 4
PNG_FILES = ("accuracy_per_loop.png", "pairs_per_loop.png", "score_gaps.png")


class ReportError(Exception):
    """A report cannot be made (missing folder, no runs); the message is one line naming the path."""


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


# ---------------------------------------------------------------------------------------------
# one run (printed by ser.train)
# ---------------------------------------------------------------------------------------------
def run_rows(results: dict) -> list[dict]:
    """Rows of Table 1 for one run: seed, loop 1..n, SER final, full."""
    rows = []
    phases = results["phases"]
    main = phases.get("ser") or phases.get("seed")
    if main:
        hist = main["loops"]
        frac = main["labeled_fraction"]
        for k, d in enumerate(hist):
            prev = hist[k - 1] if k else {}
            rows.append({
                "row": f"seed ({frac:.0%} labeled)" if k == 0 else f"loop {k}",
                "status": prev.get("status", "-") if k else "-",
                "new_pairs": prev.get("kept", main["counts"]["labeled"]) if k else main["counts"]["labeled"],
                "precision": prev.get("pseudo_label_precision") if k else None,
                "train_pairs": d["train_pairs"], "steps": d["steps"],
                "val_acc": d["val_acc"], "test_acc": d["test_acc"], "time_s": d["train_s"] + d.get("eval_s", 0),
            })
        if len(hist) > 1:
            last = dict(rows[-1], row="SER final")
            rows.append(last)
    full = phases.get("full")
    if full:
        d = full["loops"][-1]
        rows.append({"row": "full (100% labeled)", "status": "-", "new_pairs": full["counts"]["labeled"], "precision": None,
                     "train_pairs": d["train_pairs"], "steps": d["steps"], "val_acc": d["val_acc"],
                     "test_acc": d["test_acc"], "time_s": d["train_s"] + d.get("eval_s", 0)})
    return rows


def format_run_table(results: dict) -> str:
    head = ["", "status", "new pairs", "pseudo-label prec %", "train pairs", "steps", "val acc %", "test acc %", "time s"]
    lines = [f"SER results: model={results['model']} data={results['data']} seed={results['seed']}",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in run_rows(results):
        lines.append("| " + " | ".join([r["row"], str(r["status"]), str(r["new_pairs"]), _pct(r["precision"]),
                                        str(r["train_pairs"]), str(r["steps"]), _pct(r["val_acc"]), _pct(r["test_acc"]),
                                        f"{r['time_s']:.0f}"]) + " |")
    stops = [p["loops"][-1].get("stop") for p in results["phases"].values() if p["loops"]]
    lines.append(f"stopped by: {', '.join(str(s) for s in stops)}; wall time {results.get('wall_s', float('nan')):.0f} s")
    if results.get("precision"):
        pr = results["precision"]
        lines.append(f"precision {pr['precision']} ({pr['reason']}) on {pr['hardware']}")
    lines.extend(time_breakdown(results))
    return "\n".join(lines)


def time_breakdown(results: dict) -> list[str]:
    """One line per phase: where the wall time went (load, tokenize, train/label per loop, evaluate, export)."""
    out = []
    for name, p in results["phases"].items():
        t, loops = p.get("timings", {}), p["loops"]
        train = [h["train_s"] for h in loops]
        label = [h["label_s"] for h in loops if h.get("label_s") is not None]
        evaluate = sum(h.get("eval_s", 0) for h in loops) - sum(label)
        per = lambda xs: "/".join(f"{x:.0f}" for x in xs)  # noqa: E731
        out.append(f"time {name}: load {t.get('data_load_s', 0):.1f} s, tokenize {t.get('tokenize_s', 0):.1f} s, "
                   f"model {t.get('model_s', 0):.1f} s, train {sum(train):.0f} s ({per(train)})"
                   + (f", label {sum(label):.0f} s ({per(label)})" if label else "")
                   + f", evaluate {evaluate:.0f} s, export {t.get('export_s', 0):.1f} s")
    return out


# ---------------------------------------------------------------------------------------------
# finding and loading runs
# ---------------------------------------------------------------------------------------------
def is_run_dir(path: Path) -> bool:
    """A run folder has results.json, .hydra/, or a ser/, seed/ or full/ phase folder."""
    path = Path(path)
    return ((path / "results.json").is_file() or (path / ".hydra").is_dir()
            or any((path / ph).is_dir() for ph in PHASES))


def _natural_key(path: Path):
    """Sort ``2`` before ``10`` (Hydra numbers multirun jobs)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(path)) if t]


def find_runs(path) -> list[Path]:
    """The run folders under ``path`` (``path`` itself when it is a run), sorted.

    Searches up to four levels deep (a sweep's job folders may be nested one level deeper) and
    never inside a run's phase folders. Raises ``ReportError`` when ``path`` does not exist; an
    existing folder without runs gives ``[]``.
    """
    root = Path(path)
    if not root.exists():
        raise ReportError(f"{root}: no such file or directory")
    if root.is_file() and root.name == "results.json":
        root = root.parent
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder (give a run folder or a sweep folder)")
    found: list[Path] = []
    seen: set[Path] = set()  # a run reached twice through a symlink is listed once

    def walk(d: Path, depth: int) -> None:
        real = d.resolve()
        if real in seen:
            return
        seen.add(real)
        run = is_run_dir(d)
        if run:
            found.append(d)
        if depth >= _MAX_DEPTH:
            return
        try:
            children = sorted(d.iterdir())
        except OSError:
            return
        for c in children:
            if not c.is_dir() or c.name.startswith(".") or c.name in _SKIP_DIRS or (run and c.name in PHASES):
                continue
            walk(c, depth + 1)

    walk(root, 0)
    return sorted(found, key=_natural_key)


def _read_yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _read_overrides(run_dir: Path) -> list[str] | None:
    """Hydra's ``.hydra/overrides.yaml`` (a list of ``key=value``), or None when absent."""
    f = run_dir / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return None
    data = _read_yaml(f)
    if isinstance(data, list):
        return [str(x) for x in data]
    return None


def _read_loops(phase_dir: Path) -> list[dict]:
    f = phase_dir / "loops.jsonl"
    out = []
    if f.is_file():
        for line in f.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut off by a kill: what came before is still good
    return out


def _expected_phases(run_dir: Path) -> list[str]:
    """The phases the run's saved Hydra config asks for (empty when unknown)."""
    cfg = _read_yaml(run_dir / ".hydra" / "config.yaml")
    if not isinstance(cfg, dict):
        return []
    try:
        max_loops = int((cfg.get("loop") or {}).get("max_loops", 0))
        frac = float(cfg.get("labeled_fraction", 0.15))
    except (TypeError, ValueError):
        return []
    phases = ["ser" if max_loops > 0 else ("full" if frac >= 1 else "seed")]
    if cfg.get("compare_full") and frac < 1:
        phases.append("full")
    return phases


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _unfinished_message(run_dir: Path, problem: str) -> tuple[str, dict]:
    parts = [problem]
    phases = _expected_phases(run_dir)
    phases += [ph for ph in PHASES if (run_dir / ph).is_dir() and ph not in phases]
    logged: dict[str, list[dict]] = {}
    if not phases:
        parts.append("no phase started (nothing logged, no checkpoint)")
    multi = len(phases) > 1
    for ph in phases:
        pdir = run_dir / ph
        prefix = f"{ph}: " if multi or ph != "ser" else ""
        if (pdir / "phase.json").is_file():
            parts.append(f"{ph}: phase finished")
            continue
        if not pdir.is_dir():
            parts.append(f"{ph}: not started")
            continue
        loops = _read_loops(pdir)
        logged[ph] = loops
        s = prefix + _plural(len(loops), "loop") + " logged"
        if loops:
            last = loops[-1]
            extra = [f"last: loop {last.get('loop', len(loops) - 1)}"]
            if last.get("status"):
                extra.append(str(last["status"]))
            if last.get("test_acc") is not None:
                extra.append(f"test {_pct(last['test_acc'])}%")
            s += f" ({', '.join(extra)})"
        parts.append(s)
        ckpt = pdir / "checkpoints" / "last.ckpt"
        if ckpt.is_file():
            parts.append(f"resumable from {ph}/checkpoints/last.ckpt")
        else:
            parts.append(f"no {ph}/checkpoints/last.ckpt (that phase restarts from scratch)")
    if phases and all((run_dir / ph / "phase.json").is_file() for ph in phases):
        parts.append("all phases finished: run the same command again to write results.json")
    return "; ".join(parts), logged


def load_run(path, root=None) -> dict:
    """Read one run folder.

    Returns ``{"path", "name", "status": "finished"|"unfinished", "missing": str|None,
    "overrides": str, "override_list": list|None, "results": dict|None, "logged": {phase: [DIAG]}}``.
    ``name`` is the folder relative to ``root`` (default: the folder's name); ``overrides`` is
    ``.hydra/overrides.yaml`` joined with ``,`` ("" when there is none); ``missing`` says, for an
    unfinished run, what is missing and what was logged (e.g. "no results.json; 2 loops logged
    (last: loop 1, HARD, test 65.00%); resumable from ser/checkpoints/last.ckpt").
    """
    p = Path(path)
    if not p.is_dir():
        raise ReportError(f"{p}: no such run folder")
    name = p.name
    if root is not None:
        try:
            rel = p.resolve().relative_to(Path(root).resolve())
            name = str(rel) if str(rel) != "." else p.resolve().name
        except ValueError:
            pass
    ov = _read_overrides(p)
    run = {"path": str(p), "name": name, "overrides": ",".join(ov) if ov is not None else "", "override_list": ov,
           "status": "unfinished", "missing": None, "results": None, "logged": {}}
    f = p / "results.json"
    if f.is_file():
        try:
            results = json.loads(f.read_text())
            if not isinstance(results, dict) or not isinstance(results.get("phases"), dict):
                raise ValueError("no 'phases'")
        except (OSError, ValueError) as e:
            run["missing"], run["logged"] = _unfinished_message(p, f"results.json unreadable ({e})")
            return run
        run.update(status="finished", results=results)
        return run
    run["missing"], run["logged"] = _unfinished_message(p, "no results.json")
    return run


def load_runs(path) -> list[dict]:
    """``load_run`` for every run under ``path``; ``ReportError`` when there is none."""
    root = Path(path)
    paths = find_runs(root)
    if not paths:
        raise ReportError(f"{root}: no runs found (a run folder has results.json, .hydra/, or ser/, seed/ or full/)")
    return [load_run(p, root) for p in paths]


# ---------------------------------------------------------------------------------------------
# rows and aggregates
# ---------------------------------------------------------------------------------------------
def _num(x):
    """A finite float, or None (JSON NaN and missing values become None)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


_SEED_ITEM = re.compile(r"^\+{0,2}seed=")
#: overrides that do not change results (as Hydra's override_dirname in conf/hydra/default.yaml)
_NEUTRAL_ITEM = re.compile(r"^[+~]{0,2}(logger|trainer\.enable_progress_bar|output_dir|hydra\.[\w.]+)(=|$)")


def _split_overrides(s: str) -> list[str]:
    """Split a Hydra override_dirname ``a=1,b=[1,2],c=x`` on the commas between items."""
    items, depth, cur = [], 0, ""
    for ch in s:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        items.append(cur)
    return items


def group_key(run: dict) -> str:
    """The run's configuration without its seed: its overrides with ``seed=...`` removed (and the
    ones that do not change results: ``logger``, ``trainer.enable_progress_bar``, ``output_dir``, ``hydra.*``).

    Without ``.hydra/overrides.yaml`` the folder name is used when it looks like Hydra's
    ``key=value,...`` folder name, else model, data, labeled fraction and threshold rule.
    """
    if run.get("override_list") is not None:
        items = run["override_list"]
    elif "=" in Path(run["name"]).name:
        items = _split_overrides(Path(run["name"]).name)
    else:
        r = run.get("results") or {}
        th = r.get("thresholds") or {}
        return (f"model={r.get('model')},data={r.get('data')},labeled_fraction={r.get('labeled_fraction')},"
                f"thresholds.rule={th.get('rule')}")
    return ",".join(i for i in items if not _SEED_ITEM.match(i) and not _NEUTRAL_ITEM.match(i))


def _main_phase(results: dict) -> dict | None:
    phases = results.get("phases") or {}
    return phases.get("ser") or phases.get("seed")


ROW_FIELDS = ["run", "path", "overrides", "group", "model", "data", "seed", "labeled_fraction", "rule", "tau_high",
              "tau_low", "tau_delta", "min_count", "seed_acc", "ser_acc", "full_acc", "gain", "gap_closed", "n_loops",
              "kept", "statuses", "stop", "loop_test_accs", "wall_s"]


def summary_rows(runs: Iterable) -> list[dict]:
    """One row per finished run (runs: ``load_run`` dicts or paths); unfinished runs are left out.

    Accuracies are fractions: ``seed_acc`` = loop 0 of the ser (or seed) phase, ``ser_acc`` = last
    loop of the ser phase (None without one), ``full_acc`` = the full phase (None without one),
    ``gain`` = ser - seed, ``gap_closed`` = (ser - seed) / (full - seed). ``kept`` = pseudo-labeled
    pairs added to training over all loops; ``statuses`` like "EASY>EASY>HARD>STOP". The row
    also holds ``loops`` (the main phase's diagnostics, for plots) and ``loop_accs``.
    """
    rows = []
    for run in runs:
        if not isinstance(run, dict):
            run = load_run(run)
        if run["status"] != "finished":
            continue
        r = run["results"]
        phases = r["phases"]
        main = _main_phase(r)
        loops = list(main.get("loops") or []) if main else []
        loop_accs = [_num(d.get("test_acc")) for d in loops]
        seed_acc = loop_accs[0] if loop_accs else None
        ser = phases.get("ser")
        ser_acc = _num(ser["loops"][-1].get("test_acc")) if ser and ser.get("loops") else None
        full = phases.get("full")
        full_acc = None
        if full:
            full_acc = _num(full.get("test_acc"))
            if full_acc is None and full.get("loops"):
                full_acc = _num(full["loops"][-1].get("test_acc"))
        gain = ser_acc - seed_acc if ser_acc is not None and seed_acc is not None else None
        gap_closed = None
        if gain is not None and full_acc is not None and not math.isclose(full_acc, seed_acc, abs_tol=1e-12):
            gap_closed = gain / (full_acc - seed_acc)
        th = r.get("thresholds") or {}
        kept = sum(int(d.get("kept") or 0) for d in loops if "kept" in d and d.get("stop") is None)
        stops = [d.get("stop") for d in loops if d.get("stop")]
        rows.append({
            "run": run["name"], "path": run["path"], "overrides": run["overrides"], "group": group_key(run),
            "model": r.get("model"), "data": r.get("data"), "seed": r.get("seed"),
            "labeled_fraction": _num(r.get("labeled_fraction")),
            "rule": th.get("rule"), "tau_high": th.get("tau_high"), "tau_low": th.get("tau_low"),
            "tau_delta": th.get("tau_delta"), "min_count": th.get("min_count"),
            "seed_acc": seed_acc, "ser_acc": ser_acc, "full_acc": full_acc, "gain": gain, "gap_closed": gap_closed,
            "n_loops": len(loops) - 1 if loops else None, "kept": kept,
            "statuses": ">".join(str(d["status"]) for d in loops if d.get("status")),
            "stop": stops[-1] if stops else None,
            "loop_test_accs": ";".join("" if a is None else f"{a:.6g}" for a in loop_accs),
            "wall_s": _num(r.get("wall_s")),
            "loop_accs": loop_accs, "loops": loops,
        })
    return rows


def _stat(values: Iterable) -> dict:
    """Mean, sample standard deviation (n - 1; None for n < 2) and n of the non-missing values."""
    v = [x for x in (_num(x) for x in values) if x is not None]
    return {"mean": statistics.fmean(v) if v else None, "std": statistics.stdev(v) if len(v) > 1 else None,
            "n": len(v)}


def _key_fn(by) -> Callable[[dict], str]:
    if callable(by):
        return lambda r: str(by(r))
    if isinstance(by, str):
        return lambda r: str(r.get(by))
    fields = list(by)
    return lambda r: ",".join(f"{f}={r.get(f)}" for f in fields)


def aggregate(rows: Sequence[dict], by: str | Sequence[str] | Callable[[dict], object] = "group") -> list[dict]:
    """Group rows (default: runs that differ only by seed) in first-seen order.

    ``by``: a row field, a list of fields, or a function of the row. Each group:
    ``{"group", "n", "runs", "seeds", "model", "data", "labeled_fraction", "seed_acc", "ser_acc",
    "full_acc", "gain", "gap_closed", "kept", "n_loops", "loop_acc": [per loop k], "loop_gain": [per
    loop k: loop k - seed, paired]}``; every statistic is ``{"mean", "std", "n"}`` over the runs that
    have the value (a run stopped at loop 2 does not count for loop 3).
    """
    key = _key_fn(by)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    out = []
    for k, rs in groups.items():
        n_loop = max((len(r["loop_accs"]) for r in rs), default=0)
        first = rs[0]

        def same(field):
            vals = {r.get(field) for r in rs}
            return vals.pop() if len(vals) == 1 else "/".join(sorted(str(v) for v in vals))

        out.append({
            "group": k, "n": len(rs), "runs": [r["run"] for r in rs], "seeds": [r["seed"] for r in rs],
            "gap_closed_runs": [r["gap_closed"] for r in rs],
            "model": same("model"), "data": same("data"), "labeled_fraction": first.get("labeled_fraction"),
            "tau_delta": same("tau_delta"),
            **{f: _stat(r[f] for r in rs) for f in ("seed_acc", "ser_acc", "full_acc", "gain", "gap_closed",
                                                      "kept", "n_loops")},
            "loop_acc": [_stat(r["loop_accs"][i] for r in rs if len(r["loop_accs"]) > i) for i in range(n_loop)],
            "loop_gain": [_stat(r["loop_accs"][i] - r["seed_acc"] for r in rs if len(r["loop_accs"]) > i
                                and r["loop_accs"][i] is not None and r["seed_acc"] is not None)
                          for i in range(n_loop)],
            "full_gain": _stat(r["full_acc"] - r["seed_acc"] for r in rs
                               if r["full_acc"] is not None and r["seed_acc"] is not None),
        })
        # mean gain / mean full-data gain: a per-run ratio explodes when one seed's full model is
        # barely better than its seed model, so the group figure is the ratio of the means
        g, fg = out[-1]["gain"], out[-1]["full_gain"]
        out[-1]["gap_closed_of_means"] = (g["mean"] / fg["mean"] if g["n"] and fg["n"] and fg["mean"] > 0
                                          else None)
    return out


# ---------------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------------
def format_stat(s: dict, scale: float = 100.0, signed: bool = False, digits: int = 2) -> str:
    """``"mean ± std (n)"`` with 2 decimals (percent by default); ``"mean (1)"`` for one run; ``"-"`` for none."""
    if not s or not s["n"] or s["mean"] is None:
        return "-"
    m = f"{scale * s['mean']:{'+' if signed else ''}.{digits}f}"
    if s["std"] is None:
        return f"{m} ({s['n']})"
    return f"{m} ± {scale * s['std']:.{digits}f} ({s['n']})"


def _cell(x) -> str:
    return "-" if x is None or x == "" else str(x).replace("|", "\\|")


def _fmt(x, digits=2) -> str:
    x = _num(x)
    return "-" if x is None else f"{x:.{digits}f}"


def _frac_label(f) -> str:
    f = _num(f)
    return "?%" if f is None else f"{100 * f:.4g}%"


def table1_rows(group: dict) -> list[tuple[str, dict, dict | None]]:
    """The paper's Table 1 rows for one group: (label, test accuracy stat, gain-vs-seed stat)."""
    rows = []
    if group["loop_acc"]:
        rows.append((f"{_frac_label(group['labeled_fraction'])} seed", group["loop_acc"][0], None))
        for k in range(1, len(group["loop_acc"])):
            rows.append((f"loop {k}", group["loop_acc"][k], group["loop_gain"][k]))
    elif group["seed_acc"]["n"]:
        rows.append((f"{_frac_label(group['labeled_fraction'])} seed", group["seed_acc"], None))
    if group["ser_acc"]["n"]:
        rows.append(("SER final", group["ser_acc"], group["gain"]))
    if group["full_acc"]["n"]:
        rows.append(("full 100%", group["full_acc"], group["full_gain"]))
    return rows


def format_markdown(runs: Sequence[dict], plots: dict[str, str] | None = None, source=None,
                    by: str | Sequence[str] | Callable[[dict], object] = "group") -> str:
    """The report: per-run table, one Table 1 per group (test accuracy mean ± std (n)), the
    unfinished runs with what is missing, and (``plots``: file -> "" or "skipped: why") the figures."""
    rows = summary_rows(runs)
    groups = aggregate(rows, by=by)
    unfinished = [r for r in runs if r["status"] != "finished"]
    out = [f"# SER report{f': {source}' if source is not None else ''}", "",
           f"{_plural(len(runs), 'run')}: {len(rows)} finished, {len(unfinished)} unfinished. "
           "Accuracies are pairwise test accuracies in %; gain in percentage points; "
           "gap closed = (SER - seed) / (full - seed).", ""]
    if rows:
        head = ["run", "model", "data", "seed", "labeled %", "rule", "τ_high", "τ_low", "τ_Δ", "min count",
                "seed acc %", "SER acc %", "full acc %", "gain pts", "gap closed %", "loops", "kept pairs",
                "statuses", "wall s"]
        out += ["## Runs", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            label = r["run"] if not r["overrides"] or r["overrides"] == r["run"] else f"{r['run']} ({r['overrides']})"
            out.append("| " + " | ".join(_cell(c) for c in [
                label, r["model"], r["data"], r["seed"], _pct(r["labeled_fraction"]), r["rule"], r["tau_high"],
                r["tau_low"], r["tau_delta"], r["min_count"], _pct(r["seed_acc"]), _pct(r["ser_acc"]),
                _pct(r["full_acc"]), "-" if r["gain"] is None else f"{100 * r['gain']:+.2f}", _pct(r["gap_closed"]),
                r["n_loops"], r["kept"], r["statuses"] or "-", _fmt(r["wall_s"], 0)]) + " |")
        out += ["", "## Results by configuration (Table 1 layout)", "",
                "Runs that differ only by seed are grouped; cells are mean ± sample std (n runs).", ""]
        for g in groups:
            title = g["group"] or "(default config)"
            out += [f"### {title}", "",
                    f"model {g['model']}, data {g['data']}, {_plural(g['n'], 'run')} (seeds "
                    f"{', '.join(str(s) for s in g['seeds'])})", "",
                    "| | test acc % | vs seed (pts) |", "|---|---|---|"]
            for label, acc, gain in table1_rows(g):
                out.append(f"| {label} | {format_stat(acc)} | {format_stat(gain, signed=True) if gain else '-'} |")
            extra = [f"gain (SER - seed): {format_stat(g['gain'], signed=True)} pts"] if g["gain"]["n"] else []
            if g.get("gap_closed_of_means") is not None:
                per_run = ", ".join("-" if v is None else f"{100 * v:.0f}%" for v in g["gap_closed_runs"])
                extra.append(f"gap closed: {100 * g['gap_closed_of_means']:.1f}% of the mean gap (per run: {per_run})")
            if g["kept"]["n"]:
                extra.append(f"pseudo-labeled pairs kept: {format_stat(g['kept'], scale=1, digits=0)}")
            if extra:
                out += ["", "; ".join(extra)]
            out.append("")
    if unfinished:
        out += ["## Unfinished runs", ""]
        for r in unfinished:
            label = r["name"] + (f" ({r['overrides']})" if r["overrides"] and r["overrides"] != r["name"] else "")
            out.append(f"- {label}: {r['missing']}")
        out.append("")
    if plots:
        out += ["## Figures", ""]
        for fname, note in plots.items():
            out.append(f"- {fname}: {note}" if note else f"- ![{fname}]({fname})")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def _figure(nrows=1, ncols=1, size=(8, 5)):
    """A figure on the Agg canvas (no pyplot: the caller's backend is left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _legend(fig, ax, inside_max: int = 5) -> None:
    """A legend on the axes when short, else outside on the right of the figure."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(handles) <= inside_max:
        ax.legend(fontsize="small", loc="best")
    else:
        w, h = fig.get_size_inches()
        fig.set_size_inches(w + 4, max(h, 0.25 * len(handles) + 1))
        fig.legend(handles, labels, fontsize="small", loc="outside right upper")


def _short(s: str, n: int = 48) -> str:
    """At most n characters, cut in the middle (configurations often differ at the end)."""
    s = s or "(default config)"
    if len(s) <= n:
        return s
    head = (n - 1) // 2
    return s[:head] + "…" + s[len(s) - (n - 1 - head):]


def _colours(groups: Sequence[dict]) -> dict[str, object]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {g["group"]: cmap(i % 10) for i, g in enumerate(groups)}


def _run_label(r: dict, many: bool) -> str:
    return _short(r["group"]) + ("" if many else f" seed={r['seed']}")


_MARKERS = "osD^vP*X<>"


def _markers(rows: Sequence[dict]) -> dict[str, str]:
    """A marker per run, different between the seeds of one group (the colour is the group's)."""
    seen: dict[str, int] = {}
    out = {}
    for r in rows:
        i = seen.get(r["group"], 0)
        seen[r["group"]] = i + 1
        out[r["run"]] = _MARKERS[i % len(_MARKERS)]
    return out


def plot_accuracy(rows: Sequence[dict], groups: Sequence[dict], path: Path) -> str | None:
    """Fig. 2: test accuracy vs cumulative training steps; seed/full means as dashed lines.
    Returns None when written, else why it was skipped."""
    runs = [r for r in rows if any(a is not None for a in r["loop_accs"])]
    if not runs and not any(g["full_acc"]["n"] for g in groups):
        return "no finished run has a test accuracy to plot"
    col, mk = _colours(groups), _markers(runs)
    fig, ax = _figure()
    ax = ax[0, 0]
    many = len(runs) > 8
    labelled: set = set()
    for r in runs:
        steps, total = [], 0
        for d in r["loops"]:
            total += int(d.get("steps") or 0)
            steps.append(d.get("global_step", total))
        acc = [None if a is None else 100 * a for a in r["loop_accs"]]
        lab = _run_label(r, many)
        ax.plot(steps, [math.nan if a is None else a for a in acc], marker=mk[r["run"]], color=col[r["group"]],
                label=None if lab in labelled else lab, alpha=0.85)
        labelled.add(lab)
    one = len(groups) == 1
    fracs = sorted({_frac_label(g["labeled_fraction"]) for g in groups})
    for g in groups:
        if g["seed_acc"]["mean"] is not None:
            ax.axhline(100 * g["seed_acc"]["mean"], ls="--", lw=1, color=col[g["group"]],
                       label=f"{_frac_label(g['labeled_fraction'])} seed mean" if one else None)
        if g["full_acc"]["mean"] is not None:
            ax.axhline(100 * g["full_acc"]["mean"], ls="-.", lw=1, color=col[g["group"]],
                       label="full 100% mean" if one else None)
    if not one:  # one legend entry per line style; the colour says which configuration
        from matplotlib.lines import Line2D

        if any(g["seed_acc"]["mean"] is not None for g in groups):
            ax.add_line(Line2D([], [], ls="--", lw=1, color="grey",
                               label=f"{'/'.join(fracs)} seed mean (colour of its configuration)"))
        if any(g["full_acc"]["mean"] is not None for g in groups):
            ax.add_line(Line2D([], [], ls="-.", lw=1, color="grey", label="full 100% mean (colour of its configuration)"))
    ax.set_title("Test accuracy per SER loop")
    ax.set_xlabel("cumulative training steps")
    ax.set_ylabel("pairwise test accuracy (%)")
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=120)
    return None


def plot_pairs(rows: Sequence[dict], groups: Sequence[dict], path: Path) -> str | None:
    """Fig. 3: training pairs per loop and pseudo-labeled pairs added for each loop."""
    runs = [r for r in rows if r["loops"]]
    if not runs:
        return "no finished run has loop diagnostics"
    col, mk = _colours(groups), _markers(runs)
    fig, axes = _figure(1, 2, size=(11, 4.5))
    a_train, a_new = axes[0]
    many = len(runs) > 8
    labelled: set = set()
    any_new = False
    for r in runs:
        lab = _run_label(r, many)
        label = None if lab in labelled else lab
        labelled.add(lab)
        loops = r["loops"]
        a_train.plot([d.get("loop", i) for i, d in enumerate(loops)], [d.get("train_pairs") for d in loops],
                     marker=mk[r["run"]], color=col[r["group"]], label=label, alpha=0.85)
        new = [(loops[k].get("loop", k), loops[k - 1]["kept"]) for k in range(1, len(loops)) if "kept" in loops[k - 1]]
        if new:
            any_new = True
            a_new.plot([x for x, _ in new], [y for _, y in new], marker=mk[r["run"]], ls="--", color=col[r["group"]],
                       label=label, alpha=0.85)
    a_train.set_title("Training pairs per loop")
    a_train.set_xlabel("loop (0 = seed)")
    a_train.set_ylabel("training pairs")
    a_new.set_title("Pseudo-labeled pairs added per loop")
    a_new.set_xlabel("loop")
    a_new.set_ylabel("new pairs")
    if not any_new:
        a_new.text(0.5, 0.5, "no pool was self-labeled", ha="center", va="center", transform=a_new.transAxes)
    from matplotlib.ticker import MaxNLocator

    for a in (a_train, a_new):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(fig, a_train)
    fig.suptitle("Data per SER loop")
    fig.savefig(path, dpi=120)
    return None


def plot_gaps(rows: Sequence[dict], groups: Sequence[dict], path: Path, max_panels: int = 12) -> str | None:
    """Fig. 6: distribution of |p1 - p2| on the pool per loop, one panel per group (seeds summed)."""
    panels: dict[str, dict[int, tuple[list, list, set]]] = {}
    for r in rows:
        for i, d in enumerate(r["loops"]):
            h, e = d.get("gap_hist"), d.get("gap_edges")
            if not h or not e or len(e) != len(h) + 1:
                continue
            per = panels.setdefault(r["group"], {})
            k = d.get("loop", i)
            if k in per and len(per[k][0]) == len(h):
                per[k][0][:] = [a + b for a, b in zip(per[k][0], h)]
            else:
                per[k] = (list(h), list(e), set())
            if d.get("status"):
                per[k][2].add(str(d["status"]))
    if not panels:
        return "no loop self-labeled its pool (no gap_hist in any finished run)"
    names = [g["group"] for g in groups if g["group"] in panels][:max_panels]
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = _figure(nrows, ncols, size=(5.5 * ncols, 4 * nrows))
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    tau = {g["group"]: g.get("tau_delta") for g in groups}
    for idx, name in enumerate(names):
        ax = axes[idx // ncols, idx % ncols]
        per = panels[name]
        kmax = max(per) or 1
        for k in sorted(per):
            h, e, sts = per[k]
            total = sum(h) or 1
            ax.stairs([c / total for c in h], e, color=cmap(k / kmax if kmax else 0), lw=1.5,
                      label=f"after loop {k}" + (f" ({'/'.join(sorted(sts))})" if sts else ""))
        t = _num(tau.get(name))
        if t is not None:
            ax.axvline(t, ls=":", color="grey", label=f"τ_Δ = {t:g}")
        ax.set_title(textwrap.fill(_short(name, 150), 50), fontsize="small")
        ax.set_xlabel("|p1 - p2| on the pool")
        ax.set_ylabel("fraction of pool pairs")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    for idx in range(len(names), nrows * ncols):
        axes[idx // ncols, idx % ncols].set_visible(False)
    title = "Score gaps |p1 - p2| per loop"
    if len(panels) > len(names):
        title += f" (first {len(names)} of {len(panels)} configurations)"
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    return None


def make_plots(rows: Sequence[dict], groups: Sequence[dict], out_dir: Path) -> dict[str, str]:
    """Write the three figures; returns file -> "" (written) or "skipped: why" (and prints why)."""
    out_dir = Path(out_dir)
    notes = {}
    for fname, fn in zip(PNG_FILES, (plot_accuracy, plot_pairs, plot_gaps)):
        target = out_dir / fname
        why = fn(rows, groups, target)
        if why:
            if target.exists():  # an old figure from an earlier report would mislead
                target.unlink()
            notes[fname] = f"skipped: {why}"
            print(f"{fname} skipped: {why}")
        else:
            notes[fname] = ""
    return notes


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------
def write_csv(rows: Sequence[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=ROW_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else round(r[k], 8) if isinstance(r[k], float) else r[k]
                        for k in ROW_FIELDS})


def write_report(path, out_dir=None) -> Path:
    """Report on the run(s) under ``path``: writes ``report.md``, ``runs.csv`` (one row per finished
    run) and the PNG figures into ``out_dir`` (default ``path/report``), prints the markdown, and
    returns the folder. Raises ``ReportError`` when ``path`` is missing or holds no runs."""
    root = Path(path)
    runs = load_runs(root)
    out = Path(out_dir) if out_dir is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(runs)
    groups = aggregate(rows)
    plots = make_plots(rows, groups, out)
    md = format_markdown(runs, plots=plots, source=root)
    (out / "report.md").write_text(md)
    write_csv(rows, out / "runs.csv")
    print(md, end="")
    print(f"report: {out / 'report.md'}; table: {out / 'runs.csv'}")
    return out
