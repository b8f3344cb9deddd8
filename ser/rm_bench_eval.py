"""RM-Bench in ``ser evaluate-rm``: ``--data`` files that are RM-Bench's (a JSON list of rows with 3
chosen and 3 rejected answers; or ``--format rm-bench``) are scored here, the figures coming from
the pure functions of :mod:`ser.rm_bench`.

:func:`is_rm_bench` decides (``ser.rm_eval.cli_evaluate_rm`` asks it first); :func:`cli_rm_bench`
loads the model and the rows, scores the 6 answers of every prompt with ``ser.rm_eval``'s
length-sorted scorer (passed in: this module does not import ``ser.rm_eval``), prints the table
(:func:`summary_lines`) and writes ``rm_bench.json``, ``rm_bench.md``, ``rm_bench_scores.jsonl``
(the 6 rewards of every prompt) and ``rm_bench_matrix.png`` (:func:`plot_matrices`). With
``--compare-to DIR`` (an earlier RM-Bench output folder, another model) it adds the paired
differences on the prompts both scored.
"""
from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ser.errors import ConfigError, DataError
from ser.rm_bench import FORMAT, STYLES, domain_of, load_rm_bench, looks_like_rm_bench, paired_by_domain, summarize

METRICS = ("hard", "normal", "easy", "average")


def is_rm_bench(fmt_name: str, files: Sequence[str]) -> bool:
    """``--format rm-bench``, or with ``auto`` every file an RM-Bench JSON list (one error if only some are)."""
    from ser.data.formats import resolve_data_path

    if fmt_name == FORMAT:
        return True
    if fmt_name != "auto":
        return False
    try:
        paths = [resolve_data_path(f, None) for f in files]
    except DataError:
        return False  # the general reader reports the missing file
    flags = [looks_like_rm_bench(p) for p in paths]
    if any(flags) and not all(flags):
        raise DataError(f"--data mixes RM-Bench files ({', '.join(str(f) for f, x in zip(files, flags) if x)}) "
                        f"with other files; evaluate them in separate runs")
    return all(flags)


def score_rm_bench(model, tok, fmt: dict, items: list[dict], score_items, batch_size: int = 32, progress=None):
    """``(chosen, rejected, scored)``: the rewards, ``(prompts, 3)`` each in style order, and what
    ``score_items`` returned. Each prompt goes to the scorer as one row of 6 answers."""
    rows = [{"prompt": it["prompt"], "chosen": it["chosen"][0], "rejected": it["chosen"][1:] + it["rejected"]}
            for it in items]
    s = score_items(model, tok, fmt, rows, batch_size, progress)
    six = np.array([[c, *r] for c, r in zip(s["chosen"], s["rejected"])], dtype=float)
    return six[:, :3], six[:, 3:], s


def _ci(d: dict) -> str:
    return f"{100 * d['estimate']:5.1f}% [{100 * d['low']:5.1f}, {100 * d['high']:5.1f}]"


