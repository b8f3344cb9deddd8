"""Tests for ser.data: real preference files, the three formats, local file types, splits,
formatting with the real tokenizers, batching and the DataModule.

The real files live in ``$SER_DATA_DIR`` (see /work/shared/data/README.md); tests that need them are
skipped with a clear reason when it is unset. Made-up files go under ``tmp_path``.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ser.data import (
    DataError,
    Formatter,
    PairCollator,
    PreferenceDataModule,
    detect_format,
    explicit_pair,
    hh_pair,
    length_grouped_batches,
    load_pairs,
    pad_batch,
    render_plain_prompt,
    split_pairs,
    summarize_pair,
)

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("SER_DATA_DIR")
needs_data = pytest.mark.skipif(
    not DATA_DIR or not Path(DATA_DIR).is_dir(),
    reason="SER_DATA_DIR is not set (or not a directory): these tests read the real preference files "
    "(export SER_DATA_DIR=/work/shared/data)",
)


def _tokenizer(conf_name: str):
    from ser.model import ModelNotFound, load_tokenizer

    try:
        return load_tokenizer(OmegaConf.load(ROOT / "conf" / "model" / conf_name))
    except ModelNotFound as e:  # no hub and no offline copy installed
        pytest.skip(f"tokenizer for conf/model/{conf_name} is not available offline: {e}")


@pytest.fixture(scope="module")
def minilm():
    return _tokenizer("minilm.yaml")


@pytest.fixture(scope="module")
def smollm2():
    # the first load converts a GGUF (~20 s), cached afterwards
    return _tokenizer("smollm2_135m.yaml")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def core(pairs):
    """A pair without its ``source`` (file name and row number), for comparing loads."""
    return [{k: v for k, v in p.items() if k != "source"} for p in pairs]


# --------------------------------------------------------------------------------------------
# Real files: exact counts (these numbers document the data)
# --------------------------------------------------------------------------------------------

# path: (format, rows, kept, dropped, distinct prompt keys)
REAL = {
    # 4 chosen transcripts end in an empty assistant turn; 4 differ before the last assistant turn
    # (a "  Human:" without the "\n\n" inside a turn). No identical pair in this file.
    "hh-rlhf/harmless-base/test.jsonl.gz": ("hh", 2312, 2304, {"empty_answer": 4, "diverging_prefix": 4}, 2302),
    "summarize-from-feedback/comparisons/batch13.json": ("summarize", 1097, 1097, {}, 905),
    "summarize-from-feedback/comparisons/batch18.json": ("summarize", 674, 674, {}, 110),
    "ultrafeedback-binarized/train.jsonl": ("pairs", 1000, 994, {"identical": 4, "empty_answer": 2}, 994),
    "ultrafeedback-binarized/test.jsonl": ("pairs", 200, 199, {"identical": 1}, 199),
}


@needs_data
@pytest.mark.parametrize("path", sorted(REAL))
def test_real_file_counts_and_autodetect(path):
    fmt, rows, kept, dropped, n_keys = REAL[path]
    pairs, rep = load_pairs([path], fmt)
    assert rep.rows == rows
    assert rep.kept == kept == len(pairs)
    assert dict(rep.dropped) == dropped
    assert rep.kept + sum(rep.dropped.values()) == rep.rows
    assert len({p["key"] for p in pairs}) == n_keys
    # every kept pair is usable: a non-empty prompt of messages, two different non-empty answers
    for p in pairs:
        assert p["prompt"] and all(m["role"] in ("user", "assistant", "system") for m in p["prompt"])
        assert p["chosen"] and p["rejected"] and p["chosen"] != p["rejected"]
        assert p["chosen"] == p["chosen"].strip() and p["rejected"] == p["rejected"].strip()
        assert p["source"].startswith(Path(path).name + ":")
    # auto-detection picks the same parser: same pairs, same report
    auto, rep_auto = load_pairs([path], "auto")
    assert auto == pairs
    assert (rep_auto.rows, rep_auto.kept, dict(rep_auto.dropped)) == (rows, kept, dropped)


@needs_data
def test_real_hh_dropped_rows_are_the_known_ones():
    pairs, _ = load_pairs(["hh-rlhf/harmless-base/test.jsonl.gz"], "hh")
    lines = {int(p["source"].rsplit(":", 1)[1]) for p in pairs}
    missing = set(range(1, 2313)) - lines
    # 87/517/926/1104: chosen ends in an empty "Assistant:" turn; 1255/1689/1953/2037: diverging prefix
    assert missing == {87, 517, 926, 1104, 1255, 1689, 1953, 2037}
    # HH prompts start with the human and end with the human turn the answers reply to
    assert all(p["prompt"][0]["role"] == "user" and p["prompt"][-1]["role"] == "user" for p in pairs)


@needs_data
def test_real_summarize_both_files_and_post_keys():
    files = ["summarize-from-feedback/comparisons/batch13.json", "summarize-from-feedback/comparisons/batch18.json"]
    pairs, rep = load_pairs(files, "summarize")
    assert (rep.rows, rep.kept, dict(rep.dropped)) == (1097 + 674, 1771, {})
    # 905 + 110 posts, 12 of them compared in both batches
    assert len({p["key"] for p in pairs}) == 1003
    assert all(p["key"].startswith("t3_") for p in pairs)
    assert all(p["prompt"][0]["content"].endswith("TL;DR:") for p in pairs)


@needs_data
def test_real_ultrafeedback_train_and_test_prompts_are_disjoint():
    train, _ = load_pairs(["ultrafeedback-binarized/train.jsonl"], "pairs")
    test, _ = load_pairs(["ultrafeedback-binarized/test.jsonl"], "pairs")
    assert not {p["key"] for p in train} & {p["key"] for p in test}
    s = split_pairs(train, 0.15, 0.1, 0.0, seed=0, test_pairs=test)
    assert s.test is test
    assert sum(s.counts().values()) == len(train) + len(test)


@pytest.fixture(scope="module")
def alpaca():
    if not DATA_DIR or not Path(DATA_DIR).is_dir():
        pytest.skip("SER_DATA_DIR is not set (or not a directory): "
                    "the alpaca-eval file is one of the real preference files")
    return load_pairs(["alpaca-eval-gpt4/pairs.jsonl.gz"], "auto")  # the one full read of the 40k file


@pytest.mark.integration
def test_real_alpaca_counts(alpaca):
    pairs, rep = alpaca
    assert (rep.rows, rep.kept, dict(rep.dropped)) == (40000, 40000, {})
    assert rep.kept + sum(rep.dropped.values()) == rep.rows
    assert len({p["key"] for p in pairs}) == 805  # 805 distinct AlpacaEval prompts
    # auto-detected as explicit pairs: the explicit format gives the same first rows
    head, rep_head = load_pairs(["alpaca-eval-gpt4/pairs.jsonl.gz"], "pairs", limit=300)
    assert rep_head.rows == 300
    assert head == pairs[:300]
    # prompt-level split of the big set: no prompt in two splits
    s = split_pairs(pairs, 0.15, 0.1, 0.2, seed=0)
    keysets = [{p["key"] for p in part} for part in (s.labeled, s.pool, s.val, s.test)]
    assert sum(len(k) for k in keysets) == 805
    assert sum(s.counts().values()) == 40000


# --------------------------------------------------------------------------------------------
# HH-RLHF transcripts
# --------------------------------------------------------------------------------------------

PREFIX = "\n\nHuman:  Hi there \n\nAssistant: Hello! How can I help?\n\nHuman: What is 2+2? \n\nAssistant:"


def test_hh_pair_splits_multi_turn_transcript():
    pair, why = hh_pair({"chosen": PREFIX + " It is 4. ", "rejected": PREFIX + "  Five."})
    assert why is None
    assert pair["prompt"] == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert pair["chosen"] == "It is 4."
    assert pair["rejected"] == "Five."


def test_hh_pair_malformed_rows():
    assert hh_pair({"chosen": PREFIX + " 4", "rejected": PREFIX + " 4"}) == (None, "identical")
    # the final turns differ only in surrounding whitespace -> still identical
    assert hh_pair({"chosen": PREFIX + " 4", "rejected": PREFIX + " 4  "}) == (None, "identical")
    # differs before the last assistant turn
    other = "\n\nHuman: Hi there\n\nAssistant: Go away.\n\nHuman: What is 2+2?\n\nAssistant:"
    assert hh_pair({"chosen": PREFIX + " 4", "rejected": other + " 5"}) == (None, "diverging_prefix")
    # rejected goes on with another human turn after the shared prefix
    assert hh_pair({"chosen": PREFIX + " 4", "rejected": PREFIX + " 5\n\nHuman: ok?"}) == (None, "diverging_prefix")
    assert hh_pair({"chosen": PREFIX + " 4"}) == (None, "missing_field")
    assert hh_pair({"chosen": None, "rejected": PREFIX + " 4"}) == (None, "missing_field")
    assert hh_pair({"chosen": PREFIX + " ", "rejected": PREFIX + " 4"}) == (None, "empty_answer")
    assert hh_pair({"chosen": "no markers at all", "rejected": "something else"}) == (None, "malformed")
    assert hh_pair({"chosen": "no markers at all", "rejected": "no markers at all"}) == (None, "identical")


def test_hh_pair_rejects_chosen_with_trailing_human_turn():
    pair, why = hh_pair({"chosen": PREFIX + " 4\n\nHuman: thanks", "rejected": PREFIX + " 5"})
    assert pair is None and why == "diverging_prefix"


def test_hh_via_load_pairs_groups_same_prompt(tmp_path):
    f = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": PREFIX + " 4", "rejected": PREFIX + " 5"},
        {"chosen": PREFIX + " four", "rejected": PREFIX + " 22"},
        {"chosen": PREFIX + " 4", "rejected": PREFIX + " 4"},
        {"chosen": "\n\nHuman: Other?\n\nAssistant: A", "rejected": "\n\nHuman: Other?\n\nAssistant: B"},
    ])
    pairs, rep = load_pairs([str(f)], "auto")
    assert detect_format({"chosen": PREFIX + " 4", "rejected": PREFIX + " 5"}) == "hh"
    assert (rep.rows, rep.kept, dict(rep.dropped)) == (4, 3, {"identical": 1})
    assert pairs[0]["key"] == pairs[1]["key"] != pairs[2]["key"]
    assert [p["source"] for p in pairs] == ["hh.jsonl:1", "hh.jsonl:2", "hh.jsonl:4"]


# --------------------------------------------------------------------------------------------
# summarize-from-feedback
# --------------------------------------------------------------------------------------------

def summ_row(choice, post_id="t3_abc", texts=(" first summary ", "second summary"), post="My post body."):
    return {"info": {"id": post_id, "post": post, "title": "A title", "subreddit": "relationships"},
            "summaries": [{"text": texts[0], "policy": "p0"}, {"text": texts[1], "policy": "p1"}],
            "choice": choice, "worker": "w", "batch": "batch13", "split": "valid2", "extra": {"confidence": 7}}


def test_summarize_pair_prompt_choice_and_key():
    pair, why = summarize_pair(summ_row(1))
    assert why is None
    (msg,) = pair["prompt"]
    assert msg["role"] == "user"
    content = msg["content"]
    assert "SUBREDDIT: r/relationships" in content and "TITLE: A title" in content and "POST: My post body." in content
    assert content.endswith("TL;DR:")
    assert content.index("SUBREDDIT") < content.index("TITLE") < content.index("POST") < content.index("TL;DR:")
    assert (pair["chosen"], pair["rejected"]) == ("second summary", "first summary")
    assert pair["key"] == "t3_abc"
    pair0, _ = summarize_pair(summ_row(0))
    assert (pair0["chosen"], pair0["rejected"]) == ("first summary", "second summary")


def test_summarize_pair_malformed_rows():
    assert summarize_pair(summ_row(2)) == (None, "missing_field")
    assert summarize_pair({k: v for k, v in summ_row(0).items() if k != "choice"}) == (None, "missing_field")
    assert summarize_pair(summ_row(0, post="")) == (None, "missing_field")
    row = summ_row(0)
    row["summaries"] = row["summaries"][:1]
    assert summarize_pair(row) == (None, "missing_field")
    assert summarize_pair(summ_row(0, texts=("same", " same "))) == (None, "identical")


def test_summarize_load_pairs_keys_by_post(tmp_path):
    f = write_jsonl(tmp_path / "batch.json", [summ_row(0), summ_row(1, texts=("x", "y")), summ_row(0, post_id="t3_zzz")])
    pairs, rep = load_pairs([str(f)])  # auto
    assert detect_format(summ_row(0)) == "summarize"
    assert [p["key"] for p in pairs] == ["t3_abc", "t3_abc", "t3_zzz"]
    assert [p["chosen"] for p in pairs] == ["first summary", "y", "first summary"]


# --------------------------------------------------------------------------------------------
# Explicit pairs (strings and TRL conversational)
# --------------------------------------------------------------------------------------------

def U(c):
    return {"role": "user", "content": c}


def A(c):
    return {"role": "assistant", "content": c}


def test_explicit_pair_strings():
    pair, why = explicit_pair({"prompt": "What is 2+2?", "chosen": " 4 ", "rejected": "5"})
    assert why is None
    assert pair == {"prompt": [U("What is 2+2?")], "chosen": "4", "rejected": "5"}


def test_explicit_pair_conversational_explicit_prompt():
    pair, why = explicit_pair({"prompt": [U("hi"), A("hello"), U("2+2?")], "chosen": [A("4")], "rejected": [A("5")]})
    assert why is None
    assert pair == {"prompt": [U("hi"), A("hello"), U("2+2?")], "chosen": "4", "rejected": "5"}
    # a string prompt with conversational answers becomes one user message
    pair, _ = explicit_pair({"prompt": "2+2?", "chosen": [A("4")], "rejected": [A("5")]})
    assert pair["prompt"] == [U("2+2?")]


def test_explicit_pair_conversational_implicit_prompt():
    pair, why = explicit_pair({"chosen": [U("hi"), A("hello"), U("2+2?"), A("4")],
                               "rejected": [U("hi"), A("hello"), U("2+2?"), A("5")]})
    assert why is None
    assert pair == {"prompt": [U("hi"), A("hello"), U("2+2?")], "chosen": "4", "rejected": "5"}
    assert detect_format({"chosen": [U("q"), A("a")], "rejected": [U("q"), A("b")]}) == "pairs"
    # conversations that part before the last assistant turn
    assert explicit_pair({"chosen": [U("hi"), A("hello"), U("q"), A("4")],
                          "rejected": [U("hi"), A("bye"), U("q"), A("5")]}) == (None, "diverging_prefix")


def test_explicit_pair_malformed_rows():
    assert explicit_pair({"prompt": "q", "chosen": "same", "rejected": " same"}) == (None, "identical")
    assert explicit_pair({"chosen": [U("q"), A("x")], "rejected": [U("q"), A("x")]}) == (None, "identical")
    assert explicit_pair({"prompt": "q", "chosen": "a"}) == (None, "missing_field")
    assert explicit_pair({"chosen": "a", "rejected": "b"}) == (None, "missing_field")  # no prompt
    assert explicit_pair({"prompt": "q", "chosen": "", "rejected": "b"}) == (None, "empty_answer")
    assert explicit_pair({"prompt": "q", "chosen": [{"text": "a"}], "rejected": [A("b")]}) == (None, "malformed")


def test_columns_renaming(tmp_path):
    rows = [{"question": f"Q{i}?", "response_j": f"good {i}", "response_k": f"bad {i}", "qid": i} for i in range(3)]
    f = write_jsonl(tmp_path / "se.jsonl", rows)
    cols = {"prompt": "question", "chosen": "response_j", "rejected": "response_k"}
    pairs, rep = load_pairs([str(f)], "auto", columns=cols)
    assert (rep.rows, rep.kept) == (3, 3)
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
        ([U(f"Q{i}?")], f"good {i}", f"bad {i}") for i in range(3)]
    # without the renaming the format cannot be detected; the error names the file and row
    with pytest.raises(DataError, match=r"se\.jsonl:1: cannot detect the data format from columns"):
        load_pairs([str(f)], "auto")


# --------------------------------------------------------------------------------------------
# Local file types and load errors
# --------------------------------------------------------------------------------------------

ROWS = [
    {"prompt": "Name a colour.", "chosen": "Blue, like the sky.", "rejected": "Seven."},
    {"prompt": "Say \"hi\", then stop.", "chosen": "hi", "rejected": "Hello there, how are you?"},
    {"prompt": "Name a colour.", "chosen": "Red", "rejected": "A table"},
    {"prompt": "Two lines?", "chosen": "line one\nline two", "rejected": "one line"},
]


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """Keep the `datasets` cache of parquet/csv loads inside tmp_path."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def test_local_formats_load_the_same_pairs(tmp_path, hf_cache):
    import pandas as pd

    files = {
        "jsonl": write_jsonl(tmp_path / "p.jsonl", ROWS),
        "jsonl.gz": tmp_path / "p.jsonl.gz",
        "json": tmp_path / "p.json",
        "json.gz": tmp_path / "p.json.gz",
        "parquet": tmp_path / "p.parquet",
        "csv": tmp_path / "p.csv",
    }
    with gzip.open(files["jsonl.gz"], "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in ROWS)
    files["json"].write_text("  \n" + json.dumps(ROWS, indent=1), encoding="utf-8")  # leading whitespace
    with gzip.open(files["json.gz"], "wt", encoding="utf-8") as f:
        json.dump(ROWS, f)
    pd.DataFrame(ROWS).to_parquet(files["parquet"], index=False)
    pd.DataFrame(ROWS).to_csv(files["csv"], index=False)

    ref, rep = load_pairs([str(files["jsonl"])])
    assert (rep.rows, rep.kept, dict(rep.dropped)) == (4, 4, {})
    assert [(p["chosen"], p["rejected"]) for p in ref] == [(r["chosen"], r["rejected"]) for r in ROWS]
    assert [p["prompt"] for p in ref] == [[U(r["prompt"])] for r in ROWS]
    assert ref[0]["key"] == ref[2]["key"] != ref[1]["key"]
    for name, path in files.items():
        pairs, rep = load_pairs([str(path)], "auto")
        assert core(pairs) == core(ref), name
        assert [p["source"] for p in pairs] == [f"{path.name}:{i}" for i in range(1, 5)], name
        assert (rep.rows, rep.kept) == (4, 4), name


def test_malformed_json_line_is_skipped_and_counted(tmp_path):
    lines = [json.dumps(ROWS[0]), '{"prompt": "broken", "chosen": ', "", json.dumps(ROWS[1]),
             "[1, 2]", json.dumps(ROWS[3])]
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    pairs, rep = load_pairs([str(f)], "pairs")
    assert [p["chosen"] for p in pairs] == [ROWS[0]["chosen"], ROWS[1]["chosen"], ROWS[3]["chosen"]]
    assert [p["source"] for p in pairs] == ["bad.jsonl:1", "bad.jsonl:4", "bad.jsonl:6"]
    assert rep.dropped["unparsable"] == 2  # the broken line and the line that is not an object
    assert rep.kept == 3
    assert "unparsable=2" in rep.line()


def test_report_rows_include_unparsable_lines(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps(ROWS[0]) + "\n{oops\n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    pairs, rep = load_pairs([str(f)], "pairs")
    assert rep.kept + sum(rep.dropped.values()) == rep.rows == 3


def test_json_array_non_object_element_is_counted_not_crashing(tmp_path):
    f = tmp_path / "arr.json"
    f.write_text(json.dumps([ROWS[0], None, ROWS[1]]), encoding="utf-8")
    pairs, rep = load_pairs([str(f)], "pairs")
    assert len(pairs) == 2 and rep.dropped["unparsable"] == 1


def test_limit_single_file(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", ROWS)
    pairs, rep = load_pairs([str(f)], limit=2)
    assert len(pairs) == rep.kept == 2
    assert rep.rows == 2


def test_limit_across_files(tmp_path):
    f1 = write_jsonl(tmp_path / "a.jsonl", ROWS)
    f2 = write_jsonl(tmp_path / "b.jsonl", ROWS)
    pairs, rep = load_pairs([str(f1), str(f2)], limit=2)
    assert len(pairs) == 2


def test_load_errors(tmp_path, monkeypatch):
    missing = tmp_path / "nope" / "missing.jsonl"
    with pytest.raises(DataError) as e:
        load_pairs([str(missing)])
    assert str(missing) in str(e.value)

    monkeypatch.delenv("SER_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="SER_DATA_DIR"):
        load_pairs(["relative/pairs.jsonl"])
    # the same relative path resolves under data_dir
    (tmp_path / "relative").mkdir()
    write_jsonl(tmp_path / "relative" / "pairs.jsonl", ROWS)
    pairs, _ = load_pairs(["relative/pairs.jsonl"], data_dir=str(tmp_path))
    assert len(pairs) == 4
    # ... or under $SER_DATA_DIR
    monkeypatch.setenv("SER_DATA_DIR", str(tmp_path))
    assert core(load_pairs(["relative/pairs.jsonl"])[0]) == core(pairs)

    txt = tmp_path / "pairs.txt"
    txt.write_text(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_pairs([str(txt)])

    useless = write_jsonl(tmp_path / "useless.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "a"}] * 3)
    with pytest.raises(DataError, match="no usable pairs") as e:
        load_pairs([str(useless)])
    assert "useless.jsonl" in str(e.value) and "identical=3" in str(e.value)

    with pytest.raises(DataError, match="data.format"):
        load_pairs([str(tmp_path / "relative" / "pairs.jsonl")], "tsv")
    with pytest.raises(DataError, match="no data source"):
        load_pairs(None)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"prompt": "q",')
    with pytest.raises(DataError, match="not valid JSON"):
        load_pairs([str(broken)])


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------

def make_pairs(n_keys=60):
    """Prompts k0..k59 with 1, 2 or 3 pairs each (120 pairs)."""
    out = []
    for k in range(n_keys):
        for j in range(1 + k % 3):
            out.append({"prompt": [U(f"prompt {k}")], "chosen": f"good {k}.{j}", "rejected": f"bad {k}.{j}",
                        "key": f"k{k}", "source": f"x:{len(out) + 1}"})
    return out


def split_keys(s):
    return [{p["key"] for p in part} for part in (s.labeled, s.pool, s.val, s.test)]


def test_split_deterministic_and_seed_dependent():
    pairs = make_pairs()
    a, b, c = split_pairs(pairs, seed=0), split_pairs(pairs, seed=0), split_pairs(pairs, seed=1)
    assert a.labeled == b.labeled and a.pool == b.pool and a.val == b.val and a.test == b.test
    assert np.array_equal(a.pool_hidden, b.pool_hidden)
    assert split_keys(a) != split_keys(c)


def test_split_no_prompt_in_two_splits_and_sizes():
    pairs = make_pairs()
    n = len(pairs)
    assert n == 120
    s = split_pairs(pairs, labeled_fraction=0.25, val_fraction=0.1, test_fraction=0.2, seed=3)
    keys = split_keys(s)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not keys[i] & keys[j], (i, j)
    assert sum(s.counts().values()) == n
    assert set().union(*keys) == {p["key"] for p in pairs}
    # groups are taken whole until the target is reached: at most one group (<= 3 pairs) over it
    assert round(0.2 * n) <= len(s.test) < round(0.2 * n) + 3
    assert round(0.1 * n) <= len(s.val) < round(0.1 * n) + 3
    n_train = len(s.labeled) + len(s.pool)
    assert math.ceil(0.25 * n_train) <= len(s.labeled) < math.ceil(0.25 * n_train) + 3


def test_split_pool_is_shuffled_orientation_of_sources():
    pairs = make_pairs()
    s = split_pairs(pairs, labeled_fraction=0.2, seed=0)
    by_answers = {(p["key"], frozenset((p["chosen"], p["rejected"]))): p for p in pairs}
    assert len(s.pool) == len(s.pool_hidden) > 20
    for item, hidden in zip(s.pool, s.pool_hidden):
        assert set(item) == {"prompt", "a1", "a2", "key"}  # no label in the pool
        src = by_answers[(item["key"], frozenset((item["a1"], item["a2"])))]
        assert item["prompt"] == src["prompt"]
        if hidden:
            assert (item["a1"], item["a2"]) == (src["chosen"], src["rejected"])
        else:
            assert (item["a1"], item["a2"]) == (src["rejected"], src["chosen"])
    assert s.pool_hidden.dtype == bool
    assert 0 < s.pool_hidden.sum() < len(s.pool_hidden)  # both orientations occur


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.1])
def test_split_bad_labeled_fraction(bad):
    with pytest.raises(DataError, match=r"data\.labeled_fraction=\S+ is outside \(0, 1\]"):
        split_pairs(make_pairs(), labeled_fraction=bad)


def test_split_val_fraction_zero_is_allowed():
    s = split_pairs(make_pairs(), labeled_fraction=0.5, val_fraction=0.0, seed=0)
    assert s.val == [] and len(s.labeled) > 0


def test_split_bad_val_and_test_fractions():
    with pytest.raises(DataError, match=r"data\.val_fraction"):
        split_pairs(make_pairs(), val_fraction=-0.1)
    with pytest.raises(DataError, match=r"data\.test_fraction"):
        split_pairs(make_pairs(), test_fraction=1.2)


def test_split_labeled_fraction_one_gives_empty_pool():
    s = split_pairs(make_pairs(), labeled_fraction=1.0, seed=0)
    assert s.pool == [] and len(s.pool_hidden) == 0
    assert len(s.labeled) == 120 - len(s.val) - len(s.test)


def test_split_empty_split_raises():
    two = make_pairs(2)  # 1 + 2 pairs: round(0.2 * 3) = 1 -> test takes a group, val round(0.3) = 0
    with pytest.raises(DataError, match="val split is empty"):
        split_pairs(two, 0.5, 0.1, 0.2)
    with pytest.raises(DataError, match="test split is empty"):
        split_pairs(make_pairs(), 0.15, 0.1, 0.0)  # no test fraction and no test file


def test_split_with_test_pairs():
    pairs = make_pairs()
    test_pairs = [p for p in pairs if p["key"] in ("k1", "k2", "k5")]  # 2 + 3 + 3 pairs
    assert len(test_pairs) == 8
    s = split_pairs(pairs, 0.2, 0.1, 0.2, seed=0, test_pairs=test_pairs)
    assert s.test is test_pairs
    rest = {p["key"] for part in (s.labeled, s.pool, s.val) for p in part}
    assert not rest & {"k1", "k2", "k5"}
    assert len(s.labeled) + len(s.pool) + len(s.val) == 120 - 8


# --------------------------------------------------------------------------------------------
# Formatting with the real tokenizers
# --------------------------------------------------------------------------------------------

def test_render_plain_prompt():
    assert render_plain_prompt([U("just a question")]) == "just a question"
    assert render_plain_prompt([U("hi"), A("hello"), U("2+2?")]) == "Human: hi\n\nAssistant: hello\n\nHuman: 2+2?"


def test_formatter_plain_template_minilm(minilm):
    f = Formatter(minilm, max_length=64)
    assert not f.chat  # BERT has no chat template
    text, start = f.text([U("What is 2+2?")], "It is 4.")
    assert text == "Question: What is 2+2?\n\nAnswer: It is 4."
    assert text[start:] == "It is 4."
    text, _ = f.text([U("hi"), A("hello"), U("2+2?")], "4")
    assert text == "Question: Human: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAnswer: 4"
    ids, why = f.encode([U("What is 2+2?")], "It is 4.")
    assert why is None
    assert ids == minilm("Question: What is 2+2?\n\nAnswer: It is 4.")["input_ids"]
    assert ids[0] == minilm.cls_token_id and ids[-1] == minilm.sep_token_id


def test_formatter_minilm_long_prompt_cut_from_left(minilm):
    prompt = "Beginning marker " + " ".join(f"filler{i}" for i in range(120)) + " final question?"
    answer = "the final answer is paris"
    f = Formatter(minilm, max_length=32)
    full = minilm(f.text([U(prompt)], answer)[0])["input_ids"]
    assert len(full) > 32
    ids, why = f.encode([U(prompt)], answer)
    assert why == "truncated"
    assert len(ids) == 32
    assert ids[0] == minilm.cls_token_id and ids[-1] == minilm.sep_token_id
    ans = minilm(answer, add_special_tokens=False)["input_ids"]
    assert ids[-1 - len(ans):-1] == ans  # the whole answer survives, at the end
    assert ids[1:-1] == full[len(full) - 31:-1]  # exactly the left part of the prompt was cut
    text = minilm.decode(ids, skip_special_tokens=True)
    assert text.endswith("answer : the final answer is paris")
    assert "beginning" not in text and "question :" not in text
    # the authors' choice: drop instead of cut
    assert Formatter(minilm, max_length=32, overlength="drop").encode([U(prompt)], answer) == (None, "overlength")
    short, why = Formatter(minilm, max_length=32, overlength="drop").encode([U("q?")], "a")
    assert why is None and len(short) < 32


def test_formatter_minilm_answer_alone_too_long(minilm):
    answer = " ".join(f"word{i}" for i in range(80))
    f = Formatter(minilm, max_length=32)
    ids, why = f.encode([U("q")], answer)
    assert why == "answer_truncated"
    assert len(ids) == 32
    assert ids[0] == minilm.cls_token_id and ids[-1] == minilm.sep_token_id
    # the whole (short) prompt "question : q answer :" is kept, then the start of the answer
    prompt_ids = minilm("Question: q\n\nAnswer:", add_special_tokens=False)["input_ids"]
    ans = minilm(answer, add_special_tokens=False)["input_ids"]
    assert len(prompt_ids) < 32 // 4
    assert ids[1:1 + len(prompt_ids)] == prompt_ids
    assert ids[1 + len(prompt_ids):-1] == ans[: 30 - len(prompt_ids)]


def test_formatter_bad_settings(minilm):
    for bad in ("no placeholders", "A: {a} Q: {q}", "Q: {q}", "{a}"):
        with pytest.raises(DataError, match=r"data\.template"):
            Formatter(minilm, template=bad)
    with pytest.raises(DataError, match=r"data\.overlength"):
        Formatter(minilm, overlength="cut")
    Formatter(minilm, template="Q: {q}\nA: {a}")  # a valid custom template


def test_formatter_chat_template_smollm2(smollm2):
    f = Formatter(smollm2, max_length=512)
    assert f.chat
    text, start = f.text([U("What is 2+2?")], "It is 4.")
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\nIt is 4.<|im_end|>\n")
    assert text[start:].startswith("It is 4.")
    assert "Question:" not in text
    ids, why = f.encode([U("What is 2+2?")], "It is 4.")
    assert why is None
    assert smollm2.decode(ids) == text
    # the plain template when asked not to use the chat template
    plain = Formatter(smollm2, use_chat_template=False)
    assert not plain.chat
    assert plain.text([U("What is 2+2?")], "4")[0] == "Question: What is 2+2?\n\nAnswer: 4"


def test_formatter_smollm2_long_prompt_cut_from_left(smollm2):
    prompt = "BEGINMARK " + "lorem ipsum dolor " * 60 + "so what is the capital?"
    answer = "The final answer is Paris."
    f = Formatter(smollm2, max_length=64)
    ids, why = f.encode([U(prompt)], answer)
    assert why == "truncated"
    assert len(ids) == 64
    text = smollm2.decode(ids)
    assert text.endswith("<|im_start|>assistant\nThe final answer is Paris.<|im_end|>\n")
    assert "BEGINMARK" not in text and "<|im_start|>system" not in text
    full = smollm2(f.text([U(prompt)], answer)[0], add_special_tokens=False)["input_ids"]
    assert ids == full[-64:]  # no special leading tokens: a pure left cut


def test_formatter_smollm2_answer_alone_too_long(smollm2):
    answer = " ".join(f"word{i}" for i in range(200))
    ids, why = Formatter(smollm2, max_length=48).encode([U("q")], answer)
    assert why == "answer_truncated"
    assert len(ids) == 48
    text = smollm2.decode(ids)
    assert "word0 word1" in text and "word199" not in text
    assert Formatter(smollm2, max_length=48, overlength="drop").encode([U("q")], answer) == (None, "overlength")


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------

def test_pad_batch():
    b = pad_batch([[1, 2, 3], [4], [5, 6]], pad_id=99)
    assert b["input_ids"].tolist() == [[1, 2, 3], [4, 99, 99], [5, 6, 99]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert b["input_ids"].dtype == torch.long and b["attention_mask"].dtype == torch.long


def test_pair_collator_chosen_then_rejected():
    b = PairCollator(pad_id=0)([([1, 2], [3]), ([4], [5, 6, 7])])
    assert b["input_ids"].tolist() == [[1, 2, 0], [4, 0, 0], [3, 0, 0], [5, 6, 7]]
    assert b["attention_mask"].tolist() == [[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]]
    assert int(b["n_pairs"]) == 2


def lengths(n, seed=0):
    r = random.Random(seed)
    return [r.randint(5, 500) for _ in range(n)]


def test_length_grouped_batches_cover_and_group():
    ls = lengths(103)
    batches = length_grouped_batches(ls, batch_size=8, seed=0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103))  # every index exactly once
    assert len(batches) == 13 and sorted(len(b) for b in batches)[1:] == [8] * 12
    # one mega-batch covers all 103: batches are contiguous runs of the sorted lengths, so their
    # length ranges do not overlap
    ranges = sorted(((min(ls[i] for i in b), max(ls[i] for i in b)) for b in batches), key=lambda r: r[1])
    for (lo1, hi1), (lo2, hi2) in zip(ranges, ranges[1:]):
        assert hi1 <= lo2
    # the batches come shuffled, not longest first
    maxes = [max(ls[i] for i in b) for b in batches]
    assert maxes != sorted(maxes, reverse=True)


def test_length_grouped_batches_deterministic_per_seed():
    ls = lengths(103)
    assert length_grouped_batches(ls, 8, seed=5) == length_grouped_batches(ls, 8, seed=5)
    assert length_grouped_batches(ls, 8, seed=5) != length_grouped_batches(ls, 8, seed=6)


def test_length_grouped_batches_no_shuffle_sorts_longest_first():
    ls = lengths(20)
    batches = length_grouped_batches(ls, 4, seed=0, shuffle=False)
    flat = [i for b in batches for i in b]
    assert [ls[i] for i in flat] == sorted(ls, reverse=True)


def test_length_grouped_batches_two_ranks():
    ls = lengths(96)  # 12 batches of 8
    r0 = length_grouped_batches(ls, 8, seed=1, rank=0, world_size=2)
    r1 = length_grouped_batches(ls, 8, seed=1, rank=1, world_size=2)
    assert len(r0) == len(r1) == 6
    i0, i1 = {i for b in r0 for i in b}, {i for b in r1 for i in b}
    assert not i0 & i1
    assert i0 | i1 == set(range(96))
    # an odd number of batches is padded by repeating one batch: equal lengths, all covered
    ls = lengths(88)  # 11 batches
    r0 = length_grouped_batches(ls, 8, seed=1, rank=0, world_size=2)
    r1 = length_grouped_batches(ls, 8, seed=1, rank=1, world_size=2)
    assert len(r0) == len(r1) == 6
    flat = [i for b in r0 + r1 for i in b]
    assert set(flat) == set(range(88))
    assert len(flat) == 88 + 8  # exactly one batch of 8 repeated


# --------------------------------------------------------------------------------------------
# The DataModule
# --------------------------------------------------------------------------------------------

def dm_rows():
    rows = []
    for k in range(30):
        for j in range(1 + (k % 3 == 0)):  # 40 pairs over 30 prompts
            rows.append({"prompt": f"Question number {k}: what should I do?", "chosen": f"A careful answer {k}-{j}.",
                         "rejected": f"Something unhelpful {k}-{j}."})
    return rows


def dm_cfg(path: Path, **over):
    common = OmegaConf.load(ROOT / "conf" / "data" / "_common.yaml")
    return OmegaConf.merge(common, {"files": [str(path)], "labeled_fraction": 0.25, "max_length": 64,
                                    "batch_size": 4, **over})


@pytest.fixture
def dm(tmp_path, minilm):
    f = write_jsonl(tmp_path / "dm.jsonl", dm_rows())
    m = PreferenceDataModule(dm_cfg(f), minilm, seed=0)
    m.setup()
    return m


def test_datamodule_counts(dm):
    pairs, rep = load_pairs([dm.cfg.files[0]])
    s = split_pairs(pairs, 0.25, 0.1, 0.2, seed=0)
    assert (dm.load_report.rows, dm.load_report.kept) == (40, 40)
    assert dm.counts() == s.counts()
    assert sum(dm.counts().values()) == 40
    assert len(dm.pool) == len(dm.pool_hidden) == len(dm.pool_indices()) > 0
    assert dm.pool_indices().tolist() == list(range(len(dm.pool)))
    assert dm.train_pairs() == dm.labeled
    # the DataModule's pool keeps the split's orientation
    fmt = Formatter(dm.tokenizer, 64)
    assert dm.pool[0] == (fmt.encode(s.pool[0]["prompt"], s.pool[0]["a1"])[0],
                          fmt.encode(s.pool[0]["prompt"], s.pool[0]["a2"])[0])
    assert np.array_equal(dm.pool_hidden, s.pool_hidden)


def test_datamodule_selection_orients_and_removes(dm):
    n_pool = len(dm.pool)
    dm.add_selection(0, [0, 1, 2], [True, False, True], remove_from_pool=True)
    tp = dm.train_pairs()
    assert len(tp) == len(dm.labeled) + 3
    assert tp[: len(dm.labeled)] == dm.labeled
    assert tp[-3:] == [dm.pool[0], (dm.pool[1][1], dm.pool[1][0]), dm.pool[2]]
    assert dm.pool_indices().tolist() == list(range(3, n_pool))
    dm.add_selection(1, [3], [False], remove_from_pool=False)
    assert len(dm.pool_indices()) == n_pool - 3
    assert dm.train_pairs()[-1] == (dm.pool[3][1], dm.pool[3][0])
    dm.include_seed = False
    assert dm.train_pairs() == [dm.pool[0], (dm.pool[1][1], dm.pool[1][0]), dm.pool[2], (dm.pool[3][1], dm.pool[3][0])]


def test_datamodule_state_round_trip(dm, minilm):
    dm.add_selection(0, [0, 2], [False, True], remove_from_pool=True)
    dm.include_seed = False
    state = json.loads(json.dumps(dm.state_dict()))  # what a checkpoint would store
    fresh = PreferenceDataModule(dm.cfg, minilm, seed=0)
    fresh.load_state_dict(state)
    assert fresh.train_pairs() == dm.train_pairs()
    assert fresh.pool_indices().tolist() == dm.pool_indices().tolist()
    assert fresh.include_seed is False
    # a different seed splits differently, so the same selections give other pairs
    other = PreferenceDataModule(dm.cfg, minilm, seed=1)
    other.load_state_dict(copy.deepcopy(state))
    assert other.train_pairs() != dm.train_pairs()


def test_datamodule_state_dict_is_a_snapshot(dm):
    state = dm.state_dict()
    dm.add_selection(0, [0], [True], remove_from_pool=True)
    assert state["selections"] == []


def test_datamodule_train_loader(dm):
    dm.add_selection(0, [0, 1], [True, True], remove_from_pool=True)
    n = len(dm.train_pairs())
    seen = 0
    for batch in dm.train_dataloader():
        k = int(batch["n_pairs"])
        assert batch["input_ids"].shape[0] == 2 * k <= 8
        assert batch["attention_mask"].shape == batch["input_ids"].shape
        seen += k
    assert seen == n


def test_datamodule_test_files(tmp_path, minilm):
    f = write_jsonl(tmp_path / "train.jsonl", dm_rows())
    t = write_jsonl(tmp_path / "test.jsonl", [{"prompt": "Question number 0: what should I do?", "chosen": "x",
                                               "rejected": "y"}, {"prompt": "new", "chosen": "a", "rejected": "a"},
                                              {"prompt": "other", "chosen": "b", "rejected": "c"}])
    m = PreferenceDataModule(dm_cfg(f, test_files=[str(t)], test_fraction=0.0), minilm, seed=0)
    m.setup()
    assert m.counts()["test"] == 2
    # prompt 0 has 2 pairs in train: both removed from the other splits
    assert m.counts()["labeled"] + m.counts()["pool"] + m.counts()["val"] == 38
    assert (m.load_report.rows, m.load_report.kept, dict(m.load_report.dropped)) == (43, 42, {"identical": 1})


def test_gc_paused_restores_the_collector_even_on_error():
    import gc

    from ser.data import gc_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with gc_paused():
            assert not gc.isenabled()
            raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller's own choice is kept
    finally:
        gc.enable()


def test_datamodule_labeled_length_direction(dm):
    # every chosen answer ("A careful answer k-j.", 21-22 characters) is shorter than its rejected one
    # ("Something unhelpful k-j.", 24-25): the training labels favour "prefer the shorter"
    n = len(dm.labeled)
    d = dm.labeled_length_direction()
    assert d["chars"] == {"longer": 0, "shorter": n, "equal": 0, "share_longer": 0.0, "direction": "shorter"}
    tok = lambda t: len(dm.tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    rows = dm._kept_rows["labeled"]
    longer = sum(tok(r["chosen"]) > tok(r["rejected"]) for r in rows)
    shorter = sum(tok(r["chosen"]) < tok(r["rejected"]) for r in rows)
    assert (d["tokens"]["longer"], d["tokens"]["shorter"]) == (longer, shorter) and shorter > longer
    assert d["tokens"]["direction"] == "shorter" and dm.labeled_length_direction() is d  # computed once


def test_a_pinned_hub_revision_reaches_load_dataset_and_the_reuse_key(monkeypatch):
    import datasets

    from ser.data import load_pairs
    from ser.reuse_key import hub_data
    from tests.conftest import compose

    seen = {}

    def fake(hub_id, config=None, **kw):
        seen.update(kw, hub_id=hub_id)
        return [{"prompt": "q", "chosen": "good", "rejected": "bad"}]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    pairs, _ = load_pairs(None, "pairs", hub_id="org/prefs", hub_revision="v1.2")
    assert len(pairs) == 1 and seen["hub_id"] == "org/prefs" and seen["revision"] == "v1.2"
    cfg = compose(["data.files=null", "data.hub_id=org/prefs", "data.hub_revision=v1.2"])
    assert hub_data(cfg.data)["data"] == {"id": "org/prefs", "revision": "v1.2"}
