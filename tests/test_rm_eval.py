"""`ser evaluate-rm`: the figures by hand (bootstrap CI, best-of-N, RewardBench sections, length bias,
ECE), the readers of each layout, then the command end to end with the tiny exported reward model on
small files (plain pairs, RewardBench's subset column, RewardBench 2 rows), its one-line errors, and
once on the real data."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ser.cli import main as cli_main
from ser.errors import ConfigError, DataError, ModelNotFound
from ser.rm_metrics import (PRIOR, REWARDBENCH_COUNTS, REWARDBENCH_SECTIONS, best_of_n_correct, bootstrap_accuracy,
                            length_bias, pair_calibration, rewardbench_sections, subset_accuracy, summarize)
from tests.conftest import CONF, ROOT

# --------------------------------------------------------------------------------------------
# The figures, by hand
# --------------------------------------------------------------------------------------------


def test_bootstrap_accuracy_by_hand():
    a = bootstrap_accuracy([True] * 7)
    assert (a.estimate, a.low, a.high, a.n) == (1.0, 1.0, 1.0, 7)
    # two items, one right: a resample is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4
    b = bootstrap_accuracy([True, False], level=0.4)  # quantiles 0.3 and 0.7: both 1/2
    assert (b.estimate, b.low, b.high) == (0.5, 0.5, 0.5)
    b = bootstrap_accuracy([True, False], level=0.95)
    assert (b.low, b.high) == (0.0, 1.0)
    # 400 items, 300 right: the normal approximation gives 0.75 -+ 1.96 * sqrt(0.75 * 0.25 / 400) = -+0.0424
    c = bootstrap_accuracy([True] * 300 + [False] * 100, seed=3)
    assert c.estimate == 0.75
    assert c.low == pytest.approx(0.7076, abs=0.008) and c.high == pytest.approx(0.7924, abs=0.008)
    assert bootstrap_accuracy([True] * 300 + [False] * 100, seed=3) == c  # seeded: reproducible
    assert bootstrap_accuracy([True] * 300 + [False] * 100, seed=4) != c
    with pytest.raises(ValueError):
        bootstrap_accuracy([])


def test_bootstrap_resamples_rows_together():
    # 100 rows of 4 pairs each, a row all right or all wrong: 100 independent outcomes, not 400,
    # so the CI is twice as wide (sqrt 4) as when the 400 pairs are taken as independent
    right = np.repeat([True] * 60 + [False] * 40, 4)
    rows = np.repeat(np.arange(100), 4)
    flat, grouped = bootstrap_accuracy(right), bootstrap_accuracy(right, rows)
    assert flat.estimate == grouped.estimate == 0.6 and grouped.n == 400
    ratio = (grouped.high - grouped.low) / (flat.high - flat.low)
    assert 1.7 < ratio < 2.3
    # rows of unequal size: the accuracy is right pairs over pairs (3/4 + 0/1 -> 3/5), not a mean of rows
    g = bootstrap_accuracy([True, True, True, False, False], [0, 0, 0, 0, 1])
    assert g.estimate == 0.6 and g.low == 0.0 and g.high == 0.75


def test_best_of_n_needs_the_chosen_strictly_above_every_rejected():
    got = best_of_n_correct([3.0, 1.0, 2.0, 0.5], [[1.0, 2.0, 2.9], [0.0, 1.0], [2.0, -1.0], [0.4]])
    assert got.tolist() == [True, False, False, True]  # a tie at the top is wrong


def test_subset_accuracy_by_hand():
    t = subset_accuracy(["b", "a", "b", "b", "a"], [True, False, True, False, False])
    assert list(t) == ["a", "b"]
    assert t["a"] == {"n": 2, "accuracy": 0.0} and t["b"]["n"] == 3 and t["b"]["accuracy"] == pytest.approx(2 / 3)


def test_rewardbench_sections_by_hand():
    acc = {"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5, "math-prm": 0.5, "hep-python": 1.0, "shp": 0.6,
           "summarize": 0.8, "my-own-set": 0.0}
    r = rewardbench_sections(acc)
    chat = (100 * 1.0 + 28 * 0.5) / (100 + 28)  # weighted by RewardBench's example counts
    reasoning = (984 * 0.5 + 164 * 1.0) / (984 + 164)  # math-prm counts 984 (upweighted to equal code)
    prior = (0.6 + 0.8) / 2  # the prior sets: a plain mean
    assert r["sections"] == pytest.approx({"Chat": chat, "Reasoning": reasoning, PRIOR: prior})
    assert chat == pytest.approx(0.890625) and reasoning == pytest.approx(656 / 1148)
    assert r["score"] == pytest.approx((2 * chat + 2 * reasoning + 1 * prior) / 5)  # prior sets weigh half
    full = {s: 1.0 for subsets in REWARDBENCH_SECTIONS.values() for s in subsets}
    full["xstest-should-refuse"] = 0.0
    safety = rewardbench_sections(full)["sections"]["Safety"]
    assert safety == pytest.approx(1 - 154 / (100 + 100 + 154 + 250 + 136))
    assert rewardbench_sections({"my-own-set": 0.7}) is None
    assert sum(len(v) for v in REWARDBENCH_SECTIONS.values()) == len(REWARDBENCH_COUNTS) == 23


def test_length_bias_by_hand():
    # pairs: chosen longer (right, right, wrong), chosen shorter (wrong, right), same length (right)
    lb = length_bias([10, 9, 8, 2, 3, 5], [1, 1, 1, 4, 6, 5], [True, True, False, False, True, True])
    assert lb["chosen_longer"] == {"n": 3, "accuracy": pytest.approx(2 / 3)}
    assert lb["chosen_shorter"] == {"n": 2, "accuracy": 0.5}
    assert lb["same_length"] == {"n": 1, "accuracy": 1.0}
    # the longer answer won: 2 chosen-longer pairs right + 1 chosen-shorter pair wrong, of 5 unequal pairs
    assert lb["prefers_longer"] == pytest.approx(3 / 5) and lb["unit"] == "characters"
    empty = length_bias([3, 4], [3, 4], [True, False])
    assert empty["chosen_longer"] == {"n": 0, "accuracy": None} and empty["prefers_longer"] is None


def test_pair_calibration_by_hand():
    ln3 = math.log(3.0)
    # sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25, sigmoid(ln 9) = 0.9: confidences .75 .75 .75 .9
    c = pair_calibration([ln3, ln3, 0.0, math.log(9.0)], [0.0, 0.0, ln3, 0.0])
    # bin of .75: 3 pairs, 2 right -> |2/3 - .75| * 3/4 = 0.0625; bin of .9: 1 pair, right -> .1 * 1/4
    assert c["ece"] == pytest.approx(0.0625 + 0.025)
    assert c["mean_confidence"] == pytest.approx(0.7875) and c["accuracy"] == 0.75 and c["bins"] == 10
    assert [b["n"] for b in c["reliability"]] == [3, 1]
    tie = pair_calibration([1.0], [1.0])  # p = 0.5: confidence 0.5 and wrong
    assert tie["ece"] == pytest.approx(0.5) and tie["accuracy"] == 0.0
    assert pair_calibration([1e4], [-1e4])["ece"] == pytest.approx(0.0)  # no overflow


def test_summarize_pairs_and_best_of_n_rows_by_hand():
    chosen = [2.0, 0.0, 1.0, 5.0]
    rejected = [[1.0], [1.0], [0.5, 2.0, -1.0], [1.0, 2.0, 3.0]]
    ctext = ["aaaa", "bb", "cc", "dddd"]
    rtext = [["a"], ["bbbb"], ["c", "c", "ccc"], ["d", "d", "d"]]
    r = summarize(chosen, rejected, ctext, rtext, ["x", "x", "y", "y"], n_boot=500)
    # pairs: right, wrong, (right, wrong, right), (right, right, right): 6 of 8
    assert r["rows"] == 4 and r["pairs"] == 8 and r["ties"] == 0
    assert r["accuracy"]["estimate"] == 0.75 and r["accuracy"]["resampled"] == "rows"
    assert r["best_of_n"]["n"] == 2 and r["best_of_n"]["estimate"] == 0.5  # row 3 loses to 2.0, row 4 wins
    assert r["best_of_n"]["answers_per_row"] == [4] and r["best_of_n"]["chance"] == 0.25
    assert r["subsets"] == {"x": {"n": 2, "accuracy": 0.5, "kind": "pairs"},
                            "y": {"n": 2, "accuracy": 0.5, "kind": "best-of-N"}}
    assert r["subset_mean"] == 0.5 and r["rewardbench"] is None
    assert r["length_bias"]["chosen_longer"] == {"n": 6, "accuracy": pytest.approx(5 / 6)}
    assert r["length_bias"]["chosen_shorter"] == {"n": 2, "accuracy": 0.5}  # row 2 wrong, row 3 vs "ccc" right
    plain = summarize([1.0, 0.0], [[0.0], [0.0]], ["a", "b"], [["b"], ["a"]], [None, None], n_boot=100)
    assert plain["subsets"] is None and plain["best_of_n"] is None and plain["ties"] == 1
    assert plain["accuracy"]["resampled"] == "pairs" and plain["accuracy"]["estimate"] == 0.5


def test_summarize_length_control_in_tokens_and_characters_by_hand():
    # four rows; the tokens say the opposite of the characters on row 3 (a long word in one token)
    chosen, rejected = [2.0, 0.0, 1.0, 3.0], [[1.0], [1.0], [0.5, 2.0], [1.0]]
    ctext, rtext = ["aaaa", "b", "cc", "d"], [["a"], ["bbbb"], ["c", "ccc"], ["dd"]]
    ctok, rtok = [3, 1, 2, 9], [[1], [4], [1, 3], [2]]
    trained = {"tokens": {"longer": 9, "shorter": 1, "equal": 0, "share_longer": 0.9, "direction": "longer"}}
    r = summarize(chosen, rejected, ctext, rtext, n_boot=300, chosen_tokens=ctok, rejected_tokens=rtok,
                  length_direction=trained)
    t, c = r["length_control"]["tokens"], r["length_control"]["chars"]
    # pairs: (3 vs 1, right), (1 vs 4, wrong), (2 vs 1, right), (2 vs 3, wrong), (9 vs 2, right) in tokens
    assert t["direction"] == "longer" and t["direction_source"] == "training labels"
    assert (t["n_right_way"], t["n_wrong_way"], t["n_equal"]) == (3, 2, 0)
    assert t["right_way"] == 1.0 and t["wrong_way"] == 0.0 and t["balanced"] == 0.5 and t["baseline"] == 0.6
    assert t["ci"]["balanced"] == {"estimate": 0.5, "low": 0.5, "high": 0.5, "n": 5, "level": 0.95}
    # characters: row 4 is chosen shorter (1 vs 2) and right: chosen longer in 2 pairs (both right),
    # shorter in 3 (1 right). No direction recorded for chars: these pairs' own, "shorter" (2 of 5)
    assert c["direction_source"] == "these pairs" and c["direction"] == "shorter"
    assert (c["n_right_way"], c["n_wrong_way"]) == (3, 2) and c["baseline"] == 0.6
    assert c["wrong_way"] == 1.0 and c["right_way"] == pytest.approx(1 / 3) and c["balanced"] == pytest.approx(2 / 3)
    # without token lengths: characters only
    assert list(summarize([1.0], [[0.0]], ["a"], [["bb"]], n_boot=10)["length_control"]) == ["chars"]


# --------------------------------------------------------------------------------------------
# Small files in each layout
# --------------------------------------------------------------------------------------------

TOPICS = ["cats", "rivers", "taxes", "bread", "chess", "rain", "music", "trains"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def plain_rows(n: int = 24, swap: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = f"yes, gladly: a helpful answer about {TOPICS[i % 8]} number {i}", f"no {i}"
        rows.append({"prompt": f"question {i} about {TOPICS[i % 8]}", "chosen": b if swap else a,
                     "rejected": a if swap else b})
    return rows


RB_SUBSETS = ["alpacaeval-easy", "mt-bench-easy", "hep-python", "math-prm", "shp"]


RB_SWAPPED = {"alpacaeval-easy": 0, "mt-bench-easy": 3, "hep-python": 1, "math-prm": 2, "shp": 1}


def rewardbench_rows() -> list[dict]:
    """RewardBench's layout: prompt/chosen/rejected strings, a subset column, models and an id; in
    each subset, some rows have the short answer chosen (so that subsets differ in accuracy)."""
    rows = []
    for i, (r, w) in enumerate(zip(plain_rows(20), plain_rows(20, swap=True))):
        subset = RB_SUBSETS[i % 5]
        rows.append({**(w if i // 5 < RB_SWAPPED[subset] else r), "chosen_model": "m1", "rejected_model": "m2",
                     "subset": subset, "id": i})
    return rows


def rewardbench2_rows(n: int = 9) -> list[dict]:
    """RewardBench 2's layout: one chosen and three rejected answers, a subset column."""
    subsets = ["Factuality", "Math", "Focus"]
    return [{"id": str(i), "prompt": f"tell me about {TOPICS[i % 8]} ({i})",
             "chosen": [f"a careful, correct answer about {TOPICS[i % 8]} {i}"],
             "rejected": [f"wrong {i}", f"a different wrong answer {i} on {TOPICS[(i + 1) % 8]}", f"no {i}"],
             "num_correct": 1, "num_rejected": 3, "total_completions": 4, "models": ["a", "b", "c", "d"],
             "subset": subsets[i % 3]} for i in range(n)]


