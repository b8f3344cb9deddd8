"""Padding-free packing (data.packing): the packing math on hand-computed values, packed rewards
and gradients equal to padded ones on a tiny random decoder with SmolLM2's real tokenizer, the
collator, the config checks, encoders refused, and a tiny SER run with packing on."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ser.data import PairCollator, pad_batch
from ser.data.packing import first_fit_decreasing, last_token_index, pack_batch, position_ids, segment_ids
from ser.errors import ConfigError
from ser.losses import pairwise_loss
from ser.model import RewardModel, score_sequences
from ser.rewards import packed_rewards, sequence_rewards
from tests.conftest import compose
from tests.test_model import tiny

TEXTS = ["a", "a short answer", "a considerably longer answer that needs padding for the others in the batch",
         "mid length answer here", "another answer of some middling length, with a comma", "ok"]


def encode(tok, texts):
    """Plain token ids (no chat template: lengths from 1 token to ~20, so short ones share rows)."""
    return [tok(t)["input_ids"] for t in texts]


# -- the math, by hand ---------------------------------------------------------------------------

def test_first_fit_decreasing_by_hand():
    # longest first: 5 (idx 1) opens row 0 (room 1); 4 (idx 3) opens row 1 (room 2);
    # 3 (idx 0) opens row 2 (room 3); 2 (idx 2) -> row 1 (room 0); 1 (idx 4) -> row 0 (room 0)
    assert first_fit_decreasing([3, 5, 2, 4, 1], 6) == [[1, 4], [3, 2], [0]]
    assert first_fit_decreasing([2, 2, 2], 6) == [[0, 1, 2]]  # ties keep index order
    assert first_fit_decreasing([4, 4], 4) == [[0], [1]]  # exactly full rows
    with pytest.raises(ValueError, match="does not fit"):
        first_fit_decreasing([3, 7], 6)
    with pytest.raises(ValueError, match="empty"):
        first_fit_decreasing([3, 0], 6)


def test_positions_segments_and_last_tokens_by_hand():
    assert position_ids([3, 1, 2]) == [0, 1, 2, 0, 0, 1]
    assert segment_ids([3, 1, 2]) == [0, 0, 0, 1, 2, 2]
    assert last_token_index([3, 1, 2]) == [2, 3, 5]


def test_pack_batch_by_hand():
    b = pack_batch([[11, 12, 13], [21, 22, 23, 24, 25], [31, 32], [41, 42, 43, 44], [51]], pad_id=0, capacity=6)
    # rows as in test_first_fit_decreasing_by_hand: [1, 4], [3, 2], [0]; width = the fullest row (6)
    assert b["input_ids"].tolist() == [[21, 22, 23, 24, 25, 51], [41, 42, 43, 44, 31, 32], [11, 12, 13, 0, 0, 0]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0], [0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    # flat index (row * 6 + column) of each sequence's last token, in input order
    assert b["last_index"].tolist() == [2 * 6 + 2, 0 * 6 + 4, 1 * 6 + 5, 1 * 6 + 3, 0 * 6 + 5]
    assert b["lengths"].tolist() == [3, 5, 2, 4, 1]
    # default capacity: the longest sequence (5), so no row is wider than the padded batch
    d = pack_batch([[1, 2], [3, 4, 5, 6, 7], [8, 9, 10]], pad_id=0)
    assert d["input_ids"].tolist() == [[3, 4, 5, 6, 7], [8, 9, 10, 1, 2]]
    assert d["last_index"].tolist() == [9, 4, 7]


def test_pair_collator_packs_chosen_then_rejected():
    b = PairCollator(pad_id=0, packing=True)([([1, 2], [3]), ([4], [5, 6, 7])])
    # sequences 0..3 = chosen [1,2], [4], then rejected [3], [5,6,7]; capacity 3 (the longest):
    # FFD rows [3], [0, 1], [2]
    assert b["input_ids"].tolist() == [[5, 6, 7], [1, 2, 4], [3, 0, 0]]
    assert b["last_index"].tolist() == [4, 5, 6, 2]
    assert int(b["n_pairs"]) == 2 and "attention_mask" not in b


# -- packed == padded on a real decoder ---------------------------------------------------------

def loss_and_grads(net, rewards_fn):
    """Rewards (chosen = first half, rejected = second) and the gradient of their Bradley-Terry loss."""
    net.zero_grad(set_to_none=True)
    r = rewards_fn()
    n = r.shape[0] // 2
    pairwise_loss(r[:n], r[n:], "bradley_terry", 0.0, 0.0).backward()
    return r.detach(), {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


def assert_same_rewards_and_grads(net, rewards_fn, reference_fn) -> torch.Tensor:
    """Another layout's rewards (atol 1e-5) and gradients equal the reference's; the reference rewards."""
    r_ref, g_ref = loss_and_grads(net, reference_fn)
    r, g = loss_and_grads(net, rewards_fn)
    assert r.tolist() == pytest.approx(r_ref.tolist(), abs=1e-5)
    assert g.keys() == g_ref.keys() and len(g_ref) > 10
    for k in g_ref:
        torch.testing.assert_close(g[k], g_ref[k], atol=1e-5, rtol=1e-4, msg=k)
    return r_ref


def _naive_concat_positions(pos: torch.Tensor) -> torch.Tensor:
    return torch.arange(pos.shape[1]).expand_as(pos)


@pytest.mark.parametrize("capacity", [None, 200])
def test_packed_rewards_and_gradients_equal_padded(capacity):
    """fp32, tiny random Llama with the real tokenizer: same rewards (atol 1e-5) and same gradient."""
    _, tok, net = tiny("tiny_decoder")
    net.eval()  # no dropout: both layouts see the same computation
    seqs = encode(tok, TEXTS)
    padded = pad_batch(seqs, tok.pad_token_id)
    packed = pack_batch(seqs, tok.pad_token_id, capacity)
    assert packed["input_ids"].shape[0] < len(seqs)  # several sequences do share a row
    assert packed["input_ids"].numel() < padded["input_ids"].numel()

    r_pad = assert_same_rewards_and_grads(
        net, lambda: packed_rewards(net, packed["input_ids"], packed["position_ids"], packed["last_index"]),
        lambda: sequence_rewards(net, padded["input_ids"], padded["attention_mask"]))
    # the check can fail: concatenated without restarting positions (and so without the block mask),
    # the later sequences of a row see the earlier ones and get other rewards
    with torch.no_grad():
        leaky = packed_rewards(net, packed["input_ids"], _naive_concat_positions(packed["position_ids"]),
                               packed["last_index"])
    assert max(abs(a - b) for a, b in zip(leaky.tolist(), r_pad.tolist())) > 1e-3


def test_transformers_mask_is_block_diagonal_causal_from_segment_ids():
    """The mask transformers builds from packed position ids (what packed_rewards relies on) is
    exactly "same segment and not in the future", with segments from :func:`segment_ids`."""
    from transformers.masking_utils import create_causal_mask

    _, tok, net = tiny("tiny_decoder")
    b = pack_batch([[5] * 3, [6] * 5, [7] * 2, [8] * 1], pad_id=0, capacity=6)
    rows, width = b["input_ids"].shape
    mask = create_causal_mask(config=net.config, inputs_embeds=torch.zeros(rows, width, net.config.hidden_size),
                              attention_mask=None, cache=None, position_ids=b["position_ids"])
    assert mask is not None and mask.dtype == torch.bool and tuple(mask.shape) == (rows, 1, width, width)
    for r in range(rows):  # a row's segments: where its position ids restart at 0
        pos = b["position_ids"][r].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [width]
        seg = torch.tensor(segment_ids([e - s for s, e in zip(starts, starts[1:])]))
        q, k = torch.arange(width)[:, None], torch.arange(width)[None, :]
        assert torch.equal(mask[r, 0], (seg[:, None] == seg[None, :]) & (k <= q))


@pytest.mark.parametrize("lora_r", [0, 8])
def test_score_sequences_packed_equals_padded(lora_r):
    lora = {"r": lora_r, "alpha": 32, "dropout": 0.1, "target_modules": None}
    _, tok, net = tiny("tiny_decoder", lora=lora)
    if lora_r:  # LoRA's B starts at 0: move it so the adapters change the rewards
        assert any("lora_B" in name for name, _ in net.named_parameters())
        torch.manual_seed(1)
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.5)
    seqs = encode(tok, TEXTS * 3)
    padded = score_sequences(net, seqs, tok.pad_token_id, batch_size=7)
    for pack_length in (None, 256):
        packed = score_sequences(net, seqs, tok.pad_token_id, batch_size=7, packing=True, pack_length=pack_length)
        assert packed.tolist() == pytest.approx(padded.tolist(), abs=1e-5)


def test_training_step_packed_equals_padded():
    """RewardModel.training_step's loss is the same from a packed and a padded batch of the same pairs."""
    _, tok, net = tiny("tiny_decoder")
    loss_cfg = OmegaConf.create({"kind": "bradley_terry", "margin": 0.0, "centring_coef": 0.0})
    module = RewardModel(net, loss_cfg, OmegaConf.create({})).eval()
    module.log_dict = module.log = lambda *a, **k: None  # no Trainer attached
    seqs = encode(tok, TEXTS)
    pairs = list(zip(seqs[:3], seqs[3:]))
    loss_pad = module.training_step(PairCollator(tok.pad_token_id)(pairs), 0)
    loss_pack = module.training_step(PairCollator(tok.pad_token_id, packing=True)(pairs), 0)
    assert float(loss_pack) == pytest.approx(float(loss_pad), abs=1e-6)


