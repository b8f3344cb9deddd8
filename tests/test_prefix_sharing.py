"""Prefix sharing (data.prefix_sharing): the row layout and mask on hand-computed values, rewards and
gradients equal to padded ones on a tiny random decoder with SmolLM2's real tokenizer (and the check
failing without the mask), the collator, the config checks, and a tiny SER run with it on."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ser.data import Formatter, PairCollator, pad_batch
from ser.data.prefix_sharing import (attention_allowed, row_positions, row_segments, share_prefix_batch,
                                     shared_prefix_length)
from ser.errors import ConfigError
from ser.model import RewardModel
from ser.rewards import prefix_shared_rewards, sequence_rewards
from tests.conftest import compose
from tests.test_model import tiny
from tests.test_packing import assert_same_rewards_and_grads

PROMPTS = ["What is the capital of France?", "Tell me a joke about cats, please, a short one.", "hi"]
ANSWERS = [("Paris.", "I do not know, maybe Lyon or Marseille."), ("No.", "Why did the cat sit on the computer? To keep an eye on the mouse."),
           ("hello there, how can I help?", "hello there, how can I help you today?")]


def encoded_pairs(tok):
    fmt = Formatter(tok, max_length=128)
    return [(fmt.encode([{"role": "user", "content": p}], c)[0], fmt.encode([{"role": "user", "content": p}], r)[0])
            for p, (c, r) in zip(PROMPTS, ANSWERS)]


# -- by hand -----------------------------------------------------------------------------------------

def test_shared_prefix_length_leaves_each_side_its_last_token():
    assert shared_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert shared_prefix_length([1, 2], [1, 2, 5]) == 1  # [1, 2] is all of the chosen side: keep its last token
    assert shared_prefix_length([7, 8], [7, 8]) == 1  # identical sides
    assert shared_prefix_length([1], [1]) == 0 and shared_prefix_length([5], [6, 7]) == 0


def test_row_positions_and_segments_by_hand():
    # prefix 2, chosen rest 1, rejected rest 3, width 8: both rests continue at position 2
    assert row_positions(2, 1, 3, 8) == [0, 1, 2, 2, 3, 4, 0, 0]
    assert row_segments(2, 1, 3, 8) == [0, 0, 1, 2, 2, 2, 3, 3]
    assert row_positions(0, 2, 1, 3) == [0, 1, 0]  # nothing shared: two sequences side by side


def test_attention_allowed_by_hand():
    seg = torch.tensor(row_segments(2, 1, 2, 6))  # P P C R R pad
    want = [[1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],   # chosen: the prefix and itself
            [1, 1, 0, 1, 0, 0],   # rejected: the prefix and itself, never the chosen token
            [1, 1, 0, 1, 1, 0],
            [1, 1, 0, 0, 0, 1]]   # padding: the prefix and the padding before it (never read)
    assert attention_allowed(seg).int().tolist() == want


def test_share_prefix_batch_by_hand():
    b = share_prefix_batch([([1, 2, 3], [1, 2, 4, 5]), ([9], [8, 7])], pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5], [9, 8, 7, 0, 0]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 2, 3], [0, 0, 1, 0, 0]]
    # flat index (row * 5 + column) of the last token: chosen 0, chosen 1, rejected 0, rejected 1
    assert b["last_index"].tolist() == [2, 5, 4, 7]
    assert b["lengths"].tolist() == [3, 1, 4, 2] and b["shared"].tolist() == [2, 0]
    assert tuple(b["prefix_mask"].shape) == (2, 1, 5, 5) and b["prefix_mask"].dtype == torch.bool


def test_pair_collator_shares_prefixes_and_refuses_two_layouts():
    b = PairCollator(pad_id=0, prefix_sharing=True)([([1, 2, 3], [1, 2, 4])])
    assert b["input_ids"].tolist() == [[1, 2, 3, 4]] and int(b["n_pairs"]) == 1 and "attention_mask" not in b
    with pytest.raises(ValueError, match="choose one"):
        PairCollator(pad_id=0, packing=True, prefix_sharing=True)


# -- shared == padded on a real decoder ----------------------------------------------------------------

@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_prefix_shared_rewards_and_gradients_equal_padded(attn):
    """fp32, tiny random Llama with the real tokenizer and its chat template: the rewards (atol 1e-5)
    and the gradient of the Bradley-Terry loss are those of the padded batch."""
    _, tok, net = tiny("tiny_decoder")
    net.config._attn_implementation = attn
    net.eval()  # no dropout: both layouts see the same computation
    pairs = encoded_pairs(tok)
    shared = share_prefix_batch(pairs, tok.pad_token_id)
    assert min(shared["shared"].tolist()) > 5  # the chat-formatted prompt is shared
    padded = pad_batch([c for c, _ in pairs] + [r for _, r in pairs], tok.pad_token_id)
    assert shared["input_ids"].numel() < padded["input_ids"].numel()

    r_pad = assert_same_rewards_and_grads(
        net, lambda: prefix_shared_rewards(net, shared["input_ids"], shared["position_ids"], shared["prefix_mask"],
                                           shared["last_index"]),
        lambda: sequence_rewards(net, padded["input_ids"], padded["attention_mask"]))
    # the check can fail: with a plain causal mask over the row the rejected side sees the chosen answer
    causal = torch.ones_like(shared["prefix_mask"]).tril()
    with torch.no_grad():
        leaky = prefix_shared_rewards(net, shared["input_ids"], shared["position_ids"], causal, shared["last_index"])
    n = len(pairs)
    assert leaky[:n].tolist() == pytest.approx(r_pad[:n].tolist(), abs=1e-5)  # chosen sides see no more than before
    assert max(abs(a - b) for a, b in zip(leaky[n:].tolist(), r_pad[n:].tolist())) > 1e-3


def test_training_step_shared_equals_padded():
    _, tok, net = tiny("tiny_decoder")
    loss_cfg = OmegaConf.create({"kind": "bradley_terry", "margin": 0.0, "centring_coef": 0.0})
    module = RewardModel(net, loss_cfg, OmegaConf.create({})).eval()
    module.log_dict = module.log = lambda *a, **k: None  # no Trainer attached
    pairs = encoded_pairs(tok)
    loss_pad = module.training_step(PairCollator(tok.pad_token_id)(pairs), 0)
    loss_sh = module.training_step(PairCollator(tok.pad_token_id, prefix_sharing=True)(pairs), 0)
    assert float(loss_sh) == pytest.approx(float(loss_pad), abs=1e-6)


# -- refusals and config ---------------------------------------------------------------------------------

def test_prefix_sharing_refuses_encoders_flash_and_packing():
    from ser.config import validate

    _, tok, net = tiny("tiny")
    b = share_prefix_batch([([1, 2, 3], [1, 2, 4])], 0)
    with pytest.raises(ConfigError, match=r"data\.prefix_sharing=true needs a decoder .* set data\.prefix_sharing=false"):
        prefix_shared_rewards(net, b["input_ids"], b["position_ids"], b["prefix_mask"], b["last_index"])
    _, tok, dec = tiny("tiny_decoder")
    dec.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ConfigError, match=r"sdpa or eager.*'flash_attention_2'"):
        prefix_shared_rewards(dec, b["input_ids"], b["position_ids"], b["prefix_mask"], b["last_index"])
    validate(compose(["data.prefix_sharing=true"]))
    with pytest.raises(ConfigError, match=r"data\.packing=true and data\.prefix_sharing=true .* set one of them to false"):
        validate(compose(["data.packing=true", "data.prefix_sharing=true"]))


def test_train_refuses_prefix_sharing_with_an_encoder(tmp_path):
    from tests.synthetic import tiny_overrides, write_pairs

    from ser.train import run

    data = write_pairs(tmp_path / "pairs.jsonl", n=40)
    with pytest.raises(ConfigError, match=r"data\.prefix_sharing=true needs a decoder .*model\.name=tiny is an encoder"):
        run(compose(tiny_overrides(data, "data.prefix_sharing=true"), output_dir=tmp_path / "run"))


@pytest.mark.numerics
def test_tiny_decoder_ser_run_with_prefix_sharing(tmp_path, monkeypatch):
    """The whole job with data.prefix_sharing=true: every training step goes through the shared layout
    (scoring stays per answer), and the run learns."""
    from tests.synthetic import tiny_overrides, write_pairs

    from ser.train import run

    calls = {"train": 0, "shared": 0}
    real_forward = RewardModel.forward

    def forward(self, *a, **kw):
        calls["train"] += 1
        calls["shared"] += kw.get("prefix_mask") is not None
        return real_forward(self, *a, **kw)

    monkeypatch.setattr(RewardModel, "forward", forward)
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    over = [o for o in tiny_overrides(data, "loop.max_loops=1", "data.prefix_sharing=true") if o != "model=tiny"]
    res = run(compose(["model=tiny_decoder", *over], output_dir=tmp_path / "run"))
    hist = res["phases"]["ser"]["loops"]
    assert len(hist) == 2 and hist[0]["kept"] > 0
    assert calls["train"] == calls["shared"] == hist[-1]["global_step"]  # every training step shared
    assert hist[0]["test_acc"] > 0.7  # the tiny decoder learns 'yes' over 'no'


# -- data.prompt_cut=pair: the two answers keep the same prompt tail ---------------------------------

def test_encode_pair_cuts_the_prompt_the_same_for_both_answers():
    _, tok, _ = tiny("tiny_decoder")
    f = Formatter(tok, max_length=40)
    msgs = [{"role": "user", "content": "Start " + " ".join(f"filler{i}" for i in range(40)) + " question?"}]
    short, long_ = "Yes.", "No, and here is a much longer answer with many more words in it."
    (a, wa), (b, wb) = f.encode_pair(msgs, short, long_)
    assert wa == wb == "truncated" and len(b) == 40 and len(a) < 40  # the longer side decides the cut
    ta, _, _ = f._tokens(msgs, short)
    assert a == ta[len(ta) - len(a):]  # the shorter side lost exactly the same prompt tokens from the left
    # both sides keep the same prompt tail, so they share all of it: what is not shared is the answer
    # and the template's closing tokens; cut each on its own, each side keeps another tail
    assert len(a) - shared_prefix_length(a, b) <= len(tok(short, add_special_tokens=False)["input_ids"]) + 3
    (ea, _), (eb, _) = f.encode(msgs, short), f.encode(msgs, long_)
    assert len(ea) == len(eb) == 40 and shared_prefix_length(ea, eb) < 5
    # nothing to cut: as encode; an answer too long even alone, or overlength='drop': each side on its own
    q = [{"role": "user", "content": "q?"}]
    assert f.encode_pair(q, short, "ok") == (f.encode(q, short), f.encode(q, "ok"))
    huge = " ".join(f"word{i}" for i in range(60))
    assert f.encode_pair(msgs, short, huge) == (f.encode(msgs, short), f.encode(msgs, huge))
    drop = Formatter(tok, max_length=40, overlength="drop")
    assert drop.encode_pair(msgs, short, long_) == (drop.encode(msgs, short), drop.encode(msgs, long_))


@pytest.mark.integration
def test_prompt_cut_pair_makes_real_hh_pairs_share_their_prompt(data_dir):
    """HH-RLHF harmless with SmolLM2's tokenizer at 128 tokens: cut per answer the two sides share
    few tokens (each keeps another prompt tail); cut per pair they share about a third."""
    from ser.data import PreferenceDataModule
    from ser.model import load_tokenizer

    share = {}
    for cut in ("answer", "pair"):
        cfg = compose(["experiment=ser_hh_smollm2", "labeled_fraction=1.0", "data.max_length=128", f"data.prompt_cut={cut}"])
        dm = PreferenceDataModule(cfg.data, load_tokenizer(cfg.model), seed=0)
        dm.setup()
        pairs = dm.labeled
        assert len(pairs) > 1500 and max(len(s) for p in pairs for s in p) <= 128
        share[cut] = sum(shared_prefix_length(c, r) for c, r in pairs) / sum(len(c) + len(r) for c, r in pairs)
    assert share["answer"] < 0.15 and share["pair"] > 0.25, share


def test_prompt_cut_is_checked():
    from ser.config import validate

    validate(compose(["data.prompt_cut=pair"]))
    with pytest.raises(ConfigError, match=r"data\.prompt_cut='both' must be answer .* or pair"):
        validate(compose(["data.prompt_cut=both"]))