def test_load_items_reads_every_layout_and_counts_what_it_drops(tmp_path):
    from ser.rm_eval import load_items

    rows = rewardbench_rows()[:3] + rewardbench2_rows(2) + [
        {"prompt": "q", "chosen": ["right", "also right"], "rejected": ["wrong"], "subset": "Ties"},  # Ties: 2 chosen
        {"prompt": "q", "chosen": ["same"], "rejected": ["other", "same"]},  # chosen among the rejected
        {"prompt": "q", "chosen": "x", "rejected": "x"},
    ]
    f = write_jsonl(tmp_path / "mixed.jsonl", rows)
    f.write_text(f.read_text() + "{not json\n")
    items, rep = load_items([str(f)])
    assert [len(it["rejected"]) for it in items] == [1, 1, 1, 3, 3]
    assert [it["subset"] for it in items] == RB_SUBSETS[:3] + ["Factuality", "Math"]
    assert items[3]["prompt"] == [{"role": "user", "content": "tell me about cats (0)"}]
    assert items[3]["rejected"][2] == "no 0" and items[0]["source"] == "mixed.jsonl:1"
    assert (rep.rows, rep.kept) == (9, 5)
    assert dict(rep.dropped) == {"several_chosen": 1, "identical": 2, "unparsable": 1}
    assert len(load_items([str(f)], limit=4)[0]) == 4
    hh = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: hi\n\nAssistant: hello there",
                                             "rejected": "\n\nHuman: hi\n\nAssistant: go away"}])
    items, _ = load_items([str(hh)])
    assert items == [{"prompt": [{"role": "user", "content": "hi"}], "chosen": "hello there",
                      "rejected": ["go away"], "subset": None, "source": "hh.jsonl:1"}]


