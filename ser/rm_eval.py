"""Evaluating any reward model on a preference file (``ser evaluate-rm``).

The figures themselves are pure functions in :mod:`ser.rm_metrics`; this module is the glue:
:func:`load_items` (any file :func:`ser.data.load_pairs` reads, keeping the ``subset``
column, plus RewardBench 2 rows), :func:`load_reward_model` (an exported SER folder with its
``ser_reward.json``, any sequence-classification folder or hub id), :func:`formatting` (how answers
are turned into tokens), :func:`evaluate` (length-sorted scoring, then
:func:`ser.rm_metrics.summarize`) and :func:`cli_evaluate_rm`.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from ser.errors import ConfigError, DataError, ModelNotFound
from ser.length_control import evaluation_lines
from ser.rm_metrics import summarize
from ser.significance import N_BOOT

CONF = Path(__file__).resolve().parents[1] / "conf"
DEFAULT_TEMPLATE = "Question: {q}\n\nAnswer: {a}"

# --------------------------------------------------------------------------------------------
# Reading rows: every format load_pairs reads, the subset column kept, and RewardBench 2 rows
# --------------------------------------------------------------------------------------------

def _rb2_row(row: dict) -> tuple[dict | None, str | None]:
    """``{"prompt", "chosen": [one answer], "rejected": [answers...]}`` (RewardBench 2's layout)."""
    from ser.data.formats import _message_list

    prompt, chosen, rejected = row.get("prompt"), list(row["chosen"]), list(row["rejected"])
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) and prompt.strip() \
        else _message_list(prompt)
    if not messages:
        return None, "missing_field"
    if len(chosen) != 1:  # RewardBench 2's Ties subset: several right answers, scored by its own rule
        return None, "several_chosen"
    if not rejected:
        return None, "missing_field"
    answers = [a.strip() for a in chosen + rejected]
    if not all(answers):
        return None, "empty_answer"
    if answers[0] in answers[1:]:
        return None, "identical"
    return {"prompt": messages, "chosen": answers[0], "rejected": answers[1:]}, None


def _is_rb2(row: dict) -> bool:
    c, r = row.get("chosen"), row.get("rejected")
    return (isinstance(c, (list, tuple)) and isinstance(r, (list, tuple)) and len(r) > 0
            and all(isinstance(x, str) for x in list(c) + list(r)))


def load_items(files: Sequence[str], fmt: str = "auto", data_dir: str | None = None, limit: int | None = None,
               columns: dict | None = None):
    """Rows of ``files`` as ``{"prompt", "chosen": str, "rejected": [str, ...], "subset"}`` and a
    :class:`ser.data.LoadReport` (dropped rows counted by reason, as ``load_pairs`` counts them)."""
    from ser.data.formats import PARSERS, LoadReport, parse_rows, read_rows, resolve_data_path

    if fmt != "auto" and fmt not in PARSERS:
        raise DataError(f"--format {fmt} is not one of auto, {', '.join(PARSERS)}")
    report, items = LoadReport(), []
    try:
        paths = [resolve_data_path(f, data_dir) for f in files]
    except DataError as e:  # its hint names the training config's key
        raise DataError(str(e).replace("check data.files or", "check the path or")) from e
    sources = [(str(p), read_rows(p, report.dropped)) for p in paths]
    rb2 = lambda row: _rb2_row(row) if _is_rb2(row) else None  # noqa: E731
    try:
        for item, row, source, rowno in parse_rows(sources, fmt, report, columns, special=rb2):
            if not isinstance(item["rejected"], list):  # a pair: one rejected answer
                item = {"prompt": item["prompt"], "chosen": item["chosen"], "rejected": [item["rejected"]]}
            subset = row.get("subset")
            item["subset"] = None if subset is None else str(subset)
            item["source"] = f"{Path(source).name}:{rowno}"
            items.append(item)
            if limit and len(items) >= limit:
                break
    except DataError as e:
        raise DataError(str(e).replace("set data.format", "pass --format")) from e
    report.rows += report.dropped.get("unparsable", 0)
    report.kept = len(items)
    if not items:
        raise DataError(f"no usable pairs in {', '.join(map(str, paths))} ({report.line()}); expected rows of "
                        f"prompt/chosen/rejected, HH-RLHF transcripts, summarize comparisons or RewardBench 2 "
                        f"(chosen and rejected lists); pass --format if it was guessed wrong")
    return items, report


