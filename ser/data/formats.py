"""Reading preference data and normalising its rows into pairs: files (:func:`resolve_data_path`
under ``data_dir`` / ``$SER_DATA_DIR``; :func:`read_rows` for jsonl/json, gzipped or not, parquet
and csv) or hub datasets; one row parser per format (:func:`hh_pair` for HH-RLHF transcripts,
:func:`summarize_pair` for summarize-from-feedback comparisons, :func:`explicit_pair` for
``prompt/chosen/rejected`` strings or TRL's conversational lists, and
:func:`ser.data.stack_exchange.question_pairs` for H4 Stack Exchange questions, one row giving
several pairs; :func:`detect_format` picks one from the first row) and :func:`load_pairs`, which
counts what it read, kept and dropped in a :class:`LoadReport`.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ser.data import stack_exchange
from ser.data.splits import _prompt_key
from ser.errors import DataError

log = logging.getLogger("ser.data")

DATA_DIR_ENV = "SER_DATA_DIR"


def resolve_data_path(path: str, data_dir: str | None) -> Path:
    """A relative path is taken under ``data_dir`` (config) or ``$SER_DATA_DIR``."""
    p = Path(os.path.expandvars(os.path.expanduser(path)))
    if not p.is_absolute():
        root = data_dir or os.environ.get(DATA_DIR_ENV)
        if not root:
            raise DataError(
                f"data file '{path}' is relative but no data root is set: "
                f"export {DATA_DIR_ENV}=/path/to/data or pass data.data_dir=/path/to/data"
            )
        p = Path(os.path.expanduser(root)) / p
    if not p.exists():
        raise DataError(f"data file not found: {p} (check data.files or ${DATA_DIR_ENV})")
    return p


def read_rows(path: Path, skipped: Counter) -> Iterator[tuple[int, dict]]:
    """Yield ``(row_number, row)`` from a jsonl/json/parquet/csv file (``.gz`` allowed).

    JSON lines that fail to parse are counted in ``skipped['unparsable']`` and logged with their
    line number; they never stop the load. Parquet and csv go through ``datasets``.
    """
    name = path.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if stem.endswith((".parquet", ".csv")):
        import datasets

        kind = "parquet" if stem.endswith(".parquet") else "csv"
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
        for i, row in enumerate(ds):
            yield i + 1, row
        return
    if not stem.endswith((".jsonl", ".json")):
        raise DataError(f"{path}: unsupported file type; use .jsonl, .json, .parquet or .csv (optionally .gz)")
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
        if head == "[":  # one JSON array
            try:
                rows = json.loads(head + f.read())
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: not valid JSON ({e}); expected a JSON array or JSON lines") from e
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    skipped["unparsable"] += 1
                    log.warning("%s: element %d skipped: not a JSON object", path, i + 1)
                    continue
                yield i + 1, row
            return
        first = head + f.readline()
        for lineno, line in enumerate(_chain([first], f), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                skipped["unparsable"] += 1
                log.warning("%s:%d: skipped a row that is not valid JSON (%s)", path, lineno, e.msg)
                continue
            if not isinstance(row, dict):
                skipped["unparsable"] += 1
                log.warning("%s:%d: skipped a row that is not a JSON object", path, lineno)
                continue
            yield lineno, row


def _chain(first: list[str], rest: Iterable[str]) -> Iterator[str]:
    yield from first
    yield from rest


HH_HUMAN = "\n\nHuman:"
HH_ASSISTANT = "\n\nAssistant:"


def parse_hh_transcript(text: str) -> list[dict]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> ``[{"role": "user", ...}, {"role": "assistant", ...}]``."""
    messages: list[dict] = []
    pos = 0
    markers = ((HH_HUMAN, "user"), (HH_ASSISTANT, "assistant"))
    while True:
        nxt = [(text.find(m, pos), m, role) for m, role in markers]
        nxt = [t for t in nxt if t[0] >= 0]
        if not nxt:
            break
        start, marker, role = min(nxt)
        if messages:
            messages[-1]["content"] = text[pos:start].strip()
        elif text[:start].strip():
            messages.append({"role": "user", "content": text[:start].strip()})
            messages[-1]["content"] = text[:start].strip()
        messages.append({"role": role, "content": ""})
        pos = start + len(marker)
    if messages:
        messages[-1]["content"] = text[pos:].strip()
    elif text.strip():
        messages.append({"role": "user", "content": text.strip()})
    return messages