def test_load_items_errors_name_the_file(tmp_path):
    from ser.rm_eval import data_config, load_items

    with pytest.raises(DataError, match=r"data file not found: .*nothing.jsonl \(check the path or"):
        load_items([str(tmp_path / "nothing.jsonl")])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "chosen": "", "rejected": "x"}])
    with pytest.raises(DataError, match=r"no usable pairs in .*bad.jsonl \(read 1 rows, kept 0 pairs, dropped: "
                                        r"empty_answer=1\)"):
        load_items([str(bad)])
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "good": "a", "bad": "b"}])
    with pytest.raises(DataError, match=r"odd.jsonl:1: cannot detect the data format .*pass --format"):
        load_items([str(odd)])
    assert data_config("ultrafeedback")["files"] == ["ultrafeedback-binarized/test.jsonl"]  # test_files first
    assert data_config("hh_rlhf") == {"files": ["hh-rlhf/harmless-base/test.jsonl.gz"], "format": "hh",
                                      "columns": None}
    with pytest.raises(ConfigError, match="choose one of alpaca_eval, hh_rlhf"):
        data_config("nope")
    with pytest.raises(ConfigError, match="no local files"):
        data_config("stack_exchange")


# --------------------------------------------------------------------------------------------
# The command end to end, with the tiny exported reward model
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory) -> Path:
    """conf/model/tiny.yaml (random 2-layer BERT, MiniLM's tokenizer) exported as ser exports a reward model."""
    import torch
    from omegaconf import OmegaConf

    from ser.model import build_hf_model, export_reward_model, load_tokenizer

    mcfg = OmegaConf.load(CONF / "model" / "tiny.yaml")
    tok = load_tokenizer(mcfg)
    net = build_hf_model(mcfg, tok)
    with torch.no_grad():  # spread the random rewards (else within ~1e-3 of each other)
        net.classifier.weight.mul_(1000.0)
    return export_reward_model(net, tok, tmp_path_factory.mktemp("rm") / "reward_model",
                               {"template": "Q: {q}\n\nA: {a}", "use_chat_template": True, "max_length": 48,
                                "model": "tiny", "data": "test"})


