"""H4 Stack Exchange questions -> preference pairs (ser/data/stack_exchange.py): the pairing and the
cap by hand, HTML rendered or kept, drops counted (malformed rows in one line naming file and row),
one question never in two splits, the hub path read the same way, the shipped file, and the config."""
from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from ser.config import ConfigError, validate
from ser.data.formats import detect_format, load_pairs
from ser.data.splits import split_pairs
from ser.data.stack_exchange import cap_pairs, options_from_config, question_pairs, render_html, score_pairs
from tests.conftest import compose


def answer(text: str, score: int, **extra) -> dict:
    return {"answer_id": extra.pop("answer_id", 0), "author": "", "pm_score": score, "selected": False,
            "text": text, **extra}


def question(qid: int, answers: list[dict], title: str | None = None) -> dict:
    title = title or f"Which hops for ale {qid}?"
    return {"qid": qid, "question": f"{title}\n\n<p>I brew <b>pale ale</b> number {qid}.</p>\n",
            "answers": answers, "date": "2015/01/01", "metadata": [f"https://beer.stackexchange.com/q/{qid}",
                                                                 "beer.stackexchange.com", ""]}


def write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# By hand
# --------------------------------------------------------------------------------------------

def test_score_pairs_by_hand():
    # scores 3, 1, 3, 0: every two answers with distinct scores, the higher one first, in answer order
    assert score_pairs([3, 1, 3, 0]) == [(0, 1), (0, 3), (2, 1), (1, 3), (2, 3)]
    assert score_pairs([2, 2, 2]) == []
    assert score_pairs([-1, 4]) == [(1, 0)]


def test_cap_pairs_is_a_seeded_sample_in_order():
    pairs = list(range(20))
    assert cap_pairs(pairs, None, "0:1") == pairs and cap_pairs(pairs, 20, "0:1") == pairs
    a = cap_pairs(pairs, 5, "0:7")
    assert len(a) == 5 and a == sorted(a) and set(a) <= set(pairs)
    assert cap_pairs(pairs, 5, "0:7") == a  # the same key, the same pairs (string seeds: every process)
    assert len({tuple(cap_pairs(pairs, 5, f"0:{q}")) for q in range(10)}) > 1  # another question, another sample
    assert len({tuple(cap_pairs(pairs, 5, f"{s}:7")) for s in range(10)}) > 1  # another data seed, too


def test_render_html_text_or_keep():
    html = "<p>Use <b>Cascade</b> hops, see <a href=\"http://x.org\">this</a>:</p>\n<pre><code>boil 60\n</code></pre>\n"
    assert render_html(html, "keep") == html.strip()
    text = render_html(html, "text")
    assert "**Cascade**" in text and "[this](http://x.org)" in text and "boil 60" in text and "<p>" not in text
    assert render_html("<p>a</p>\n\n\n\n<p>b</p>") == "a\n\nb"  # at most one blank line
    with pytest.raises(Exception, match="data.html='xml' must be one of text, keep"):
        render_html("<p>a</p>", "xml")


def test_question_pairs_by_hand():
    row = question(5, [answer("<p>Cascade</p>", 2), answer("<p>Saaz</p>", 0), answer("<p>Fuggle</p>", 2),
                       answer("<p>Citra</p>", 3)])
    got = question_pairs(row)
    pairs = [p for p, why in got if p is not None]
    assert [why for p, why in got if p is None] == []
    # scores 2, 0, 2, 3 -> (0,1), (3,0), (2,1), (3,1), (3,2); the two answers scored 2 give no pair
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("Cascade", "Saaz"), ("Citra", "Cascade"), ("Fuggle", "Saaz"), ("Citra", "Saaz"), ("Citra", "Fuggle")]
    assert all(p["prompt"] == [{"role": "user", "content": "Which hops for ale 5?\n\nI brew **pale ale** number 5."}]
               for p in pairs)
    kept = question_pairs(row, html="keep")
    assert kept[0][0]["chosen"] == "<p>Cascade</p>" and "<b>pale ale</b>" in kept[0][0]["prompt"][0]["content"]
    capped = question_pairs(row, pairs_per_prompt=2)
    assert len([p for p, _ in capped if p]) == 2 and [w for p, w in capped if p is None] == ["over_pairs_per_prompt"] * 3
    assert question_pairs(row, pairs_per_prompt=2) == capped
    with pytest.raises(Exception, match="pairs_per_prompt=0 must be >= 1"):
        question_pairs(row, pairs_per_prompt=0)