def data_config(name: str) -> dict:
    """``conf/data/NAME.yaml``: the files to evaluate on (its test_files, else its files)."""
    from omegaconf import OmegaConf

    path = CONF / "data" / f"{name}.yaml"
    if name.startswith("_") or not path.exists():
        names = sorted(p.stem for p in (CONF / "data").glob("*.yaml") if not p.stem.startswith("_"))
        raise ConfigError(f"--data-config {name}: no conf/data/{name}.yaml; choose one of {', '.join(names)}")
    c = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    files = c.get("test_files") or c.get("files")
    if not files:
        raise ConfigError(f"--data-config {name} has no local files (hub only: {c.get('hub_id')}); "
                          f"download a copy and pass it with --data FILE")
    return {"files": list(files), "format": c.get("format", "auto"), "columns": c.get("columns")}


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

def resolve_model(source: str) -> str:
    """A model folder (or a SER run folder holding ``ser/reward_model``), else a hub id."""
    p = Path(os.path.expanduser(source))
    if p.is_dir():
        for cand in (p, p / "reward_model", p / "ser" / "reward_model"):
            if (cand / "config.json").exists():
                return str(cand)
        raise ModelNotFound(f"model '{source}': no config.json there (not a Hugging Face model folder); pass an "
                            f"exported reward model such as outputs/<run>/ser/reward_model, or a hub id")
    if p.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1:
        raise ModelNotFound(f"model '{source}': no such folder; pass an exported reward-model folder or a hub id")
    return source


def load_reward_model(source: str, device: str = "cpu", dtype: str = "float32"):
    """``(model, tokenizer, meta, path)``: ``meta`` is ``ser_reward.json`` when the folder has one."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    path = resolve_model(source)

    def failed(e: Exception) -> ModelNotFound:  # any loading failure ends in one line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        offline = " (HF_HUB_OFFLINE is set: download it once with a network, or pass a local folder)" \
            if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") and not Path(path).is_dir() else ""
        return ModelNotFound(f"model '{source}' could not be loaded: {type(e).__name__}: {first}{offline}")

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001
        raise failed(e) from e
    arch = list(config.architectures or [])
    if arch and not any(a.endswith("ForSequenceClassification") for a in arch):
        raise ModelNotFound(f"model '{source}' is a {arch[0]}, not a sequence-classification reward model "
                            f"(its score head would be random); pass a reward model")
    if getattr(config, "num_labels", 1) != 1:
        raise ModelNotFound(f"model '{source}' has {config.num_labels} outputs; a reward model has one")
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=getattr(torch, dtype), output_loading_info=True)
    except Exception as e:  # noqa: BLE001
        raise failed(e) from e
    head = [k for k in info.get("missing_keys", []) if k.split(".")[0] in ("score", "classifier")]
    if head:
        raise ModelNotFound(f"model '{source}' has no trained score head ({', '.join(sorted(head)[:2])} missing); "
                            f"pass a reward model")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if tok.pad_token is None:
        raise ModelNotFound(f"model '{source}': its tokenizer has no pad, eos or unk token")
    tok.padding_side = "right"
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    meta_file = Path(path) / "ser_reward.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else None
    return model.to(device).eval().requires_grad_(False), tok, meta, path


def formatting(tok, model, meta: dict | None, template: str | None = None, chat: bool = False,
               max_length: int | None = None) -> dict:
    """How answers are formatted: flags first, then the export's ``ser_reward.json``, then the
    tokenizer's chat template when it has one, else the plain template."""
    has_chat = bool(getattr(tok, "chat_template", None))
    if chat and not has_chat:
        raise ConfigError("--chat-template: this model's tokenizer has no chat template; pass --template instead")
    if template or chat:
        use_chat, tpl, source = chat, template or DEFAULT_TEMPLATE, "--chat-template" if chat else "--template"
    elif meta:
        use_chat = bool(meta.get("use_chat_template", True)) and has_chat
        tpl, source = meta.get("template", DEFAULT_TEMPLATE), "ser_reward.json"
    else:
        use_chat, tpl, source = has_chat, DEFAULT_TEMPLATE, "the tokenizer" if has_chat else "the default"
    limits = [int(x) for x in (getattr(tok, "model_max_length", None),
                               getattr(model.config, "max_position_embeddings", None)) if x and int(x) < 1_000_000]
    length = max_length or (meta or {}).get("max_length") or (min(limits) if limits else 512)
    return {"chat_template": use_chat, "template": None if use_chat else tpl, "max_length": int(length),
            "source": source}


