"""Human-label acquisition (ser/acquisition.py): the rules, amounts, diagnostics, pair ids, the
answers file and the oracles, on hand-computed values; and label_and_acquire with a fake labeller."""
from __future__ import annotations

import json
import numpy as np
import pytest
from omegaconf import OmegaConf

from ser import acquisition as aq
from ser.errors import DataError
from ser.loop import Labeling


def test_amounts_are_counts_or_shares():
    assert aq.resolve_amount(0.02, 500) == 10 and aq.resolve_amount(5, 500) == 5
    assert aq.resolve_amount(0.001, 100) == 1 and aq.resolve_amount(0, 100) == 0  # a share asks for at least one
    # per_loop 10% of the initial 100 = 10, but the budget (5% of the initial 100 = 5) has 2 left after 3 used
    assert aq.request_size(0.1, 0.05, 90, 100, 3) == 2
    # shares are of the initial pool, whatever the pool holds now: 3% of 200 = 6 while 50 are left
    assert aq.request_size(0.03, 0.5, 50, 200, 0) == 6
    assert aq.request_size(10, 25, 8, 100, 20) == 5  # 5 left of 25 ...
    assert aq.request_size(10, 25, 3, 100, 20) == 3  # ... but only 3 pairs in the pool
    assert aq.request_size(10, 25, 80, 100, 25) == 0  # budget spent


def test_pair_probability_and_confidence():
    p = aq.pair_probability(np.array([0.9, 0.5]), np.array([0.1, 0.7]))
    assert p == pytest.approx([0.9, 0.4])
    assert aq.confidence(np.array([0.875, 0.5, 0.25])) == pytest.approx([0.375, 0.0, 0.25])


P = np.array([0.875, 0.625, 0.375, 0.25, 0.5625])  # confidence .375 .125 .125 .25 .0625 (exact in binary)


def test_uncertain_takes_the_lowest_confidence_ties_in_pool_order():
    assert aq.choose("uncertain", P, 1).tolist() == [4]
    assert aq.choose("uncertain", P, 2).tolist() == [1, 4]  # 1 and 2 tie at .125: pool order
    assert aq.choose("uncertain", P, 3).tolist() == [1, 2, 4]
    assert aq.choose("uncertain", P, 9).tolist() == [0, 1, 2, 3, 4]
    assert aq.choose("none", P, 3).tolist() == [] and aq.choose("uncertain", P, 0).tolist() == []


def test_disagree_flips_and_dropout_then_confidence():
    p = np.array([0.875, 0.375, 0.375, 0.25, 0.5625])
    prev = np.array([1, 1, 0, -1, 0])  # a1 first, a1 first, a2 first, not scored, a2 first
    flips = aq.flipped(prev, p)
    assert flips.tolist() == [0, 1, 0, 0, 1]
    mc = np.array([1.0, np.nan, 0.5, 0.75, 1.0])  # NaN: not scored with dropout
    d = aq.disagreement(flips, mc, 5)
    assert d == pytest.approx([0, 1, 0.5, 0.25, 1])
    assert aq.choose("disagree", p, 1, disagree_score=d).tolist() == [4]  # ties with 1 at 1.0; conf .0625 < .125
    assert aq.choose("disagree", p, 3, disagree_score=d).tolist() == [1, 2, 4]
    # no previous loop and no dropout (loop 0): every pair ties, so the confidence decides
    assert aq.choose("disagree", P, 2).tolist() == aq.choose("uncertain", P, 2).tolist()


def test_random_is_seeded_by_seed_and_loop():
    p = np.full(100, 0.5)
    a = aq.choose("random", p, 10, seed=3, loop=1)
    assert a.tolist() == aq.choose("random", p, 10, seed=3, loop=1).tolist()
    assert len(set(a.tolist())) == 10 and a.tolist() == sorted(a.tolist())
    assert a.tolist() != aq.choose("random", p, 10, seed=3, loop=2).tolist()
    assert a.tolist() != aq.choose("random", p, 10, seed=4, loop=1).tolist()
    with pytest.raises(ValueError, match="acquisition.rule='most'"):
        aq.choose("most", p, 1)


def test_request_fields():
    f = aq.request_fields(np.array([0.75, 0.25, 0.5]), np.array([True, True, False]), used_before=4)
    # right on the first; wrong on the second (says a2, the label says a1); at .5 it could not tell: wrong
    assert f == {"human_asked": 3, "human_confidence": pytest.approx(1 / 6), "human_rm_wrong": pytest.approx(2 / 3),
                 "human_labels_used": 7}