def test_question_drops_by_reason():
    assert question_pairs(question(1, [answer("<p>only</p>", 3)])) == [(None, "too_few_answers")]
    assert question_pairs(question(1, [answer("<p>a</p>", 1), answer("<p>b</p>", 1)])) == [(None, "equal_scores")]
    same = question_pairs(question(1, [answer("<p>x</p>", 2), answer("<p>x</p>", 0), answer("<p>y</p>", 1)]))
    # (x, x) has distinct scores but one text: dropped; each copy of x still meets y
    assert [p["chosen"] + ">" + p["rejected"] for p, _ in same if p] == ["x>y", "y>x"]
    assert [w for p, w in same if p is None] == ["identical"]
    empty = question_pairs(question(1, [answer("<p> </p>", 2), answer("<p>b</p>", 0)]))
    assert empty == [(None, "empty_answer"), (None, "too_few_answers")]
    assert question_pairs({"qid": 1, "answers": []}) == [(None, ("missing_field", "no question text"))]
    assert question_pairs({"qid": 1, "question": "q"}) == [(None, ("missing_field", "no answers list"))]
    (item, (why, detail)), = question_pairs(question(1, [answer("<p>a</p>", 1), {"text": "<p>b</p>"}]))
    assert item is None and why == "malformed" and detail.startswith("answer 2 is not an object")
    assert question_pairs(question(1, [answer("<p>a</p>", True), answer("<p>b</p>", 0)]))[0][1][0] == "malformed"


# --------------------------------------------------------------------------------------------
# Through load_pairs
# --------------------------------------------------------------------------------------------

def hand_rows() -> list:
    return [
        question(1, [answer("<p>Cascade</p>", 2), answer("<p>Saaz</p>", 0), answer("<p>Citra</p>", 3)]),  # 3 pairs
        question(2, [answer("<p>lonely</p>", 1)]),  # too_few_answers
        question(3, [answer("<p>a</p>", 1), answer("<p>b</p>", 1)]),  # equal_scores
        {"qid": 4, "answers": [answer("<p>a</p>", 1), answer("<p>b</p>", 0)]},  # missing_field (no question)
        question(5, [answer("<p>a</p>", 1), {"answer_id": 9, "text": "<p>no score</p>"}]),  # malformed
        "{not json",  # unparsable
        question(7, [answer("<p>x</p>", 4), answer("<p>y</p>", -1)]),  # 1 pair
    ]


def test_load_pairs_reads_questions_and_counts_drops(tmp_path, caplog):
    f = write_jsonl(tmp_path / "beer.jsonl.gz", hand_rows(), gz=True)
    assert detect_format(hand_rows()[0]) == "stack_exchange"
    with caplog.at_level(logging.WARNING, logger="ser.data"):
        pairs, rep = load_pairs([str(f)], "auto")
    assert (rep.rows, rep.kept) == (7, 4)
    assert dict(rep.dropped) == {"too_few_answers": 1, "equal_scores": 1, "missing_field": 1, "malformed": 1,
                                 "unparsable": 1}
    assert rep.line() == ("read 7 rows, kept 4 pairs, dropped: equal_scores=1, malformed=1, missing_field=1, "
                          "too_few_answers=1, unparsable=1")
    # one line per malformed row, naming the file and the row
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("beer.jsonl.gz:4: skipped a malformed row (missing_field): no question text") for m in lines)
    assert any("beer.jsonl.gz:5: skipped a malformed row (malformed): answer 2 is not an object" in m for m in lines)
    assert any("beer.jsonl.gz:6" in m and "not valid JSON" in m for m in lines)
    assert [p["source"] for p in pairs] == ["beer.jsonl.gz:1"] * 3 + ["beer.jsonl.gz:7"]
    assert len({p["key"] for p in pairs[:3]}) == 1 and pairs[3]["key"] != pairs[0]["key"]
    same, _ = load_pairs([str(f)], "stack_exchange")  # named instead of detected: the same pairs
    assert same == pairs
    capped, rep = load_pairs([str(f)], "auto", options={"pairs_per_prompt": 1, "html": "keep", "seed": 0})
    assert len(capped) == 2 and rep.dropped["over_pairs_per_prompt"] == 2 and capped[-1]["chosen"] == "<p>x</p>"


def test_a_question_never_spans_two_splits(tmp_path):
    rows = [question(q, [answer(f"<p>answer {q}.{k}</p>", k % 4) for k in range(2 + q % 5)]) for q in range(60)]
    pairs, rep = load_pairs([str(write_jsonl(tmp_path / "q.jsonl", rows))], "auto")
    per_question = Counter(p["source"] for p in pairs)
    assert len(per_question) == 60 and rep.kept == sum(per_question.values()) > 60
    for seed in range(5):
        s = split_pairs(pairs, 0.25, 0.1, 0.2, seed)
        where: dict[str, set] = {}
        for name in ("labeled", "val", "test"):
            for p in getattr(s, name):
                where.setdefault(p["source"], set()).add(name)
        by_key = {p["key"]: p["source"] for p in pairs}
        for p in s.pool:
            where.setdefault(by_key[p["key"]], set()).add("pool")
        assert all(len(v) == 1 for v in where.values())
        assert sum(map(len, (s.labeled, s.pool, s.val, s.test))) == len(pairs)