# --------------------------------------------------------------------------------------------
# Scoring and the command
# --------------------------------------------------------------------------------------------

def score_items(model, tok, fmt: dict, items: list[dict], batch_size: int = 32, progress=None) -> dict:
    """Rewards of every answer (length-sorted batches), and how many were cut to ``max_length``."""
    from ser.data import Formatter
    from ser.model import score_sequences

    f = Formatter(tok, fmt["max_length"], fmt["template"] or DEFAULT_TEMPLATE, fmt["chat_template"], "truncate")
    seqs, cut, t0 = [], Counter(), time.perf_counter()
    for k, it in enumerate(items):
        for answer in [it["chosen"], *it["rejected"]]:
            ids, why = f.encode(it["prompt"], answer)
            seqs.append(ids)
            if why:
                cut[why] += 1
        if progress is not None and k % 200 == 0:
            progress.set_status(f"[evaluate-rm] tokenizing: row {k}/{len(items)}")
    t1 = time.perf_counter()
    on_batch = progress.scorer("evaluate-rm", "answers") if progress is not None else None
    bar = progress is not None and not progress.enabled and sys.stderr.isatty()  # a terminal: a bar instead
    scores = score_sequences(model, seqs, tok.pad_token_id, batch_size=batch_size, on_batch=on_batch, progress=bar)
    t2 = time.perf_counter()
    chosen, rejected, pos = [], [], 0
    for it in items:
        chosen.append(float(scores[pos]))
        rejected.append([float(x) for x in scores[pos + 1: pos + 1 + len(it["rejected"])]])
        pos += 1 + len(it["rejected"])
    return {"chosen": chosen, "rejected": rejected, "cut": dict(cut),
            "timings": {"tokenize_s": round(t1 - t0, 2), "score_s": round(t2 - t1, 2), "sequences": len(seqs),
                        "tokens": int(sum(map(len, seqs))),
                        "seq_per_s": round(len(seqs) / max(t2 - t1, 1e-9), 1)}}