# -- refusals and config ---------------------------------------------------------------------------

def test_packing_refuses_encoders_with_one_line():
    _, tok, net = tiny("tiny")
    with pytest.raises(ConfigError, match=r"data\.packing=true needs a decoder .* set data\.packing=false"):
        score_sequences(net, encode(tok, TEXTS[:2]), tok.pad_token_id, packing=True)


def test_pack_length_shorter_than_max_length_is_a_config_error():
    from ser.config import validate

    validate(compose(["data.packing=true", "data.pack_length=null"]))
    validate(compose(["data.packing=true", "data.max_length=128", "data.pack_length=128"]))
    with pytest.raises(ConfigError, match=r"data\.pack_length=64 must be >= data\.max_length=128"):
        validate(compose(["data.packing=true", "data.max_length=128", "data.pack_length=64"]))


def test_train_refuses_packing_with_an_encoder(tmp_path):
    from tests.synthetic import tiny_overrides, write_pairs

    from ser.train import run

    data = write_pairs(tmp_path / "pairs.jsonl", n=40)
    with pytest.raises(ConfigError, match=r"model\.name=tiny is an encoder"):
        run(compose(tiny_overrides(data, "data.packing=true"), output_dir=tmp_path / "run"))


@pytest.mark.numerics
def test_tiny_decoder_ser_run_with_packing(tmp_path, monkeypatch):
    """The whole job (seed RM, a self-labelling loop, evaluation) with data.packing=true: the
    training batches and every scoring pass go through the packed path, and the run learns."""
    import ser.loop
    from tests.synthetic import tiny_overrides, write_pairs

    from ser.train import run

    calls = {"train": 0, "train_packed": 0, "score": 0, "score_packed": 0}
    real_forward = RewardModel.forward
    real_score = ser.loop.score_sequences

    def forward(self, *a, **kw):
        calls["train"] += 1
        calls["train_packed"] += kw.get("last_index") is not None
        return real_forward(self, *a, **kw)

    def score(*a, **kw):
        calls["score"] += 1
        calls["score_packed"] += bool(kw.get("packing"))
        return real_score(*a, **kw)

    monkeypatch.setattr(RewardModel, "forward", forward)
    monkeypatch.setattr(ser.loop, "score_sequences", score)
    data = write_pairs(tmp_path / "pairs.jsonl", n=120)
    over = [o for o in tiny_overrides(data, "loop.max_loops=1", "data.packing=true") if o != "model=tiny"]
    res = run(compose(["model=tiny_decoder", *over], output_dir=tmp_path / "run"))
    hist = res["phases"]["ser"]["loops"]
    assert len(hist) == 2 and hist[0]["kept"] > 0
    assert calls["train"] == calls["train_packed"] == hist[-1]["global_step"]  # every training step packed
    assert calls["score"] == calls["score_packed"] == 3  # loop 0: pool, evaluation; loop 1: evaluation
    assert hist[0]["test_acc"] > 0.7  # the tiny decoder learns 'yes' over 'no'