def test_the_hub_dataset_goes_through_the_same_parser(tmp_path, monkeypatch):
    """HuggingFaceH4/stack-exchange-preferences rows (as ``datasets`` yields them) give the pairs
    the local file gives; no network here, so ``datasets.load_dataset`` is stood in for."""
    import datasets

    rows = [r for r in hand_rows() if isinstance(r, dict)]
    seen = {}

    def fake_load_dataset(hub_id, config=None, split=None, data_dir=None, revision=None):
        seen.update(hub_id=hub_id, split=split, data_dir=data_dir, revision=revision)
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = compose(["data=stack_exchange_h4"]).data
    hub, rep = load_pairs(None, cfg.format, None, cfg.hub_id, cfg.hub_config, cfg.hub_split, cfg.hub_data_dir,
                          options=options_from_config(cfg))
    local, _ = load_pairs([str(write_jsonl(tmp_path / "l.jsonl", rows))], "auto", options=options_from_config(cfg))
    assert seen == {"hub_id": "HuggingFaceH4/stack-exchange-preferences", "split": "train",
                    "data_dir": "data/beer.stackexchange.com", "revision": None}
    strip = lambda ps: [{k: v for k, v in p.items() if k != "source"} for p in ps]  # noqa: E731
    assert strip(hub) == strip(local) and rep.kept == 4


# --------------------------------------------------------------------------------------------
# The shipped file and the configs
# --------------------------------------------------------------------------------------------

def test_the_shipped_beer_file(data_dir):
    pairs, rep = load_pairs(["stack-exchange/beer.jsonl.gz"], "auto", options={"html": "keep"})
    # the data README: 280 questions, 1,429 pairs with distinct pm_score
    assert (rep.rows, rep.kept) == (280, 1429) and dict(rep.dropped) == {"equal_scores": 17}
    cfg = compose(["experiment=ser_stack_exchange_minilm"]).data
    capped, rep = load_pairs(list(cfg.files), cfg.format, options=options_from_config(cfg))
    assert rep.kept == 869 and rep.dropped["over_pairs_per_prompt"] == 560
    assert max(Counter(p["key"] for p in capped).values()) == 10
    assert "<p>" not in capped[0]["chosen"] and "<p>" not in capped[0]["prompt"][0]["content"]
    s = split_pairs(capped, 0.15, 0.1, 0.2, 0)
    assert s.counts() == {"labeled": 91, "pool": 511, "val": 90, "test": 177}


def test_configs_compose_and_validate(tmp_path):
    cfg = compose(["experiment=ser_stack_exchange_minilm"], output_dir=tmp_path)
    validate(cfg)
    assert cfg.task_name == "ser_stack_exchange_minilm" and cfg.model.name_or_path.endswith("all-MiniLM-L6-v2")
    d = cfg.data
    assert (d.format, d.html, d.pairs_per_prompt, d.pairs_seed, d.files[0]) == \
        ("stack_exchange", "text", 10, 0, "stack-exchange/beer.jsonl.gz")
    assert options_from_config(d) == {"html": "text", "pairs_per_prompt": 10, "seed": 0}
    assert cfg.compare_full and cfg.loop.max_loops == 3 and cfg.data.max_length == 128  # as ser_hh_minilm
    with pytest.raises(ConfigError, match="data.html='xml' must be text"):
        validate(compose(["experiment=ser_stack_exchange_minilm", "data.html=xml"], output_dir=tmp_path))
    with pytest.raises(ConfigError, match="data.pairs_per_prompt=0 must be >= 1"):
        validate(compose(["experiment=ser_stack_exchange_minilm", "data.pairs_per_prompt=0"], output_dir=tmp_path))
    assert compose(["data=hh_rlhf"]).data.pairs_per_prompt is None  # other data sets: untouched defaults


def test_datamodule_passes_the_options(tmp_path):
    from omegaconf import OmegaConf

    from ser.data import PreferenceDataModule
    from ser.model import load_tokenizer
    from tests.conftest import CONF

    rows = [question(q, [answer(f"<p>answer {q}.{k}</p>", k) for k in range(5)]) for q in range(12)]  # 10 pairs each
    f = write_jsonl(tmp_path / "se.jsonl", rows)
    tok = load_tokenizer(OmegaConf.load(CONF / "model" / "tiny.yaml"))
    common = OmegaConf.load(CONF / "data" / "_common.yaml")
    for cap, n in ((None, 120), (3, 36)):
        c = OmegaConf.merge(common, {"files": [str(f)], "format": "stack_exchange", "pairs_per_prompt": cap,
                                     "html": "keep", "pairs_seed": 0, "labeled_fraction": 0.25, "max_length": 64})
        dm = PreferenceDataModule(c, tok, seed=0)
        dm.setup()
        assert dm.load_report.kept == n and sum(dm.splits.counts().values()) == n
