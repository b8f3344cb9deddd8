"""The real small models on the real data: the whole path, briefly."""
from __future__ import annotations

import pytest
import torch

from ser.train import run
from tests.conftest import compose

pytestmark = pytest.mark.integration


def test_minilm_ser_on_real_hh_pairs(tmp_path, data_dir):
    cfg = compose(["experiment=ser_hh_minilm", "data.limit=300", "data.max_length=64", "loop.max_loops=1",
                   "compare_full=false", "trainer.enable_progress_bar=false", "thresholds.min_count=1"],
                  output_dir=tmp_path / "run")
    res = run(cfg)
    ser = res["phases"]["ser"]
    assert ser["counts"]["labeled"] > 20 and ser["counts"]["pool"] > 100
    h0 = ser["loops"][0]
    assert 0.0 <= h0["test_acc"] <= 1.0 and h0["score_std"] > 0  # a real, non-constant reward model
    assert h0["status"] in ("EASY", "HARD", "STOP")
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(ser["export"])
    assert rm.config.num_labels == 1 and rm.config.model_type == "bert"


def test_smollm2_reward_model_scores_real_pairs(data_dir):
    from ser.data import Formatter, load_pairs
    from ser.model import build_hf_model, load_tokenizer, score_sequences

    mcfg = compose(["model=smollm2_135m"]).model
    tok = load_tokenizer(mcfg)
    net = build_hf_model(mcfg, tok)
    pairs, _ = load_pairs(["hh-rlhf/harmless-base/test.jsonl.gz"], "hh", str(data_dir), limit=4)
    fmt = Formatter(tok, max_length=96)
    assert fmt.chat  # SmolLM2 has a chat template
    seqs = [fmt.encode(p["prompt"], p["chosen"])[0] for p in pairs]
    s_batch = score_sequences(net, seqs, tok.pad_token_id, batch_size=4)
    s_alone = score_sequences(net, seqs, tok.pad_token_id, batch_size=1)
    assert torch.allclose(torch.tensor(s_batch), torch.tensor(s_alone), atol=1e-4)
    assert len(set(round(x, 5) for x in s_batch)) == len(seqs)
