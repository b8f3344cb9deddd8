"""RM-Bench (ser/rm_bench.py, ser/rm_bench_eval.py): the 3x3 matrix, hard / normal / easy, domains
(safety-refuse and safety-response pooled into safety) and the overall score by hand and against
RM-Bench's definition written out plainly; bootstrap and paired CIs; the style effect; reading and
detecting the files (malformed rows in one line naming file and row); ``ser evaluate-rm`` end to
end with the tiny reward model on hand-made files."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ser.errors import DataError
from ser.rm_bench import (bootstrap_domain_mean, hard_normal_easy, is_rm_bench_row, load_rm_bench,
                          looks_like_rm_bench, paired_by_domain, paired_difference, style_matrix, style_preference,
                          summarize)
from ser.rm_bench_eval import is_rm_bench
from tests.test_rm_eval import reference_scores, run_cli, tiny_rm  # noqa: F401  (tiny_rm: a fixture)

# Four prompts' rewards, styles in order (concise, detailed, markdown), and their files
A = ([1, 2, 3], [0, 2.5, 4])  # chat
B = ([5, 5, 5], [1, 5, 2])  # safety-refuse: the column of 5 is three ties
C = ([3, 2, 1], [0, 0, 0])  # safety-refuse: all right
D = ([0, 0, 0], [1, 1, 1])  # safety-response: all wrong
SUBDOMAINS = ["chat", "safety-refuse", "safety-refuse", "safety-response"]


def rm_bench_definition(score_chosen, score_rejected) -> dict:
    """RM-Bench's compute_accuracy (README), restated: count over prompts how often chosen style i
    beats rejected style j, divide by the prompts, then hard = the mean of the 3 cells above the
    diagonal, normal = the diagonal, easy = the 3 cells below."""
    acc = np.zeros((3, 3))
    for sc, sr in zip(score_chosen, score_rejected):
        for i in range(3):
            for j in range(3):
                if sc[i] > sr[j]:
                    acc[i][j] += 1
    acc /= len(score_chosen)
    return {"hard": np.sum(np.triu(acc, 1)) / 3, "normal": np.mean(np.diag(acc)), "easy": np.sum(np.tril(acc, -1)) / 3}


# --------------------------------------------------------------------------------------------
# The score by hand
# --------------------------------------------------------------------------------------------

def test_style_matrix_and_hard_normal_easy_by_hand():
    m = style_matrix(*A)
    # chosen 1, 2, 3 against rejected 0, 2.5, 4: each beats 0; only 3 beats 2.5; none beats 4
    assert m.tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert {k: float(v) for k, v in hard_normal_easy(m).items()} == pytest.approx(
        {"hard": 0, "normal": 1 / 3, "easy": 1, "average": 4 / 9})
    m = style_matrix(*B)  # ties count as wrong: column 1 (rejected 5) is all 0
    assert m.tolist() == [[1, 0, 1], [1, 0, 1], [1, 0, 1]]
    assert {k: float(v) for k, v in hard_normal_easy(m).items()} == pytest.approx(
        {"hard": 2 / 3, "normal": 2 / 3, "easy": 2 / 3, "average": 2 / 3})
    stack = style_matrix(np.array([A[0], B[0]]), np.array([A[1], B[1]]))  # (prompts, 3, 3) at once
    assert stack.shape == (2, 3, 3) and hard_normal_easy(stack)["hard"].tolist() == pytest.approx([0, 2 / 3])


def test_summarize_by_hand_and_against_the_definition():
    chosen = np.array([A[0], B[0], C[0], D[0]], dtype=float)
    rejected = np.array([A[1], B[1], C[1], D[1]], dtype=float)
    res = summarize(chosen, rejected, SUBDOMAINS, n_boot=200)
    # chat = prompt A; safety pools B, C, D (3 prompts: 2/3, 1 and 0 on each of hard / normal / easy)
    assert list(res["domains"]) == ["chat", "safety"] and list(res["subdomains"]) == SUBDOMAINS[:2] + SUBDOMAINS[3:]
    chat, safety = res["domains"]["chat"], res["domains"]["safety"]
    assert (chat["prompts"], safety["prompts"]) == (1, 3)
    assert [chat[k]["estimate"] for k in ("hard", "normal", "easy", "average")] == pytest.approx([0, 1 / 3, 1, 4 / 9])
    assert [safety[k]["estimate"] for k in ("hard", "normal", "easy", "average")] == pytest.approx([5 / 9] * 4)
    # pooled, not the mean of the two files (which would give (5/6 + 0) / 2 = 5/12)
    assert res["subdomains"]["safety-refuse"]["hard"]["estimate"] == pytest.approx(5 / 6)
    assert res["subdomains"]["safety-response"]["hard"]["estimate"] == 0
    # overall: the mean of the two domains
    o = res["overall"]
    assert [o[k]["estimate"] for k in ("hard", "normal", "easy", "average")] == \
        pytest.approx([5 / 18, 4 / 9, 7 / 9, 1 / 2])
    # each domain against RM-Bench's own computation
    for name, rows in (("chat", [0]), ("safety", [1, 2, 3])):
        ref = rm_bench_definition(chosen[rows], rejected[rows])
        assert {k: res["domains"][name][k]["estimate"] for k in ref} == pytest.approx(ref)
    assert np.asarray(res["domains"]["chat"]["matrix"]).tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert np.asarray(res["matrix"]) == pytest.approx((np.asarray(chat["matrix"]) + np.asarray(safety["matrix"])) / 2)
    assert res["ties"] == 3 and res["comparisons"] == 36 and res["prompts"] == 4
    assert res["subdomain_counts"] == {"chat": 1, "safety-refuse": 2, "safety-response": 1}
    # domains in RM-Bench's table order (chat, math, code, safety), whatever the order of the files
    assert list(summarize(chosen[::-1], rejected[::-1], SUBDOMAINS[::-1], n_boot=10)["domains"]) == ["chat", "safety"]


def test_style_preference_by_hand():
    s = style_preference(np.array([A[0], B[0]], dtype=float), np.array([A[1], B[1]], dtype=float))
    # A: 1<2<3 and 0<2.5<4: the more styled wins all 6; B chosen 5, 5, 5: 3 ties (not higher);
    # B rejected 1, 5, 2: detailed over concise yes, markdown over detailed no, markdown over concise yes
    assert s["per_prompt"].tolist() == pytest.approx([1, 2 / 6])
    assert s["all"] == pytest.approx(8 / 12) and s["chosen"] == pytest.approx(3 / 6)
    assert s["rejected"] == pytest.approx(5 / 6)
    assert s["steps"] == pytest.approx({"detailed over concise": 3 / 4, "markdown over plain detailed": 1 / 2,
                                        "markdown over concise": 3 / 4})
    assert (s["ties"], s["comparisons"]) == (3, 12)


def test_bootstrap_and_paired_differences():
    one = bootstrap_domain_mean([[0.5] * 9])
    assert (one.estimate, one.low, one.high, one.n) == (0.5, 0.5, 0.5, 9)
    # stratified: the spread between domains is not resampled, only the spread inside each
    two = bootstrap_domain_mean([[1, 1, 1], [0, 0]])
    assert (two.estimate, two.low, two.high) == (0.5, 0.5, 0.5)
    # 400 prompts, 300 right: 0.75 -+ 1.96 * sqrt(0.75 * 0.25 / 400) = -+0.0424
    c = bootstrap_domain_mean([[1] * 300 + [0] * 100], seed=3)
    assert c.low == pytest.approx(0.7076, abs=0.008) and c.high == pytest.approx(0.7924, abs=0.008)
    assert bootstrap_domain_mean([[1] * 300 + [0] * 100], seed=3) == c
    with pytest.raises(ValueError):
        bootstrap_domain_mean([[1, 0], []])
    # paired: B is A minus 0.1 on every prompt -> exactly 0.1 with no spread, though A alone spreads widely
    a = [np.tile([1.0, 0.0], 50)]
    d = paired_difference(a, [a[0] - 0.1])
    assert (d.estimate, d.low, d.high) == pytest.approx((0.1, 0.1, 0.1))
    assert bootstrap_domain_mean(a).high - bootstrap_domain_mean(a).low > 0.15
    with pytest.raises(ValueError, match="same prompts"):
        paired_difference([[1, 0]], [[1, 0, 1]])


def test_paired_by_domain_matches_prompts_by_file_and_id():
    rows = [{"subdomain": s, "id": k, "source": f"f:{k}", "chosen": c, "rejected": r}
            for k, (s, (c, r)) in enumerate(zip(SUBDOMAINS, (A, B, C, D)))]
    # model B: every reward of prompt A's rejected answers lowered below all chosen ones (A becomes all right)
    other = [dict(r) for r in reversed(rows)] + [{"subdomain": "code", "id": 9, "source": "g:1", "chosen": [0] * 3,
                                                  "rejected": [0] * 3}]
    other[-2] = {**other[-2], "rejected": [-9, -9, -9]}
    p = paired_by_domain(rows, other, n_boot=200)
    assert (p["prompts"], p["only_a"], p["only_b"]) == (4, 0, 1)
    # A's hard 0 vs 1, normal 1/3 vs 1, easy 1 vs 1; safety identical
    assert [p["domains"]["chat"][k]["estimate"] for k in ("hard", "normal", "easy")] == pytest.approx([-1, -2 / 3, 0])
    assert p["domains"]["safety"]["average"]["estimate"] == 0 and p["domains"]["safety"]["prompts"] == 3
    assert p["overall"]["hard"]["estimate"] == pytest.approx(-0.5)  # mean of domains: (-1 + 0) / 2
    with pytest.raises(DataError, match="no RM-Bench prompt in common"):
        paired_by_domain(rows, [{**rows[0], "id": 77}])


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def bench_rows(n: int, tag: str) -> list[dict]:
    return [{"id": 100 + k, "prompt": f"{tag} question {k}?", "subset": f"{tag}-subset",
             "chosen": [f"right {k}.", f"right {k}, in detail and at length.", f"**Right** {k}:\n- in detail"],
             "rejected": [f"wrong {k}.", f"wrong {k}, in detail and at length.", f"**Wrong** {k}:\n- in detail"]}
            for k in range(n)]


def write_json(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    return path


def test_reading_detects_and_names_malformed_rows(tmp_path, caplog):
    good = bench_rows(3, "chat")
    bad = [{**good[0], "chosen": good[0]["chosen"][:2]},  # 2 chosen answers
           {**good[0], "prompt": ""},  # no prompt
           {**good[0], "rejected": ["a", "", "c"]},  # an empty answer
           "not an object"]
    f = write_json(tmp_path / "chat_filtered.json", good[:2] + bad + good[2:])
    assert is_rm_bench_row(good[0]) and not is_rm_bench_row(bad[0])
    assert looks_like_rm_bench(f)
    with caplog.at_level(logging.WARNING, logger="ser.data"):
        items, rep = load_rm_bench([str(f)])
    assert (rep.rows, rep.kept) == (7, 3)
    assert dict(rep.dropped) == {"malformed": 2, "missing_field": 1, "unparsable": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("chat_filtered.json:3: skipped a malformed RM-Bench row (malformed): 'chosen' has 2 "
                          "answers; an RM-Bench row has 3 (concise, detailed, markdown)") for m in lines)
    assert any("chat_filtered.json:4: skipped a malformed RM-Bench row (missing_field): no prompt text" in m
               for m in lines)
    assert any("chat_filtered.json:5: skipped a malformed RM-Bench row (malformed): 'rejected' holds an empty" in m
               for m in lines)
    assert any("chat_filtered.json: element 6 skipped: not a JSON object" in m for m in lines)
    assert [it["source"] for it in items] == ["chat_filtered.json:1", "chat_filtered.json:2", "chat_filtered.json:7"]
    assert items[0]["prompt"] == [{"role": "user", "content": "chat question 0?"}]
    assert (items[0]["domain"], items[0]["subdomain"], items[0]["id"]) == ("chat", "chat", 100)
    refuse, _ = load_rm_bench([str(write_json(tmp_path / "safety-refuse_filtered.json", bench_rows(1, "s")))])
    assert (refuse[0]["domain"], refuse[0]["subdomain"]) == ("safety", "safety-refuse")
    with pytest.raises(DataError, match="no usable RM-Bench rows"):
        load_rm_bench([str(write_json(tmp_path / "x.json", bad[:2]))])


def test_detection_decides_between_rm_bench_and_the_other_formats(tmp_path):
    rm = write_json(tmp_path / "code_filtered.json", bench_rows(2, "code"))
    rb2 = write_json(tmp_path / "rb2.json", [{"prompt": "q", "chosen": ["a"], "rejected": ["b", "c", "d"]}])
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    assert is_rm_bench("auto", [str(rm)]) and is_rm_bench("rm-bench", [str(jsonl)])
    assert not is_rm_bench("auto", [str(rb2)]) and not is_rm_bench("auto", [str(jsonl)])
    assert not is_rm_bench("pairs", [str(rm)]) and not is_rm_bench("auto", [str(tmp_path / "missing.json")])
    with pytest.raises(DataError, match="mixes RM-Bench files .*code_filtered.json.* with other files"):
        is_rm_bench("auto", [str(rm), str(jsonl)])


def test_the_shipped_files_read_whole(data_dir):
    items, rep = load_rm_bench([f"rm-bench/{d}_filtered.json" for d in ("chat", "code", "safety-refuse",
                                                                        "safety-response")])
    assert rep.kept == rep.rows == 798 and not rep.dropped  # 129 + 228 + 284 + 157 (the data README)
    assert {d: sum(it["domain"] == d for it in items) for d in ("chat", "code", "safety")} == \
        {"chat": 129, "code": 228, "safety": 441}


# --------------------------------------------------------------------------------------------
# ser evaluate-rm end to end
# --------------------------------------------------------------------------------------------

def test_evaluate_rm_on_rm_bench_end_to_end(tiny_rm, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("SER_DATA_DIR", str(tmp_path / "data"))
    write_json(tmp_path / "data" / "rm-bench" / "chat_filtered.json", bench_rows(4, "chat"))
    write_json(tmp_path / "data" / "rm-bench" / "safety-refuse_filtered.json", bench_rows(3, "refuse"))
    files = ["rm-bench/chat_filtered.json", "rm-bench/safety-refuse_filtered.json"]  # relative to the data root
    out = tmp_path / "o"
    assert run_cli("--model", str(tiny_rm), "--data", *files, "--out", str(out), "--n-boot", "300",
                   "--batch-size", "5") == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "rm_bench.json").read_text())
    scores = [json.loads(x) for x in (out / "rm_bench_scores.jsonl").read_text().splitlines()]
    # every reward is the one the answer gets alone, formatted as the export's ser_reward.json says
    rows = bench_rows(4, "chat") + bench_rows(3, "refuse")
    flat = [{"prompt": r["prompt"], "chosen": r["chosen"][0], "rejected": r["chosen"][1:] + r["rejected"]}
            for r in rows]
    ref_c, ref_r = reference_scores(tiny_rm, flat)
    six = np.array([[c, *r] for c, r in zip(ref_c, ref_r)])
    assert np.array([s["chosen"] + s["rejected"] for s in scores]) == pytest.approx(six, abs=1e-4)
    assert [s["subdomain"] for s in scores] == ["chat"] * 4 + ["safety-refuse"] * 3
    # the figures are summarize()'s on those rewards
    ref = summarize(np.array([s["chosen"] for s in scores]), np.array([s["rejected"] for s in scores]),
                    [s["subdomain"] for s in scores], n_boot=300)
    for k in ("hard", "normal", "easy", "average"):
        assert res["overall"][k]["estimate"] == pytest.approx(ref["overall"][k]["estimate"])
        assert res["domains"]["safety"][k] == pytest.approx(ref["domains"]["safety"][k])
    assert res["data"]["format"] == "rm-bench" and res["data"]["kept"] == 7
    assert res["formatting"]["source"] == "ser_reward.json" and res["timings"]["sequences"] == 42
    for text in ("RM-Bench accuracy", "hard", "normal", "easy", "chat", "safety", "safety-refuse", "overall",
                 "(mean of 2 domains)", "style effect", "ties:", "written:"):
        assert text in printed
    assert (out / "rm_bench_matrix.png").stat().st_size > 1000 and "rm_bench_matrix.png" in (out / "rm_bench.md").read_text()
    # one file; --format rm-bench named; paired with the first run: the same model, differences 0
    assert run_cli("--model", str(tiny_rm), "--data", files[1], "--format", "rm-bench", "--out", str(tmp_path / "p"),
                   "--n-boot", "100", "--compare-to", str(out)) == 0
    printed = capsys.readouterr().out
    paired = json.loads((tmp_path / "p" / "rm_bench.json").read_text())["paired"]
    assert paired["prompts"] == 3 and paired["only_b"] == 4
    assert all(paired["overall"][k]["estimate"] == 0 for k in ("hard", "normal", "easy", "average"))
    assert "(mean of 1 domain)" in printed and "paired with" in printed


def test_evaluate_rm_on_a_malformed_rm_bench_file_names_the_row(tiny_rm, tmp_path, capsys, caplog):  # noqa: F811
    rows = bench_rows(2, "chat")
    rows[1]["rejected"] = rows[1]["rejected"][:1]
    f = write_json(tmp_path / "chat_filtered.json", rows)
    with caplog.at_level(logging.WARNING, logger="ser.data"):
        assert run_cli("--model", str(tiny_rm), "--data", str(f), "--format", "rm-bench", "--out",
                       str(tmp_path / "o"), "--n-boot", "50") == 0
    assert any(r.getMessage().endswith("chat_filtered.json:2: skipped a malformed RM-Bench row (malformed): "
                                       "'rejected' has 1 answers; an RM-Bench row has 3 (concise, detailed, markdown)")
               for r in caplog.records)
    assert "dropped: malformed=1" in capsys.readouterr().out


def test_sign_flip_p_by_hand():
    from ser.rm_bench import sign_flip_p

    # three equal differences: of the 8 sign patterns only +++ and --- reach |mean| = 1: p = 2/8
    assert sign_flip_p([[1.0, 1.0, 1.0]]) == pytest.approx(0.25)
    # zeros carry no sign: [2, 0] is one non-zero difference, p = 1 (both patterns reach |2|)
    assert sign_flip_p([[2.0, 0.0]]) == pytest.approx(1.0)
    assert sign_flip_p([[0.0, 0.0]]) == 1.0
    # strata weigh by 1/(strata x size): [[1], [1, 1]] -> weights 1/2, 1/4, 1/4; |T| = 1 is reached
    # by +++ and --- only (flipping the 1/2 leaves |T| = 0; flipping one 1/4 leaves 1/2): p = 2/8
    assert sign_flip_p([[1.0], [1.0, 1.0]]) == pytest.approx(0.25)
    # [3, -1]: T = 1/2 * (3 - 1) = 1; patterns give |T| in {1, 2, 2, 1}: all >= 1 -> p = 1
    assert sign_flip_p([[3.0, -1.0]]) == pytest.approx(1.0)
    # Monte Carlo beyond exact_up_to: 20 differences of +1: exact p = 2 / 2^20; MC with the +1 correction
    # gives 1 / (1 + n_perm) at least, and agrees with the exact value when forced to enumerate
    assert sign_flip_p([[1.0] * 20], exact_up_to=20) == pytest.approx(2 / 2 ** 20)
    assert sign_flip_p([[1.0] * 20], n_perm=2000) == pytest.approx(1 / 2001, abs=2e-3)
    # a clear null: symmetric differences -> p near 1; same seed, same p
    null = [[0.3, -0.3] * 20]
    assert sign_flip_p(null, n_perm=2000, seed=1) > 0.9 and sign_flip_p(null, n_perm=2000, seed=1) == sign_flip_p(null, n_perm=2000, seed=1)
    with pytest.raises(ValueError):
        sign_flip_p([[1.0], []])


def test_rm_bench_paired_difference_has_a_p_that_agrees_with_its_interval():
    from ser.rm_bench import paired_difference

    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 300)
    shifted = paired_difference([a + rng.normal(0.08, 0.2, 300)], [a], n_boot=4000)
    assert shifted.low > 0 and shifted.p < 0.05
    same = paired_difference([a + rng.normal(0.0, 0.2, 300)], [a], n_boot=4000)
    assert same.low < 0 < same.high and same.p > 0.05


def test_rm_bench_table_of_table1_models(tmp_path, capsys):
    """experiments/rm_bench_table.py on hand-made outputs: SER right on every comparison of 40 prompts
    where the seed RM is right on none -> +100 points, bold; the full RM equal to the seed -> +0.0."""
    import importlib.util
    import json

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("rm_bench_table", ROOT / "experiments" / "rm_bench_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    good = {"chosen": [3.0, 3.0, 3.0], "rejected": [1.0, 1.0, 1.0]}
    bad = {"chosen": [1.0, 1.0, 1.0], "rejected": [3.0, 3.0, 3.0]}
    half = lambda e: {"estimate": e, "low": e, "high": e, "n": 40}  # noqa: E731
    for model, rewards, acc in (("seed", bad, 0.0), ("ser", good, 1.0), ("full", bad, 0.0)):
        d = tmp_path / "bench" / "ser_hh_minilm" / "seed_0" / model
        d.mkdir(parents=True)
        rows = [{"subdomain": "chat" if i < 20 else "code", "id": i, "source": "f", **rewards} for i in range(40)]
        (d / "rm_bench_scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "rm_bench.json").write_text(json.dumps({
            "overall": {k: half(acc) for k in ("hard", "normal", "easy", "average")}, "ties": 0, "comparisons": 360,
            "domains": {"chat": {}, "code": {}}, "prompts": 40, "dtype": "float32", "formatting": {"max_length": 512}}))
    run = tmp_path / "runs" / "ser_hh_minilm" / "experiment=ser_hh_minilm,seed=0,selection.length_balance=False"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"data": "hh_rlhf", "phases": {
        "ser": {"loops": [{"test_acc": 0.55}], "test_acc": 0.6}, "full": {"test_acc": 0.65}},
        "statistics": {"test": {"ser": {"ci": {"estimate": 0.05, "low": 0.01, "high": 0.09}}}}}))
    assert mod.main([str(tmp_path / "bench"), "--runs", str(tmp_path / "runs"), "--n-boot", "500",
                     "--copy", str(tmp_path / "copy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    ser = next(x for x in lines if "| SER final |" in x)
    full = next(x for x in lines if "| full data |" in x)
    assert "| 60.0 | 100.0 | 100.0 | 100.0 | 100.0 | **+5.0 [+1.0, +9.0]** | **+100.0 [+100.0, +100.0], p " in ser
    assert "| +0.0 [+0.0, +0.0], p 1 |" in full and "**" not in full.split("|")[9]
    # the copy regenerates the same table without the runs
    capsys.readouterr()
    assert mod.main([str(tmp_path / "copy"), "--runs", str(tmp_path / "copy" / "runs"), "--n-boot", "500"]) == 0
    assert capsys.readouterr().out.splitlines()[:5] == lines[:5]