def hh_pair(row: dict) -> tuple[dict | None, str | None]:
    """Split an HH-RLHF pair at the shared prefix into prompt and the two final assistant turns."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        return None, "missing_field"
    if chosen == rejected:
        return None, "identical"
    cut = chosen.rfind(HH_ASSISTANT)
    if cut < 0:
        return None, "malformed"
    prefix = chosen[: cut + len(HH_ASSISTANT)]
    # either transcript going on with a human turn after the shared prefix: not one final-turn comparison
    if not rejected.startswith(prefix) or HH_HUMAN in rejected[len(prefix):] or HH_HUMAN in chosen[len(prefix):]:
        return None, "diverging_prefix"
    a_c, a_r = chosen[len(prefix):].strip(), rejected[len(prefix):].strip()
    if a_c == a_r:
        return None, "identical"
    if not a_c or not a_r:
        return None, "empty_answer"
    messages = parse_hh_transcript(prefix[: -len(HH_ASSISTANT)])
    if not messages:
        return None, "malformed"
    return {"prompt": messages, "chosen": a_c, "rejected": a_r}, None


def summarize_prompt(info: dict) -> str:
    body = info.get("post") or info.get("article") or ""
    parts = []
    if info.get("subreddit"):
        parts.append(f"SUBREDDIT: r/{info['subreddit']}")
    if info.get("title"):
        parts.append(f"TITLE: {info['title']}")
    parts.append(f"POST: {body}" if info.get("post") else f"ARTICLE: {body}")
    return "\n".join(parts) + "\nTL;DR:"


def summarize_pair(row: dict) -> tuple[dict | None, str | None]:
    info, summaries, choice = row.get("info"), row.get("summaries"), row.get("choice")
    if not isinstance(info, dict) or not isinstance(summaries, list) or len(summaries) != 2 or choice not in (0, 1):
        return None, "missing_field"
    if not (info.get("post") or info.get("article")):
        return None, "missing_field"
    texts = [s.get("text") if isinstance(s, dict) else None for s in summaries]
    if not all(isinstance(t, str) and t.strip() for t in texts):
        return None, "missing_field"
    a_c, a_r = texts[choice].strip(), texts[1 - choice].strip()
    if a_c == a_r:
        return None, "identical"
    key = str(info.get("id") or summarize_prompt(info))
    return {"prompt": [{"role": "user", "content": summarize_prompt(info)}], "chosen": a_c, "rejected": a_r, "key": key}, None


def _message_list(x: Any) -> list[dict] | None:
    if isinstance(x, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in x):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in x]
    return None


def explicit_pair(row: dict) -> tuple[dict | None, str | None]:
    """``prompt/chosen/rejected`` as strings, or TRL conversational lists of messages."""
    chosen, rejected, prompt = row.get("chosen"), row.get("rejected"), row.get("prompt")
    if chosen is None or rejected is None:
        return None, "missing_field"
    if isinstance(chosen, str) and isinstance(rejected, str):
        if not isinstance(prompt, str) or not prompt.strip():
            return None, "missing_field"
        messages = [{"role": "user", "content": prompt}]
        a_c, a_r = chosen.strip(), rejected.strip()
    else:
        mc, mr = _message_list(chosen), _message_list(rejected)
        if mc is None or mr is None:
            return None, "malformed"
        mp = _message_list(prompt) if prompt is not None else None
        if mp is None and isinstance(prompt, str):
            mp = [{"role": "user", "content": prompt}]
        if mp is None:  # implicit prompt: the shared prefix of both conversations
            n = 0
            while n < min(len(mc), len(mr)) - 1 and mc[n] == mr[n]:
                n += 1
            mp, mc, mr = mc[:n], mc[n:], mr[n:]
        if len(mc) != 1 or len(mr) != 1 or mc[0]["role"] != "assistant" or mr[0]["role"] != "assistant":
            return None, "diverging_prefix"
        if not mp:
            return None, "missing_field"
        messages, a_c, a_r = mp, mc[0]["content"].strip(), mr[0]["content"].strip()
    if not a_c or not a_r:
        return None, "empty_answer"
    if a_c == a_r:
        return None, "identical"
    return {"prompt": messages, "chosen": a_c, "rejected": a_r}, None


PARSERS = {"hh": hh_pair, "summarize": summarize_pair, "pairs": explicit_pair,
           stack_exchange.FORMAT: stack_exchange.question_pairs}


def make_parser(fmt: str, options: dict | None = None):
    """The row parser of ``fmt``; ``options`` (``html``, ``pairs_per_prompt``, ``seed``) go to the
    Stack Exchange parser, the only one that takes any."""
    if fmt == stack_exchange.FORMAT and options:
        return functools.partial(PARSERS[fmt], **options)
    return PARSERS[fmt]


def detect_format(row: dict) -> str:
    if stack_exchange.is_question_row(row):
        return stack_exchange.FORMAT
    if "summaries" in row and "choice" in row:
        return "summarize"
    if "prompt" in row or isinstance(row.get("chosen"), list):
        return "pairs"
    if isinstance(row.get("chosen"), str) and "Assistant:" in row["chosen"]:
        return "hh"
    raise DataError(f"cannot detect the data format from columns {sorted(row)}; "
                    f"set data.format to {', '.join(PARSERS)}")


@dataclasses.dataclass
class LoadReport:
    """What a load read, kept and dropped; printed and logged so no row is lost silently."""

    rows: int = 0
    kept: int = 0
    dropped: Counter = dataclasses.field(default_factory=Counter)

    def line(self) -> str:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        return f"read {self.rows} rows, kept {self.kept} pairs, dropped: {drops}"


def parse_rows(sources, fmt: str, report: "LoadReport", columns: dict | None = None, special=None,
               options: dict | None = None):
    """``(item, row, source, rowno)`` for every usable row of ``sources`` (``[(name, rows)]``, rows as
    ``read_rows`` yields them); unusable rows are counted in ``report.dropped`` by reason.

    ``fmt="auto"`` detects each source's format from its first row. ``columns`` renames source
    columns to ours first. ``special(row)`` may take a row of a layout the pair parsers do not read
    (it returns ``(item, why)``, or None to leave the row to them). A parser returns ``(item, why)``,
    or a list of them when one row gives several pairs (a Stack Exchange question); a ``why`` of
    ``(reason, detail)`` is a malformed row, logged with its file and row. ``options`` go to
    :func:`make_parser`.
    """
    for source, rows in sources:
        parser = make_parser(fmt, options) if fmt in PARSERS else None
        for rowno, row in rows:
            report.rows += 1
            if columns:
                row = {**row, **{ours: row.get(theirs) for ours, theirs in columns.items()}}
            got = special(row) if special is not None else None
            if got is None:
                if parser is None:
                    try:
                        parser = make_parser(detect_format(row), options)
                    except DataError as e:
                        raise DataError(f"{source}:{rowno}: {e}") from e
                got = parser(row)
            for item, why in got if isinstance(got, list) else [got]:
                if item is None:
                    if isinstance(why, tuple):
                        why, detail = why
                        log.warning("%s:%d: skipped a malformed row (%s): %s", source, rowno, why, detail)
                    report.dropped[why] += 1
                    continue
                yield item, row, source, rowno


def load_pairs(
    files: Sequence[str] | None,
    fmt: str = "auto",
    data_dir: str | None = None,
    hub_id: str | None = None,
    hub_config: str | None = None,
    hub_split: str = "train",
    hub_data_dir: str | None = None,
    limit: int | None = None,
    columns: dict | None = None,
    options: dict | None = None,
    hub_revision: str | None = None,
) -> tuple[list[dict], LoadReport]:
    """Load and normalise pairs from local ``files`` (preferred) or a hub dataset.

    ``columns`` renames source columns to ours, e.g. ``{"prompt": "question", "chosen": "response_j"}``.
    ``options`` are the Stack Exchange loader's (:func:`ser.data.stack_exchange.options_from_config`).
    """
    report = LoadReport()
    pairs: list[dict] = []
    if files:
        sources = [(str(p), read_rows(p, report.dropped)) for p in (resolve_data_path(f, data_dir) for f in files)]
    elif hub_id:
        import datasets

        try:
            ds = datasets.load_dataset(hub_id, hub_config, split=hub_split, data_dir=hub_data_dir, revision=hub_revision)
        except Exception as e:  # noqa: BLE001 - re-raised with the fix
            raise DataError(
                f"could not load hub dataset '{hub_id}' ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                f"with no network, point data.files at local copies (and ${DATA_DIR_ENV})"
            ) from e
        sources = [(hub_id, ((i + 1, r) for i, r in enumerate(ds)))]
    else:
        raise DataError("no data source: set data.files (local files) or data.hub_id")
    if fmt not in PARSERS and fmt != "auto":
        raise DataError(f"data.format='{fmt}' is not one of auto, {', '.join(PARSERS)}")
    for pair, _, source, rowno in parse_rows(sources, fmt, report, columns, options=options):
        pair.setdefault("key", _prompt_key(pair["prompt"]))
        pair["source"] = f"{Path(source).name}:{rowno}"
        pairs.append(pair)
        if limit and len(pairs) >= limit:
            break
    # unparsable lines never reached the parser: count them as read rows too
    report.rows += report.dropped.get("unparsable", 0)
    report.kept = len(pairs)
    if not pairs:
        raise DataError(f"no usable pairs in {', '.join(s for s, _ in sources)} ({report.line()}); check data.format")
    return pairs, report