def test_pair_id_ignores_the_runs_answer_order():
    assert aq.pair_id("q", "x", "y") == aq.pair_id("q", "y", "x")
    assert aq.pair_id("q", "x", "y") != aq.pair_id("q2", "x", "y") and len(aq.pair_id("q", "x", "y")) == 16
    assert aq.canonical_first("apple", "banana") and not aq.canonical_first("banana", "apple")


def test_answers_file_and_its_errors(tmp_path):
    f = tmp_path / "answers.jsonl"
    f.write_text('{"pair_id": "a", "winner": "chosen"}\n\n{"pair_id": "b", "winner": "Rejected"}\n'
                 '{"pair_id": "a", "winner": "chosen"}\n')
    assert aq.read_answers(f) == {"a": True, "b": False}
    c = tmp_path / "answers.csv"
    c.write_text("pair_id,winner\na,rejected\nb,chosen\n")
    assert aq.read_answers(c) == {"a": False, "b": True}
    bad = {'{"pair_id": "a", "winner": "left"}': "row 1: winner='left' is not chosen or rejected",
           '{"winner": "chosen"}': "row 1: no pair_id",
           '{"pair_id": "a", "winner": "chosen"}\n{"pair_id": "a", "winner": "rejected"}': "row 2: pair a is answered both ways",
           '{"pair_id": "a", "winner": ': "row 1: not JSON"}
    for text, msg in bad.items():
        f.write_text(text + "\n")
        with pytest.raises(DataError) as e:
            aq.read_answers(f)
        assert str(e.value).startswith(f"{f} {msg}") and "\n" not in str(e.value)
    c.write_text("pair_id,winner\na,maybe\n")
    with pytest.raises(DataError, match=r"answers.csv row 2: winner='maybe'"):  # row 1 is the header
        aq.read_answers(c)
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DataError, match="use a .jsonl or .csv file"):
        aq.read_answers(tmp_path / "x.txt")
    with pytest.raises(DataError, match="no such file"):
        aq.read_answers(tmp_path / "missing.jsonl")


def test_oracles_reveal_only_what_is_asked(tmp_path):
    hidden = np.array([True, False, True, False])
    assert aq.HiddenOracle(hidden).reveal(np.array([3, 0]), 0).tolist() == [False, True]
    f = tmp_path / "answers.jsonl"
    # canonical first answer wins for a and b; the second for c
    f.write_text("".join(json.dumps({"pair_id": k, "winner": w}) + "\n" for k, w in
                         (("a", "chosen"), ("b", "chosen"), ("c", "rejected"))))
    oracle = aq.FileOracle(str(f), np.array(["a", "b", "c", "d"]), np.array([True, False, True, True]))
    # a1 is better when (the canonical first wins) == (a1 is the canonical first)
    assert oracle.reveal(np.array([0, 1, 2]), 1).tolist() == [True, False, False]
    with pytest.raises(aq.AnswersPending, match=r"loop 2 asks for 2 human labels .* answers 1 of them: run `ser acquire"):
        oracle.reveal(np.array([0, 3]), 2)
    with pytest.raises(aq.AnswersPending, match="no acquisition.answers file answers 1 of them"):
        aq.FileOracle(None, np.array(["a"]), np.array([True])).reveal(np.array([0]), 0)


def _fake_label(calls):
    """label_pool's stand-in: P(a1 > a2) = sigmoid(s1 - s2); keeps every pair, a1 first when P > .5."""
    def label(scores, labeled, alive, mc):
        n = len(alive)
        p = 1 / (1 + np.exp(-(scores[:n] - scores[n:])))
        calls.append({"alive": alive.tolist(), "labeled": None if labeled is None else labeled.tolist()})
        return Labeling(fields={"pool": n, "kept": n}, pool_index=alive, first_is_chosen=p > 0.5, stop=False,
                        arrays={"pool_index": alive, "kept": np.arange(n)}, p_first=p)
    return label


class SpyOracle:
    kind = "hidden"

    def __init__(self, hidden):
        self.hidden, self.asked = hidden, []

    def reveal(self, index, loop):
        self.asked.append(index.tolist())
        return self.hidden[index]


def _acq(**kw):
    return OmegaConf.create({"rule": "uncertain", "per_loop": 2, "budget": 3, "self_label": True, **kw})