def reference_scores(rm: Path, items: list[dict]) -> tuple[list[float], list[list[float]]]:
    """Every answer scored alone (no batch, no padding), formatted by hand as ser_reward.json says."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rm)
    model = AutoModelForSequenceClassification.from_pretrained(rm).eval()

    def score(prompt: str, answer: str) -> float:
        enc = tok(f"Q: {prompt}\n\nA: {answer}", return_tensors="pt")
        assert enc["input_ids"].shape[1] <= 48  # short enough that nothing is cut
        with torch.no_grad():
            return float(model(**enc).logits[0, 0])

    as_list = lambda x: x if isinstance(x, list) else [x]  # noqa: E731
    return ([score(it["prompt"], as_list(it["chosen"])[0]) for it in items],
            [[score(it["prompt"], r) for r in as_list(it["rejected"])] for it in items])


def run_cli(*args: str) -> int:
    return cli_main(["evaluate-rm", *args])


def read_out(out: Path) -> tuple[dict, list[dict], str]:
    return (json.loads((out / "rm_eval.json").read_text()),
            [json.loads(x) for x in (out / "rm_eval_scores.jsonl").read_text().splitlines()],
            (out / "rm_eval.md").read_text())


def test_plain_pairs_end_to_end(tiny_rm, tmp_path, capsys):
    rows = plain_rows(24)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert run_cli("--model", str(tiny_rm), "--data", str(data), "--out", str(tmp_path / "o"), "--batch-size", "5",
                   "--n-boot", "1000") == 0
    res, scores, md = read_out(tmp_path / "o")
    # the length-sorted, padded batches give each answer the reward it has alone
    ref_c, ref_r = reference_scores(tiny_rm, rows)
    assert [s["chosen"] for s in scores] == pytest.approx(ref_c, abs=1e-4)
    assert [x for s in scores for x in s["rejected"]] == pytest.approx([x for r in ref_r for x in r], abs=1e-4)
    right = np.array(ref_c) > np.array(ref_r)[:, 0]
    assert res["rows"] == res["pairs"] == res["accuracy"]["n"] == 24
    assert res["accuracy"]["estimate"] == pytest.approx(right.mean())
    assert res["accuracy"]["low"] <= res["accuracy"]["estimate"] <= res["accuracy"]["high"]
    assert res["formatting"] == {"chat_template": False, "template": "Q: {q}\n\nA: {a}", "max_length": 48,
                                 "source": "ser_reward.json", "cut": {}}
    assert res["best_of_n"] is None and res["subsets"] is None and res["rewardbench"] is None
    lb = res["length_bias"]  # every chosen answer is the longer one here
    assert lb["chosen_longer"]["n"] == 24 and lb["prefers_longer"] == pytest.approx(right.mean())
    assert res["data"]["kept"] == 24 and res["ser_reward"]["model"] == "tiny"
    printed = capsys.readouterr().out
    assert f"pairwise accuracy: {100 * right.mean():.1f}% [" in printed and "(95% bootstrap CI, 24 pairs" in printed
    assert "from ser_reward.json, max length 48" in printed and "ECE" in printed and "written:" in printed
    # length control in the model's tokens and in characters; every chosen answer is the longer one,
    # so the length-balanced accuracy is undefined and "prefer the longer" is right on every pair
    for unit in ("tokens", "chars"):
        lc = res["length_control"][unit]
        assert lc["baseline"] == 1.0 and lc["n_right_way"] == 24 and lc["balanced"] is None
        assert lc["ci"]["model_minus_baseline"]["estimate"] == pytest.approx(right.mean() - 1)
    assert 'length control (tokens): length-only baseline "prefer the longer" (from these pairs\' own labels' in printed
    assert "length control (characters)" in printed and "length-balanced accuracy undefined" in printed
    assert "pairwise accuracy" in md
    # the same pairs with chosen and rejected swapped: every pair flips (no ties), accuracy 1 - a
    swapped = write_jsonl(tmp_path / "swapped.jsonl", plain_rows(24, swap=True))
    assert run_cli("--model", str(tiny_rm), "--data", str(swapped), "--out", str(tmp_path / "s"),
                   "--n-boot", "200") == 0
    assert read_out(tmp_path / "s")[0]["accuracy"]["estimate"] == pytest.approx(1 - right.mean())
    # the export's template given as a flag, typed as in a shell (backslash-n): the same rewards
    assert run_cli("--model", str(tiny_rm), "--data", str(data), "--out", str(tmp_path / "t"), "--n-boot", "100",
                   "--template", r"Q: {q}\n\nA: {a}") == 0
    res_t, scores_t, _ = read_out(tmp_path / "t")
    assert res_t["formatting"]["source"] == "--template" and res_t["formatting"]["template"] == "Q: {q}\n\nA: {a}"
    assert [s["chosen"] for s in scores_t] == pytest.approx(ref_c, abs=1e-4)


def test_rewardbench_layout_gives_subsets_and_sections(tiny_rm, tmp_path, capsys):
    data = write_jsonl(tmp_path / "rb.jsonl", rewardbench_rows())
    assert run_cli("--model", str(tiny_rm), "--data", str(data), "--out", str(tmp_path / "o"), "--n-boot", "200") == 0
    res, scores, md = read_out(tmp_path / "o")
    right = {s: [] for s in RB_SUBSETS}
    for row in scores:
        right[row["subset"]].append(row["chosen"] > row["rejected"][0])
    assert res["subsets"] == {s: {"n": 4, "accuracy": pytest.approx(np.mean(right[s])), "kind": "pairs"}
                              for s in sorted(RB_SUBSETS)}
    acc = {s: float(np.mean(v)) for s, v in right.items()}
    assert len(set(acc.values())) > 2  # the weighting shows
    want = rewardbench_sections(acc)
    assert res["rewardbench"]["sections"] == pytest.approx(want["sections"])
    assert set(want["sections"]) == {"Chat", "Reasoning", PRIOR}
    assert res["rewardbench"]["score"] == pytest.approx(want["score"])
    assert res["rewardbench"]["sections"]["Chat"] == pytest.approx((100 * acc["alpacaeval-easy"]
                                                                    + 28 * acc["mt-bench-easy"]) / 128)
    printed = capsys.readouterr().out
    assert "RewardBench sections: Chat" in printed and "mt-bench-easy" in printed and "RewardBench sections" in md


def test_rewardbench2_rows_give_best_of_n(tiny_rm, tmp_path, capsys):
    rows = rewardbench2_rows(9)
    data = write_jsonl(tmp_path / "rb2.jsonl", rows)
    assert run_cli("--model", str(tiny_rm), "--data", str(data), "--out", str(tmp_path / "o"), "--n-boot", "200") == 0
    res, scores, _ = read_out(tmp_path / "o")
    ref_c, ref_r = reference_scores(tiny_rm, rows)
    assert [s["chosen"] for s in scores] == pytest.approx(ref_c, abs=1e-4)
    assert [x for s in scores for x in s["rejected"]] == pytest.approx([x for r in ref_r for x in r], abs=1e-4)
    wins = [c > max(r) for c, r in zip(ref_c, ref_r)]
    b = res["best_of_n"]
    assert (b["n"], b["answers_per_row"], b["chance"]) == (9, [4], 0.25)
    assert b["estimate"] == pytest.approx(np.mean(wins))
    assert res["rows"] == 9 and res["pairs"] == 27 and res["accuracy"]["resampled"] == "rows"
    assert res["accuracy"]["estimate"] == pytest.approx(np.mean([c > x for c, r in zip(ref_c, ref_r) for x in r]))
    assert {s: v["kind"] for s, v in res["subsets"].items()} == {"Factuality": "best-of-N", "Focus": "best-of-N",
                                                                  "Math": "best-of-N"}
    assert res["subsets"]["Math"]["accuracy"] == pytest.approx(np.mean(wins[1::3]))
    assert res["subset_mean"] == pytest.approx(np.mean([np.mean(wins[k::3]) for k in range(3)]))
    assert res["rewardbench"] is None
    assert "best-of-N accuracy (chosen above all 3 rejected)" in capsys.readouterr().out


def test_a_run_folder_resolves_to_its_ser_reward_model(tiny_rm, tmp_path):
    from ser.rm_eval import resolve_model

    run = tmp_path / "outputs" / "ser_hh_minilm" / "experiment=ser_hh_minilm"
    shutil.copytree(tiny_rm, run / "ser" / "reward_model")
    assert resolve_model(str(run)) == str(run / "ser" / "reward_model")
    assert resolve_model(str(run / "ser")) == str(run / "ser" / "reward_model")
    assert resolve_model("OpenAssistant/reward-model-deberta-v3-large-v2").startswith("OpenAssistant/")  # a hub id
    with pytest.raises(ModelNotFound, match="no such folder"):
        resolve_model("outputs/none/ser/reward_model")


def test_a_decoder_without_ser_reward_json_uses_its_chat_template(tmp_path, capsys):
    """A plain Hugging Face folder (no ser_reward.json): a 2-layer Llama with SmolLM2's tokenizer."""
    import torch
    from omegaconf import OmegaConf

    from ser.model import build_hf_model, load_tokenizer
    from ser.rewards import sequence_rewards

    mcfg = OmegaConf.load(CONF / "model" / "tiny_decoder.yaml")
    tok = load_tokenizer(mcfg)
    net = build_hf_model(mcfg, tok)
    with torch.no_grad():
        net.score.weight.mul_(100.0)
    net.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    rows = plain_rows(10)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert run_cli("--model", str(tmp_path / "rm"), "--data", str(data), "--out", str(tmp_path / "o"),
                   "--batch-size", "3", "--n-boot", "100") == 0
    res, scores, _ = read_out(tmp_path / "o")
    assert res["formatting"] == {"chat_template": True, "template": None, "max_length": 1024, "source": "the tokenizer",
                                 "cut": {}}
    assert res["ser_reward"] is None and "(chat template, from the tokenizer" in capsys.readouterr().out

    def alone(prompt: str, answer: str) -> float:  # the whole conversation in the chat template, unpadded
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        ids = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            return float(sequence_rewards(net.eval(), torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)))

    assert np.ptp([s["chosen"] for s in scores]) > 1e-2  # rewards far apart compared with the tolerance
    assert [s["chosen"] for s in scores] == pytest.approx([alone(r["prompt"], r["chosen"]) for r in rows], abs=1e-4)
    assert [s["rejected"][0] for s in scores] == pytest.approx([alone(r["prompt"], r["rejected"]) for r in rows],
                                                               abs=1e-4)