def answer_tokens(tok, items: list[dict]) -> tuple[list[int], list[list[int]]]:
    """Tokens of each answer alone (this tokenizer, no special tokens), shaped like the rows."""
    count = lambda texts: [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []  # noqa: E731
    chosen = count([it["chosen"] for it in items])
    flat = count([r for it in items for r in it["rejected"]])
    rejected, pos = [], 0
    for it in items:
        rejected.append(flat[pos:pos + len(it["rejected"])])
        pos += len(it["rejected"])
    return chosen, rejected


def evaluate(model, tok, fmt: dict, items: list[dict], batch_size: int = 32, n_boot: int = N_BOOT, seed: int = 0,
             progress=None, length_direction: dict | None = None) -> dict:
    """Score ``items`` and summarize; ``length_direction``: the training labels' length rule per
    unit (an export's ``ser_reward.json``), for the length-only baseline."""
    s = score_items(model, tok, fmt, items, batch_size, progress)
    tc, tr = answer_tokens(tok, items)
    res = summarize(s["chosen"], s["rejected"], [it["chosen"] for it in items], [it["rejected"] for it in items],
                    [it["subset"] for it in items], n_boot=n_boot, seed=seed, chosen_tokens=tc, rejected_tokens=tr,
                    length_direction=length_direction)
    res["formatting"] = {**fmt, "cut": s["cut"]}
    res["timings"] = s["timings"]
    res["scores"] = [{"source": it["source"], "subset": it["subset"], "chosen": c, "rejected": r}
                     for it, c, r in zip(items, s["chosen"], s["rejected"])]
    return res


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def summary_lines(res: dict) -> list[str]:
    """The one-screen summary (also the body of ``rm_eval.md``)."""
    a, d, f = res["accuracy"], res["data"], res["formatting"]
    how = "chat template" if f["chat_template"] else f"template {json.dumps(f['template'])}"
    cut = ", ".join(f"{k} {v}" for k, v in sorted(f["cut"].items())) or "none"
    unit = f"{res['pairs']} pairs" + (f" from {res['rows']} rows, rows resampled" if a["resampled"] == "rows" else "")
    lines = [f"model: {res['model']} ({how}, from {f['source']}, max length {f['max_length']}; cut: {cut})",
             f"data: {d['name']} ({d['load']})",
             f"pairwise accuracy: {_pct(a['estimate'])} [{_pct(a['low'])}, {_pct(a['high'])}] "
             f"({a['level']:.0%} bootstrap CI, {unit}; ties {res['ties']})"]
    b = res["best_of_n"]
    if b:
        lines.append(f"best-of-N accuracy (chosen above all {'/'.join(str(n - 1) for n in b['answers_per_row'])} "
                     f"rejected): {_pct(b['estimate'])} [{_pct(b['low'])}, {_pct(b['high'])}] ({b['n']} rows; "
                     f"chance {_pct(b['chance'])})")
    if res["subsets"]:
        w = max(len("subset"), *(len(s) for s in res["subsets"]))
        lines.append(f"  {'subset'.ljust(w)}  {'n':>5}  accuracy  kind")
        lines += [f"  {s.ljust(w)}  {v['n']:>5}  {_pct(v['accuracy']):>8}  {v['kind']}"
                  for s, v in res["subsets"].items()]
        lines.append(f"mean over subsets: {_pct(res['subset_mean'])}")
    rb = res["rewardbench"]
    if rb:
        lines.append("RewardBench sections: " + ", ".join(f"{k} {_pct(v)}" for k, v in rb["sections"].items())
                     + f"; score {_pct(rb['score'])}")
    lb = res["length_bias"]
    lines.append(f"length bias (characters): chosen longer {_pct(lb['chosen_longer']['accuracy'])} of "
                 f"{lb['chosen_longer']['n']}, chosen shorter {_pct(lb['chosen_shorter']['accuracy'])} of "
                 f"{lb['chosen_shorter']['n']}, same length {lb['same_length']['n']}; "
                 f"prefers the longer answer in {_pct(lb['prefers_longer'])}")
    for unit, report in (res.get("length_control") or {}).items():
        lines += evaluation_lines(report, unit)
    c = res["calibration"]
    lines.append(f"calibration of sigmoid(r_chosen - r_rejected): ECE {c['ece']:.3f} ({c['bins']} bins over "
                 f"confidence 0.5-1; mean confidence {_pct(c['mean_confidence'])} vs accuracy {_pct(c['accuracy'])})")
    t = res["timings"]
    lines.append(f"scored {t['sequences']} answers in {t['score_s']} s ({t['seq_per_s']}/s) on {res['device']}")
    return lines


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "x"


def cli_evaluate_rm(args) -> int:
    import torch

    from ser.progress import Progress

    if bool(args.data) == bool(args.data_config):
        raise ConfigError("pass one of --data FILE or --data-config NAME")
    for flag in ("limit", "sample", "batch_size", "n_boot", "max_length"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} {value} must be >= 1")
    if args.data_config:
        spec = data_config(args.data_config)
        name = args.data_config
    else:
        spec = {"files": list(args.data), "format": "auto", "columns": None}
        name = ", ".join(args.data)
    fmt_name = args.format or spec["format"]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device here; pass --device cpu")
    from ser.rm_bench_eval import cli_rm_bench, is_rm_bench
    if is_rm_bench(fmt_name, spec["files"]):  # RM-Bench: its 3x3 style matrix (ser/rm_bench_eval.py)
        return cli_rm_bench(args, spec["files"], device, load_reward_model, formatting, score_items)
    model, tok, meta, path = load_reward_model(args.model, device, args.dtype)
    t0 = time.perf_counter()
    items, report = load_items(spec["files"], fmt_name, None, args.limit, spec["columns"])
    if args.sample and args.sample < len(items):
        idx = sorted(np.random.default_rng(args.seed).choice(len(items), size=args.sample, replace=False))
        items = [items[i] for i in idx]
    t_load = time.perf_counter() - t0
    template = args.template.replace("\\n", "\n") if args.template else None  # as typed in a shell: \n
    fmt = formatting(tok, model, meta, template, args.chat_template, args.max_length)
    emit = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    with Progress(every_s=args.progress_every, emit=emit) as progress:
        res = evaluate(model, tok, fmt, items, args.batch_size, args.n_boot, args.seed, progress,
                       length_direction=(meta or {}).get("length_direction"))
    load = report.line() + (f"; limit {args.limit}" if args.limit else "") + \
        (f"; seeded sample of {len(items)} (seed {args.seed})" if args.sample and args.sample < report.kept else "")
    res = {"model": str(args.model), "model_path": path, "ser_reward": meta, "device": device, "dtype": args.dtype,
           "batch_size": args.batch_size,
           "data": {"name": name, "files": spec["files"], "format": fmt_name, "load": load, "rows_read": report.rows,
                    "kept": report.kept, "dropped": dict(report.dropped), "limit": args.limit, "sample": args.sample,
                    "seed": args.seed, "evaluated_rows": len(items)}, **res}
    res["timings"]["load_s"] = round(t_load, 2)
    lines = summary_lines(res)
    print("\n".join(lines))
    out = Path(args.out) if args.out else Path("outputs") / "rm_eval" / \
        f"{_slug('_'.join(Path(path).parts[-3:]))}__{_slug(args.data_config or Path(args.data[0]).name)}"
    out.mkdir(parents=True, exist_ok=True)
    scores = res.pop("scores")
    (out / "rm_eval.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "rm_eval_scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scores))
    (out / "rm_eval.md").write_text("# ser evaluate-rm\n\n```\n" + "\n".join(lines) + "\n```\n\nEvery figure: "
                                    "`rm_eval.json`; the reward of every answer: `rm_eval_scores.jsonl`.\n")
    print(f"written: {out}/rm_eval.json, rm_eval.md, rm_eval_scores.jsonl")
    return 0


