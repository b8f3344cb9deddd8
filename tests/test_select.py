"""Which loop becomes "SER final" (loop.select), the sweep objective, named evaluation sets, and
the rule behind them: the test split never chooses anything."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from ser.train import objective, run
from tests.conftest import compose
from tests.loop_utils import selections
from tests.synthetic import tiny_overrides, write_pairs


BASE = ("loop.max_loops=3", "thresholds.scaling=labeled_std", "thresholds.min_count=1", "loop.epochs_per_loop=1")


def _split_test(tmp_path: Path, flip: bool) -> tuple[Path, Path]:
    """Train pairs and a separate test file; ``flip`` swaps chosen and rejected on a random half of
    the test rows (a shuffle of the test labels)."""
    data = write_pairs(tmp_path / "all.jsonl", n=200)
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    train, test = rows[:150], rows[150:]
    rng = random.Random(1)
    if flip:
        test = [dict(r, chosen=r["rejected"], rejected=r["chosen"]) if rng.random() < 0.5 else r for r in test]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return tmp_path / "train.jsonl", tmp_path / "test.jsonl"


@pytest.mark.parametrize("select", ["last", "best_val"])
def test_shuffled_test_labels_change_no_selection_and_no_objective(tmp_path, select):
    results = []
    for flip in (False, True):
        d = tmp_path / ("flipped" if flip else "clean")
        d.mkdir()
        train, test = _split_test(d, flip)
        cfg = compose(tiny_overrides(train, *BASE, f"loop.select={select}", f"data.test_files=[{test}]",
                                     "data.test_fraction=0.0"), output_dir=d / "run")
        results.append((run(cfg), d / "run"))
    (a, da), (b, db) = results
    pa, pb = a["phases"]["ser"], b["phases"]["ser"]
    assert pa["test_acc"] != pb["test_acc"]  # the flip is real: test accuracy moved
    assert selections(da) == selections(db)  # same pseudo-labels every loop
    assert pa["selected_loop"] == pb["selected_loop"]
    assert [h["val_acc"] for h in pa["loops"]] == [h["val_acc"] for h in pb["loops"]]
    assert objective(a) == objective(b) == pa["val_acc"]


@pytest.mark.parametrize("val_peak", [None, 0])
def test_best_val_selects_and_exports_the_loop_with_the_best_validation_accuracy(tmp_path, monkeypatch, val_peak):
    """``val_peak``: validation accuracy forced to peak at that loop (so the weights must be loaded
    back from an earlier loop); None: the real validation accuracies."""
    import ser.loop

    if val_peak is not None:
        real = ser.loop.SERLoop._evaluate

        def peaked(self, trainer, module):
            out = real(self, trainer, module)
            out["val_acc"] = 0.9 - 0.1 * abs(self.loop - val_peak)
            return out
        monkeypatch.setattr(ser.loop.SERLoop, "_evaluate", peaked)
    data = write_pairs(tmp_path / "pairs.jsonl", n=200)
    res = run(compose(tiny_overrides(data, *BASE, "loop.select=best_val", "trainer.precision=32-true"), output_dir=tmp_path / "run"))
    ser = res["phases"]["ser"]
    hist = ser["loops"]
    assert len(hist) >= 2
    vals = [h["val_acc"] for h in hist]
    best = int(np.argmax(vals))  # the first maximum: ties keep the earlier loop
    assert ser["select"] == "best_val" and ser["selected_loop"] == best
    if val_peak is not None:
        assert best == val_peak < hist[-1]["loop"]
    assert ser["test_acc"] == hist[best]["test_acc"] and ser["val_acc"] == hist[best]["val_acc"]
    # the exported model is that loop's: its test scores are the ones saved at that loop
    from ser.data import PreferenceDataModule
    from ser.model import load_tokenizer, score_sequences
    from transformers import AutoModelForSequenceClassification

    cfg = compose(tiny_overrides(data, *BASE))
    tok = load_tokenizer(cfg.model)
    dm = PreferenceDataModule(cfg.data, tok, seed=cfg.seed)
    dm.setup()
    net = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "ser" / "reward_model")
    s = score_sequences(net, [a for a, _ in dm.test] + [b for _, b in dm.test], tok.pad_token_id)
    saved = np.load(tmp_path / "run" / "ser" / f"eval_scores_loop{best}.npz")
    n = len(dm.test)
    np.testing.assert_allclose(s[:n], saved["test_chosen"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s[n:], saved["test_rejected"], rtol=1e-4, atol=1e-5)


def test_named_eval_sets_are_scored_every_loop_without_training_prompts(tmp_path):
    from ser.data.splits import pair_content_key

    data = write_pairs(tmp_path / "pairs.jsonl", n=150)
    other = write_pairs(tmp_path / "other.jsonl", n=60, seed=3)
    rows = [json.loads(x) for x in other.read_text().splitlines()]
    for r in rows:  # prompts of their own, so none is in training
        r["prompt"] = "another " + r["prompt"]
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run(compose(tiny_overrides(data, *BASE, f"+data.eval_sets.other.files=[{other}]",
                                     "+data.eval_sets.other.sample=40", f"+data.eval_sets.same.files=[{data}]"),
                      output_dir=tmp_path / "run"))
    ser = res["phases"]["ser"]
    counts = ser["counts"]
    assert counts["other"] == 40  # the seeded sample
    assert counts["same"] == counts["val"] + counts["test"]  # the training file's training prompts dropped
    assert ser["formatting"]["dropped_in_train_same"] == counts["labeled"] + 150 - counts["labeled"] - counts["val"] - counts["test"]
    for h in ser["loops"]:
        assert 0 <= h["other_acc"] <= 1 and 0 <= h["same_acc"] <= 1
        z = np.load(tmp_path / "run" / "ser" / f"eval_scores_loop{h['loop']}.npz")
        assert len(z["other_chosen"]) == len(z["other_rejected"]) == 40
        assert np.mean(z["test_chosen"] > z["test_rejected"]) == pytest.approx(h["test_acc"])
        assert np.mean(z["other_chosen"] > z["other_rejected"]) == pytest.approx(h["other_acc"])
    # every pair's content key and answer lengths sit beside its scores, aligned with them
    from ser.data.formats import load_pairs

    by_key = {pair_content_key(r): r for r in load_pairs([str(other)], "auto")[0]}
    z = np.load(tmp_path / "run" / "ser" / "eval_scores_loop0.npz")
    keys = z["other_key"]
    assert keys.dtype == np.uint64 and len(keys) == 40 and len(set(keys.tolist())) == 40
    for k, cc, rc, ct, rt in zip(keys.tolist(), z["other_chosen_chars"], z["other_rejected_chars"],
                                 z["other_chosen_tokens"], z["other_rejected_tokens"]):
        r = by_key[k]  # the key is the content hash of a real row of the file
        assert (cc, rc) == (len(r["chosen"]), len(r["rejected"]))
        assert 0 < ct <= cc and 0 < rt <= rc
    # "same" scores the training file's held-out prompts: its keys are exactly those of val + test
    assert set(z["same_key"].tolist()) == set(z["test_key"].tolist()) | set(z["val_key"].tolist())


@pytest.mark.parametrize("bad, msg", [("loop.select=best", "loop.select='best'"),
                                      ("+data.eval_sets.test.files=[x.jsonl]", "data.eval_sets.test"),
                                      ("+data.eval_sets.x.format=pairs", "data.eval_sets.x needs files")])
def test_bad_select_or_eval_set_is_one_clear_error(tmp_path, bad, msg):
    from ser.errors import ConfigError

    data = write_pairs(tmp_path / "pairs.jsonl", n=60)
    with pytest.raises(ConfigError, match=msg.replace("[", r"\[").replace("(", r"\(")):
        run(compose(tiny_overrides(data, bad), output_dir=tmp_path / "run"))
