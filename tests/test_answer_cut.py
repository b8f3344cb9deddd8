"""experiments/answer_cut.py: the share of answers a max length cuts (issue 22 chooses max_length by it)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from ser.data.formatting import Formatter
from tests.conftest import ROOT
from tests.test_data import minilm  # noqa: F401  the real MiniLM tokenizer (fixture)


def _module():
    spec = importlib.util.spec_from_file_location("answer_cut", ROOT / "experiments" / "answer_cut.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cut_shares_by_hand():
    mod = _module()
    total, answer = np.array([10, 20, 30, 40]), np.array([5, 15, 25, 35])
    assert mod.cut_shares(total, answer, 20) == {"cut": 0.5, "answer_cut": 0.5, "mean_tokens": pytest.approx(17.5)}
    assert mod.cut_shares(total, answer, 30) == {"cut": 0.25, "answer_cut": 0.25, "mean_tokens": pytest.approx(22.5)}


def test_answer_length_agrees_with_the_formatter(minilm):
    """An answer counted as longer than m is the one the Formatter cuts at its end at max_length m."""
    mod = _module()
    pairs = [{"prompt": [{"role": "user", "content": "a question " * 8}], "chosen": "yes " * n, "rejected": "no"}
             for n in (2, 10, 30)]
    fmt = Formatter(minilm, 10**9, use_chat_template=False)
    total, answer = mod.lengths(fmt, pairs, sides=("chosen",))
    seen = set()
    for m in (16, 24, 40):
        cut = Formatter(minilm, m, use_chat_template=False)
        ends = [cut.encode(p["prompt"], p["chosen"])[1] == "answer_truncated" for p in pairs]
        assert list(answer > m) == ends
        seen.update(ends)
        assert list(total > m) == [cut.encode(p["prompt"], p["chosen"])[1] is not None for p in pairs]
    assert seen == {True, False}  # both cases met