def add_args(p) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", nargs="+", metavar="FILE", help="preference file(s): jsonl/json/parquet/csv (.gz ok) in "
                     "any format ser reads (HH-RLHF, summarize, prompt/chosen/rejected, conversational), with an "
                     "optional subset column (RewardBench), or RewardBench 2 rows (chosen and rejected lists); "
                     "relative paths are taken under $SER_DATA_DIR")
    src.add_argument("--data-config", metavar="NAME", help="a conf/data option (hh_rlhf, ultrafeedback, ...): its "
                     "test_files, else its files")
    p.add_argument("--model", required=True, help="reward model: a folder exported by ser (formatting read from its "
                   "ser_reward.json), a SER run folder, any sequence-classification folder or hub id")
    p.add_argument("--format", default=None,
                   choices=["auto", "hh", "summarize", "pairs", "stack_exchange", "rm-bench"],
                   help="row format (default: auto, or the data config's); rm-bench: RM-Bench's 3 chosen and 3 "
                   "rejected answers per prompt, scored by its 3x3 style matrix (detected by itself)")
    p.add_argument("--limit", type=int, default=None, help="the first N usable rows")
    p.add_argument("--sample", type=int, default=None, help="a seeded random sample of N usable rows")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample and of the bootstrap (default 0)")
    tpl = p.add_mutually_exclusive_group()
    tpl.add_argument("--template", default=None,
                     help=f"plain template with {{q}} and {{a}} (\\n: a newline), e.g. {json.dumps(DEFAULT_TEMPLATE)}")
    tpl.add_argument("--chat-template", action="store_true", help="format with the tokenizer's chat template")
    p.add_argument("--max-length", type=int, default=None, help="tokens per answer with its prompt (prompt cut from "
                   "the left); default: the export's, else the model's limit")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--n-boot", type=int, default=N_BOOT, help=f"bootstrap resamples (default {N_BOOT})")
    p.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines (to stderr) "
                   "when stdout is not a terminal (default 30)")
    p.add_argument("--out", metavar="DIR", default=None, help="where rm_eval.json, rm_eval.md and "
                   "rm_eval_scores.jsonl (the reward of every answer) go (default: "
                   "outputs/rm_eval/<model>__<data>)")
    p.add_argument("--compare-to", metavar="DIR", default=None, help="RM-Bench only: the --out folder of an earlier "
                   "RM-Bench evaluation of another model; adds the paired differences on the same prompts")
