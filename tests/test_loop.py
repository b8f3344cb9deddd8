"""The SER loop end to end with tiny models: status changes, leak-freedom, learning (kill-and-resume: test_resume.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ser.loop
from ser.train import run
from tests.conftest import compose
from tests.loop_utils import selections
from tests.synthetic import tiny_overrides, write_pairs

# numerics-sensitive: `make test` runs this file a second time under the AVX2 caps
pytestmark = pytest.mark.numerics


def test_status_moves_easy_then_hard_then_stop(tmp_path, monkeypatch):
    """A fake scorer gives easy pairs p=.88/.12, hard pairs .90/.50 (gap .40, not easy), flat .5/.5."""
    data = write_pairs(tmp_path / "pairs.jsonl", n=150, marker_mix=True)
    cfg = compose(tiny_overrides(data, "loop.max_loops=5", "thresholds.centring=none", "thresholds.min_count=5",
                                 "loop.epochs_per_loop=1"), output_dir=tmp_path / "run")
    value = {"easyplus": 2.0, "easyminus": -2.0, "hardplus": 2.2, "hardminus": 0.0, "flatplus": 0.0, "flatminus": 0.0}
    real = ser.loop.score_sequences
    tok = {}

    def fake(model, seqs, pad_id, *a, **kw):
        if "t" not in tok:
            from ser.model import load_tokenizer
            tok["t"] = load_tokenizer(cfg.model)
        out = []
        for s in seqs:
            text = tok["t"].decode(s).replace(" ", "")
            out.append(next((v for k, v in value.items() if k in text), 0.0))
        real(model, seqs[:1], pad_id, *a, **kw)  # the real path still runs
        return np.array(out)

    monkeypatch.setattr(ser.loop, "score_sequences", fake)
    res = run(cfg)
    hist = res["phases"]["ser"]["loops"]
    assert [h.get("status") for h in hist] == ["EASY", "HARD", "STOP"]
    assert hist[-1]["stop"] == "stop_status"
    n_easy = hist[0]["kept"]
    assert n_easy == hist[0]["n_easy"] > 0 and hist[1]["kept"] == hist[1]["n_hard"] > 0
    assert hist[0]["pool"] - n_easy == hist[1]["pool"]  # selected pairs left the pool
    assert hist[1]["train_pairs"] == hist[0]["train_pairs"] + n_easy
    assert hist[0]["pseudo_label_precision"] == 1.0  # 'plus' scored higher is always the human choice
    # the kept pairs are oriented by the RM: chosen = the 'plus' answer
    for sel in selections(tmp_path / "run"):
        assert len(sel["index"]) == len(sel["first_is_chosen"]) > 0


def test_tiny_ser_run_learns_and_stops(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    res = run(compose(tiny_overrides(data, "loop.max_loops=3", "compare_full=true"), output_dir=tmp_path / "run"))
    ser_hist = res["phases"]["ser"]["loops"]
    assert len(ser_hist) >= 2 and ser_hist[0]["status"] in ("EASY", "HARD") and ser_hist[0]["kept"] > 0
    assert ser_hist[0]["test_acc"] > 0.8  # the tiny model does learn 'yes' over 'no'
    assert ser_hist[0]["pseudo_label_precision"] > 0.8
    assert res["phases"]["full"]["counts"]["pool"] == 0
    stats = res["statistics"]["test"]  # paired on the same test pairs: SER and full vs the seed RM
    n_test = res["phases"]["ser"]["counts"]["test"]
    assert stats["ser"]["ci"]["n"] == stats["full"]["ci"]["n"] == n_test
    assert stats["ser"]["ci"]["estimate"] == pytest.approx(res["phases"]["ser"]["test_acc"] - ser_hist[0]["test_acc"])
    out = tmp_path / "run"
    assert (out / "results.json").exists() and (out / "ser" / "reward_model" / "config.json").exists()
    assert len((out / "ser" / "loops.jsonl").read_text().splitlines()) == len(ser_hist)
    hparams = (out / "ser" / "csv" / "hparams.yaml").read_text()  # split counts are logged, not only printed
    assert f"data/pool: {res['phases']['ser']['counts']['pool']}" in hparams
    # a finished run is never overwritten: the same command prints the stored table
    again = run(compose(tiny_overrides(data, "loop.max_loops=3", "compare_full=true"), output_dir=out))
    assert again == json.loads((out / "results.json").read_text())


def test_bf16_mixed_run_learns_and_labels_in_fine_steps(tmp_path):
    # the main job's CPU precision: autocast for training and scoring, the score head in fp32
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    res = run(compose(tiny_overrides(data, "loop.max_loops=1", "trainer.precision=bf16-mixed"), output_dir=tmp_path / "run"))
    hist = res["phases"]["ser"]["loops"]
    assert hist[0]["test_acc"] > 0.8 and hist[0]["kept"] > 0
    scores = np.load(tmp_path / "run" / "ser" / "pool_scores_loop0.npz")
    s = np.concatenate([scores["scores_a1"], scores["scores_a2"]])
    assert len(np.unique(s)) > 0.9 * len(s)  # not on bf16's grid of ~3 significant digits


def test_hidden_labels_never_reach_training(tmp_path, monkeypatch):
    """Shuffling the pool's hidden labels changes the reported precision, nothing else."""
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    over = tiny_overrides(data, "loop.max_loops=2")
    a = run(compose(over, output_dir=tmp_path / "a"))
    from ser.data import PreferenceDataModule

    orig = PreferenceDataModule.setup

    def shuffled_setup(self, stage=None):
        orig(self, stage)
        if not getattr(self, "_flipped", False):  # setup runs more than once; flip once
            self.pool_hidden = ~self.pool_hidden  # every hidden label flipped
            self._flipped = True
    monkeypatch.setattr(PreferenceDataModule, "setup", shuffled_setup)
    b = run(compose(over, output_dir=tmp_path / "b"))
    ha, hb = a["phases"]["ser"]["loops"], b["phases"]["ser"]["loops"]
    # what is computed from the hidden labels for reporting only: their precision, and the share of
    # pool pairs whose better answer is the longer one (a reference line of `ser report`)
    hidden_only = ("pseudo_label_precision", "pool_labels_longer")
    strip = lambda h: {k: v for k, v in h.items() if k not in (*hidden_only, "train_s", "eval_s", "label_s")}  # noqa: E731
    assert [strip(x) for x in ha] == [strip(x) for x in hb]
    assert selections(tmp_path / "a") == selections(tmp_path / "b")
    assert ha[0]["pseudo_label_precision"] == pytest.approx(1 - hb[0]["pseudo_label_precision"])
    assert ha[0]["pool_labels_longer"] == pytest.approx(1 - hb[0]["pool_labels_longer"])
    wa = torch.load(tmp_path / "a" / "ser" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    wb = torch.load(tmp_path / "b" / "ser" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_loop_options_restart_from_seed_no_seed_pairs_pool_kept(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    res = run(compose(tiny_overrides(data, "loop.max_loops=2", "loop.restart_from_seed=true",
                                     "loop.keep_seed_pairs=false", "loop.remove_selected=false"),
                      output_dir=tmp_path / "run"))
    h = res["phases"]["ser"]["loops"]
    assert len(h) >= 2 and h[0]["kept"] > 0
    assert h[1]["train_pairs"] == h[0]["kept"]  # seed pairs left training, only the selection remains
    if "pool" in h[1]:
        assert h[1]["pool"] == h[0]["pool"]  # selected pairs stayed in the pool
    if len(h) > 2:  # re-selected pairs are not duplicated in training
        assert h[2]["train_pairs"] <= h[0]["pool"]
    seed = torch.load(tmp_path / "run" / "ser" / "seed_weights.pt", weights_only=True)
    final = torch.load(tmp_path / "run" / "ser" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert set(seed) == set(final)  # the whole module's weights, saved through the strategy


def test_ser_run_hands_its_reward_model_to_ppo(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    res = run(compose(tiny_overrides(data, "loop.max_loops=1", "ppo=tiny", "ppo.steps=2"), output_dir=tmp_path / "run"))
    assert "ppo" in res
    assert json.dumps(res["ppo"]).count(str(tmp_path / "run" / "ser" / "reward_model")) >= 1  # the SER model drove PPO


@pytest.mark.parametrize("accumulate", [1, 3])
def test_lr_at_every_step_restarts_each_loop(tmp_path, monkeypatch, accumulate):
    """The optimizer's LR read at every optimizer step: each loop warms up from its first step
    (never LR 0) and decays to its last, with and without gradient accumulation."""
    from ser.model import RewardModel

    seen = []

    def record(self, optimizer):
        seen.append((self.trainer.global_step, self.trainer.current_epoch, optimizer.param_groups[0]["lr"]))

    monkeypatch.setattr(RewardModel, "on_before_optimizer_step", record, raising=False)
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    lr, warmup = 1e-2, 2
    res = run(compose(tiny_overrides(data, "loop.max_loops=2", f"optim.lr={lr}", f"optim.warmup_steps={warmup}",
                                     f"+trainer.accumulate_grad_batches={accumulate}", "thresholds.scaling=labeled_std",
                                     "thresholds.min_count=1",
                                     "loop.epochs_per_loop=2"), output_dir=tmp_path / "run"))
    hist = res["phases"]["ser"]["loops"]
    assert len(hist) >= 2
    start = 0
    for h in hist:
        steps = h["steps"]
        lrs = [x for g, _, x in seen if start <= g < start + steps]
        assert len(lrs) == steps > warmup  # one record per optimizer step, all of this loop's
        expected = [lr * ((i + 1) / warmup if i < warmup else (steps - i) / (steps - warmup)) for i in range(steps)]
        assert lrs == pytest.approx(expected, rel=1e-6), f"loop {h['loop']}"
        assert min(lrs) > 0 and lrs[-1] == pytest.approx(lr / (steps - warmup))  # decays to its last step
        start += steps
    assert start == len(seen)