def test_label_and_acquire_asks_then_labels_the_rest_with_the_human_pairs():
    alive = np.array([2, 5, 7, 9])
    s1, s2 = np.array([3.0, 0.1, 1.0, -0.2]), np.array([0.0, 0.0, 0.0, 0.0])  # P ~ .95 .52 .73 .45
    scores, labeled = np.concatenate([s1, s2]), np.array([1.0, -1.0])
    hidden = np.zeros(10, dtype=bool)
    hidden[5] = True  # pool pair 5: a1 better; pair 9: a2 better
    calls, oracle, written = [], SpyOracle(hidden), []
    lab, req = aq.label_and_acquire(_fake_label(calls), scores, labeled, alive, None, _acq(), oracle, 0, 0, 0, 10,
                                    write_request=lambda r: written.append(r.a1_better))
    assert oracle.asked == [[5, 9]]  # the two least confident, and only they were revealed
    assert req.index.tolist() == [5, 9] and req.a1_better.tolist() == [True, False]
    assert written[0] is None and written[1].tolist() == [True, False]  # recorded before and after the answer
    assert calls[1]["alive"] == [2, 7]  # the rest of the pool, labelled again
    # the human pairs' scores join the labelled ones, chosen then rejected: (0.1, 0.0) and (0.0, -0.2)
    assert calls[1]["labeled"] == pytest.approx([1.0, -1.0, 0.1, 0.0, 0.0, -0.2])
    assert lab.fields["human_asked"] == 2 and lab.fields["human_labels_used"] == 2
    assert lab.fields["human_rm_wrong"] == 0.0 and not lab.stop
    # the next loop: one left of the budget of 3
    _, req = aq.label_and_acquire(_fake_label([]), scores, labeled, alive, None, _acq(), SpyOracle(hidden), 0, 1, 2, 10)
    assert len(req.index) == 1
    # budget spent: nothing asked, the labelling as without acquisition
    calls = []
    lab, req = aq.label_and_acquire(_fake_label(calls), scores, labeled, alive, None, _acq(), SpyOracle(hidden), 0, 2, 3, 10)
    assert req is None and len(calls) == 1 and lab.fields["human_asked"] == 0
    # rule none: one call of the labeller, nothing added
    calls = []
    lab, req = aq.label_and_acquire(_fake_label(calls), scores, labeled, alive, None, _acq(rule="none"), None, 0, 0, 0, 10)
    assert req is None and len(calls) == 1 and "human_asked" not in lab.fields


def test_label_and_acquire_without_self_labelling_keeps_nothing():
    alive = np.arange(4)
    scores = np.array([3.0, 0.1, 1.0, -0.2, 0, 0, 0, 0])
    lab, req = aq.label_and_acquire(_fake_label([]), scores, None, alive, None, _acq(self_label=False),
                                    SpyOracle(np.ones(4, bool)), 0, 0, 0, 4)
    assert len(req.index) == 2 and len(lab.pool_index) == 0 and lab.fields["kept"] == 0
    assert not lab.stop  # the next loop trains on the human labels
    lab, req = aq.label_and_acquire(_fake_label([]), scores, None, alive, None, _acq(self_label=False),
                                    SpyOracle(np.ones(4, bool)), 0, 1, 3, 4)
    assert req is None and lab.stop  # budget spent, no self-labelling: the loop stops


@pytest.mark.parametrize("overrides,message", [
    (["acquisition=uncertain", "acquisition.per_loop=0"], "acquisition.rule=uncertain with per_loop=0"),
    (["acquisition=random", "acquisition.budget=1.5"], "acquisition.budget=1.5 must be a count"),
    (["acquisition=random", "acquisition.oracle=crowd"], "acquisition.oracle='crowd' must be hidden"),
    (["acquisition=random", "acquisition.answers=a.jsonl"], "acquisition.answers is read by the file oracle only"),
    (["acquisition.rule=most"], "acquisition.rule='most' must be one of none, random, uncertain, disagree"),
    (["acquisition.self_label=false"], "acquisition.self_label=false with acquisition=none"),
])
def test_bad_acquisition_configs_fail_in_one_line(overrides, message):
    from ser.config import ConfigError, validate
    from tests.conftest import compose

    with pytest.raises(ConfigError) as e:
        validate(compose(overrides))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    validate(compose(["acquisition=disagree", "acquisition.budget=40", "acquisition.per_loop=10"]))  # counts are fine