def test_formatting_flags_and_defaults(tiny_rm):
    from ser.rm_eval import formatting, load_reward_model

    model, tok, meta, path = load_reward_model(str(tiny_rm))
    assert path == str(tiny_rm) and meta["max_length"] == 48
    assert formatting(tok, model, meta)["source"] == "ser_reward.json"
    f = formatting(tok, model, meta, template="Prompt: {q} Reply: {a}", max_length=32)
    assert f == {"chat_template": False, "template": "Prompt: {q} Reply: {a}", "max_length": 32, "source": "--template"}
    plain = formatting(tok, model, None)  # not a ser export, no chat template: the plain template, the model's limit
    assert plain["template"] == "Question: {q}\n\nAnswer: {a}" and plain["source"] == "the default"
    assert plain["max_length"] == min(tok.model_max_length, 512)
    with pytest.raises(ConfigError, match="no chat template"):
        formatting(tok, model, meta, chat=True)


def test_sample_is_seeded_and_progress_lines_reach_a_log(tiny_rm, tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", plain_rows(40))
    outs = []
    for k, seed in enumerate((1, 1, 2)):
        out = tmp_path / f"o{k}"
        assert run_cli("--model", str(tiny_rm), "--data", str(data), "--sample", "10", "--seed", str(seed),
                       "--out", str(out), "--n-boot", "100", "--batch-size", "2", "--progress-every", "0.01") == 0
        outs.append([s["source"] for s in read_out(out)[1]])
    assert len(outs[0]) == 10 and outs[0] == outs[1] != outs[2]
    err = capsys.readouterr().err  # pytest's stdout is not a terminal: plain progress lines
    assert "[evaluate-rm] scoring answers:" in err and "sequences" in err


def test_unreadable_models_end_in_one_line(tiny_rm, tmp_path, capsys):
    from transformers import AutoConfig, AutoModel

    from ser.rm_eval import load_reward_model

    data = write_jsonl(tmp_path / "pairs.jsonl", plain_rows(4))
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    backbone = tmp_path / "backbone"  # a BERT without a score head: its rewards would be random
    cfg = AutoConfig.from_pretrained(tiny_rm)
    cfg.architectures = ["BertModel"]
    AutoModel.from_config(cfg).save_pretrained(backbone)
    cases = {str(tmp_path / "missing"): "no such folder", str(empty): "no config.json there",
             str(broken): "could not be loaded", str(backbone): "is a BertModel, not a sequence-classification",
             "nobody/no-such-model": "could not be loaded"}
    for model, what in cases.items():
        capsys.readouterr()
        assert run_cli("--model", model, "--data", str(data), "--out", str(tmp_path / "o")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: model '{model}'") and what in err[0], err
    # a backbone checkpoint whose config claims a classifier: the head would be initialised at random
    nohead = tmp_path / "nohead"
    AutoModel.from_config(cfg).save_pretrained(nohead)
    (nohead / "config.json").write_text(json.dumps({**json.loads((nohead / "config.json").read_text()),
                                                    "architectures": ["BertForSequenceClassification"]}))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_rm) / f, nohead / f)
    with pytest.raises(ModelNotFound, match=r"has no trained score head \(classifier.bias, classifier.weight"):
        load_reward_model(str(nohead))