def _diff(d: dict) -> str:
    return f"{100 * d['estimate']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def summary_lines(res: dict) -> list[str]:
    """The one-screen summary (also the body of ``rm_bench.md``)."""
    f, d = res["formatting"], res["data"]
    how = "chat template" if f["chat_template"] else f"template {json.dumps(f['template'])}"
    cut = ", ".join(f"{k} {v}" for k, v in sorted(f["cut"].items())) or "none"
    lines = [f"model: {res['model']} ({how}, from {f['source']}, max length {f['max_length']}; cut: {cut})",
             f"data: {d['name']} ({d['load']})",
             f"RM-Bench accuracy, {res['level']:.0%} bootstrap CIs over prompts (a comparison is right when the "
             f"chosen answer's reward is strictly above the rejected one's):"]
    w = max(len("domain"), *(len(s) + 2 for s in res["subdomains"]), len("overall"))
    lines.append(f"  {'domain'.ljust(w)}  {'prompts':>7}  " + "  ".join(f"{m:<22}" for m in METRICS).rstrip())

    def row(name: str, b: dict) -> str:
        return f"  {name.ljust(w)}  {b['prompts']:>7}  " + "  ".join(_ci(b[m]) for m in METRICS)

    for dom, b in res["domains"].items():
        lines.append(row(dom, b))
        lines += [row("  " + s, res["subdomains"][s]) for s in res["subdomains"] if s != dom and domain_of(s) == dom]
    n_dom = len(res["domains"])
    lines.append(row("overall", {**res["overall"], "prompts": res["prompts"]})
                 + f"   (mean of {n_dom} domain{'s' if n_dom > 1 else ''})")
    lines.append("  hard: the chosen answer less styled than the rejected one; normal: the same style; "
                 "easy: more styled")
    m = np.asarray(res["matrix"])
    lines.append("accuracy matrix, mean of domains (rows: chosen style, columns: rejected style):")
    lines.append(f"  {'chosen / rejected':<18}" + "".join(f"{s:>10}" for s in STYLES))
    lines += [f"  {STYLES[i]:<18}" + "".join(f"{100 * m[i, j]:9.1f}%" for j in range(3)) for i in range(3)]
    s = res["style"]
    steps = ", ".join(f"{k} {100 * v:.1f}%" for k, v in s["steps"].items())
    lines.append(f"style effect (correctness aside, the more styled of two answers on the same side scores "
                 f"higher): {_ci(s['interval']).strip()} of {s['comparisons']} comparisons (within chosen "
                 f"{100 * s['chosen']:.1f}%, within rejected {100 * s['rejected']:.1f}%; {steps}; 50% = no "
                 f"style preference)")
    lines.append(f"ties: {res['ties']} of {res['comparisons']} chosen-rejected comparisons (a tie counts as wrong)")
    p = res.get("paired")
    if p:
        lines.append(f"paired with {p['other']} (this model minus that one, points, on the {p['prompts']} prompts "
                     f"both scored; CIs over prompts):")
        for dom, b in p["domains"].items():
            lines.append(f"  {dom.ljust(w)}  {b['prompts']:>7}  " + "  ".join(f"{_diff(b[m]):<22}" for m in METRICS))
        lines.append(f"  {'overall'.ljust(w)}  {p['prompts']:>7}  "
                     + "  ".join(f"{_diff(p['overall'][m]):<22}" for m in METRICS))
        if all(p["overall"][m].get("p") is not None for m in METRICS):
            lines.append("  overall, paired sign-flip test p: " + ", ".join(f"{m} {p['overall'][m]['p']:.3g}" for m in METRICS))
    t = res["timings"]
    lines.append(f"scored {t['sequences']} answers in {t['score_s']} s ({t['seq_per_s']}/s) on {res['device']}")
    return lines


def plot_matrices(res: dict, path: Path) -> Path:
    """The 3x3 accuracy matrix as a heat map: one panel per domain, and the mean of domains when
    there are several (matplotlib on the Agg canvas, as ``ser.report.plots``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(f"{d} ({b['prompts']} prompts)", b) for d, b in res["domains"].items()]
    if len(panels) > 1:
        panels.append((f"mean of {len(panels)} domains", {"matrix": res["matrix"], **res["overall"]}))
    fig = Figure(figsize=(4.2 * len(panels), 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, b) in zip(axes, panels):
        m = np.asarray(b["matrix"])
        image = ax.imshow(m, vmin=0, vmax=1, cmap="RdYlGn")
        for i in range(3):
            for j in range(3):
                ax.text(j, i, f"{100 * m[i, j]:.0f}%", ha="center", va="center", fontsize="large")
        ax.set_xticks(range(3), STYLES)
        ax.set_yticks(range(3), STYLES)
        ax.set_xlabel("rejected answer's style")
        ax.set_ylabel("chosen answer's style")
        ax.set_title(f"{title}\nhard {100 * b['hard']['estimate']:.1f}%  normal {100 * b['normal']['estimate']:.1f}%"
                     f"  easy {100 * b['easy']['estimate']:.1f}%", fontsize="medium")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="chosen scored above rejected")
    fig.suptitle(f"RM-Bench: {res['model']} (above the diagonal: hard; below: easy)", fontsize="medium")
    fig.savefig(path, dpi=110)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "x"


def read_scores(folder: str) -> list[dict]:
    f = Path(folder) / "rm_bench_scores.jsonl"
    if not f.exists():
        raise DataError(f"--compare-to {folder}: no rm_bench_scores.jsonl there (pass the --out folder of an "
                        f"earlier RM-Bench evaluation)")
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def cli_rm_bench(args, files: Sequence[str], device: str, load_reward_model, formatting, score_items) -> int:
    """``ser evaluate-rm`` on RM-Bench files; the three functions come from ``ser.rm_eval``."""
    from ser.progress import Progress

    if args.data_config:
        raise ConfigError("RM-Bench files are passed with --data, e.g. --data rm-bench/chat_filtered.json")
    model, tok, meta, path = load_reward_model(args.model, device, args.dtype)
    t0 = time.perf_counter()
    items, report = load_rm_bench(files, None, args.limit)
    if args.sample and args.sample < len(items):
        idx = sorted(np.random.default_rng(args.seed).choice(len(items), size=args.sample, replace=False))
        items = [items[i] for i in idx]
    t_load = time.perf_counter() - t0
    template = args.template.replace("\\n", "\n") if args.template else None  # as typed in a shell: \n
    fmt = formatting(tok, model, meta, template, args.chat_template, args.max_length)
    emit = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    with Progress(every_s=args.progress_every, emit=emit) as progress:
        chosen, rejected, s = score_rm_bench(model, tok, fmt, items, score_items, args.batch_size, progress)
    res = summarize(chosen, rejected, [it["subdomain"] for it in items], args.n_boot, seed=args.seed)
    load = report.line().replace(" pairs,", " prompts,") + (f"; limit {args.limit}" if args.limit else "") + \
        (f"; seeded sample of {len(items)} (seed {args.seed})" if args.sample and args.sample < report.kept else "")
    res = {"model": str(args.model), "model_path": path, "ser_reward": meta, "device": device, "dtype": args.dtype,
           "batch_size": args.batch_size,
           "data": {"name": ", ".join(files), "files": list(files), "format": FORMAT, "load": load,
                    "rows_read": report.rows, "kept": report.kept, "dropped": dict(report.dropped),
                    "limit": args.limit, "sample": args.sample, "seed": args.seed, "evaluated_rows": len(items)},
           **res, "formatting": {**fmt, "cut": s["cut"]}, "timings": {**s["timings"], "load_s": round(t_load, 2)}}
    scores = [{"source": it["source"], "id": it["id"], "subdomain": it["subdomain"], "subset": it["subset"],
               "chosen": c.tolist(), "rejected": r.tolist()} for it, c, r in zip(items, chosen, rejected)]
    other = getattr(args, "compare_to", None)
    if other:
        res["paired"] = {"other": str(other), **paired_by_domain(scores, read_scores(other), args.n_boot,
                                                                 seed=args.seed)}
    lines = summary_lines(res)
    print("\n".join(lines))
    out = Path(args.out) if args.out else Path("outputs") / "rm_eval" / \
        f"{_slug('_'.join(Path(path).parts[-3:]))}__{_slug(Path(files[0]).name if len(files) == 1 else 'rm-bench')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "rm_bench.json").write_text(json.dumps(res, indent=2, default=_jsonable) + "\n")
    (out / "rm_bench_scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scores))
    plot_matrices(res, out / "rm_bench_matrix.png")
    (out / "rm_bench.md").write_text("# ser evaluate-rm: RM-Bench\n\n```\n" + "\n".join(lines) + "\n```\n\n"
                                     "![accuracy matrix](rm_bench_matrix.png)\n\nEvery figure: `rm_bench.json`; the "
                                     "6 rewards of every prompt (chosen, rejected; concise, detailed, markdown): "
                                     "`rm_bench_scores.jsonl`.\n")
    print(f"written: {out}/rm_bench.json, rm_bench.md, rm_bench_scores.jsonl, rm_bench_matrix.png")
    return 0


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return None if isinstance(x, float) and math.isnan(x) else str(x)