def test_missing_file_is_one_line_and_exit_2_in_a_fresh_process(tiny_rm, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args, what in ((["--data", str(tmp_path / "none.jsonl")], "error: data file not found: "),
                       (["--data-config", "nope"], "error: --data-config nope: no conf/data/nope.yaml")):
        p = subprocess.run([sys.executable, "-m", "ser.cli", "evaluate-rm", "--model", str(tiny_rm), *args],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        err = p.stderr.strip()
        assert p.returncode == 2 and err.startswith(what) and len(err.splitlines()) == 1, p.stderr
        assert "Traceback" not in p.stderr and p.stdout == ""


@pytest.mark.integration
def test_real_hh_data_with_the_tiny_model(tiny_rm, data_dir, tmp_path, capsys):
    assert run_cli("--model", str(tiny_rm), "--data-config", "hh_rlhf", "--limit", "50", "--out", str(tmp_path / "o"),
                   "--n-boot", "500") == 0
    res, scores, _ = read_out(tmp_path / "o")
    assert res["data"]["files"] == ["hh-rlhf/harmless-base/test.jsonl.gz"] and res["data"]["format"] == "hh"
    assert res["rows"] == res["pairs"] == len(scores) == 50 and res["data"]["rows_read"] >= 50
    assert scores[0]["source"] == "test.jsonl.gz:1"
    # HH prompts are long: at 48 tokens most answers are cut (prompt from the left, answer kept)
    assert sum(res["formatting"]["cut"].values()) > 50
    right = np.mean([s["chosen"] > s["rejected"][0] for s in scores])
    assert res["accuracy"]["estimate"] == pytest.approx(right) and 0 < res["accuracy"]["low"] < right
    assert "data: hh_rlhf (read 50 rows, kept 50 pairs, dropped: none; limit 50)" in capsys.readouterr().out


def test_only_the_cli_imports_the_evaluator():
    from ser import cli
    from tests.test_imports import import_graph

    assert "evaluate-rm" in cli.COMMANDS and "ser evaluate-rm --model RM" in cli.__doc__

    graph = import_graph()
    users = {m for m, deps in graph.items() if "ser.rm_eval" in deps}
    assert users == {"ser.cli"}
    assert {m for m, deps in graph.items() if "ser.rm_metrics" in deps} == {"ser.rm_eval"}
    assert graph["ser.rm_metrics"] == {"ser.calibration", "ser.length_control", "ser.significance"}
