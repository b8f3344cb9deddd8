"""PPO stage: masks and log-probs by hand, the cross-tokenizer reward path, a tiny policy that
learns a deterministic reward, LoRA's reference, configs, and the hand-off from a finished SER run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from ser import ppo
from ser.config import validate_ppo
from ser.ppo import PPOConfigError, RewardScorer, left_pad, response_forward, response_mask
from tests.conftest import CONF, compose
from tests.synthetic import tiny_overrides, write_pairs

# numerics-sensitive: `make test` runs this file a second time under the AVX2 caps
pytestmark = pytest.mark.numerics

PLAIN = "Question: {q}\n\nAnswer: {a}"


# --------------------------------------------------------------------------------------------
# helpers (also used by tests/test_evaluate.py)
# --------------------------------------------------------------------------------------------

def compose_ppo(overrides=(), output_dir=None):
    """The config `python -m ser.ppo OVERRIDES` would run (conf/ppo_main.yaml)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="ppo_main", overrides=list(overrides))
    with open_dict(cfg):
        cfg.output_dir = str(output_dir) if output_dir else "/tmp/ser-test-unused"
    return cfg


def tiny_ppo_overrides(*extra: str) -> list[str]:
    return ["ppo=tiny", "logger=csv", "trainer.enable_progress_bar=false", *extra]


def export_tiny_rm(path: Path, model: str = "tiny", chat: bool = True, max_length: int = 64) -> Path:
    """A random tiny reward model exported like a SER run's (with ser_reward.json)."""
    from ser.model import build_hf_model, export_reward_model, load_tokenizer

    mc = compose([f"model={model}"]).model
    tok = load_tokenizer(mc)
    torch.manual_seed(0)
    net = build_hf_model(mc, tok)
    return export_reward_model(net, tok, path, {"template": PLAIN, "use_chat_template": chat, "max_length": max_length})


def policy_tokenizer():
    return ppo.load_policy_tokenizer(compose_ppo(["ppo=tiny"]).ppo.policy)


def tiny_policy(**config):
    cfg = compose_ppo(["ppo=tiny"] + [f"+ppo.policy.config.{k}={v}" for k, v in config.items()])
    tok = ppo.load_policy_tokenizer(cfg.ppo.policy)
    return ppo.build_policy(cfg.ppo.policy, tok).eval(), tok


PROMPTS = [[{"role": "user", "content": f"question {i}: tell me about cats"}] for i in range(40)]


# --------------------------------------------------------------------------------------------
# masks, padding, per-token log-probs
# --------------------------------------------------------------------------------------------

def test_response_mask_stops_at_first_eos():
    eos = 2
    resp = torch.tensor([[5, 6, 2, 2, 2], [5, 2, 7, 2, 9], [5, 6, 7, 8, 9], [2, 2, 2, 2, 2]])
    assert response_mask(resp, eos).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_left_pad_by_hand():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_response_logprobs_ignore_left_padding():
    """Log-probs of a response are the same alone and left-padded in a batch, and equal a direct
    log-softmax of the model's logits over the unpadded sequence (temperature applied)."""
    model, tok = tiny_policy()
    torch.manual_seed(0)
    q1, q2 = [11, 12, 13, 14, 15], [21, 22]
    r = torch.tensor([[31, 32, 33], [41, 42, 2]])
    rmask = response_mask(r, tok.eos_token_id)
    q, qm = left_pad([q1, q2], tok.pad_token_id)
    lp, values, ent = response_forward(model, q, qm, r, rmask, temperature=0.7, value_head=torch.nn.Linear(32, 1),
                                       entropy=True)
    assert lp.shape == values.shape == ent.shape == (2, 3)
    with torch.no_grad():
        full = torch.tensor([q2 + [41, 42, 2]])
        logits = model(input_ids=full).logits[0] / 0.7
        direct = torch.log_softmax(logits, -1)[[1, 2, 3], [41, 42, 2]]
    assert torch.allclose(lp[1], direct, atol=1e-5)
    alone, _, _ = response_forward(model, torch.tensor([q1]), torch.ones(1, 5, dtype=torch.long), r[:1], rmask[:1], 0.7)
    assert torch.allclose(lp[0], alone[0], atol=1e-5)


# --------------------------------------------------------------------------------------------
# the reward model side: cross-tokenizer path and fast path
# --------------------------------------------------------------------------------------------

def test_cross_tokenizer_reward_is_the_reward_models_own_formatting(tmp_path):
    """SmolLM2-tokenised policy output scored by a BERT reward model: decoded text, re-encoded with
    the RM's tokenizer and template (from ser_reward.json), read at [CLS] as in training."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ser.data import Formatter, pad_batch
    from ser.rewards import sequence_rewards

    rm = export_tiny_rm(tmp_path / "rm", "tiny", chat=True)
    ptok = policy_tokenizer()
    scorer = RewardScorer(str(rm), policy_tokenizer=ptok)
    assert not scorer.fast and not scorer.formatter.chat  # BERT: no chat template -> the plain template
    prompts = [[{"role": "user", "content": "how do cats sleep?"}], [{"role": "user", "content": "why is rain wet?"}]]
    texts = ["yes, gladly: cats sleep a lot", "no."]
    rids = [ptok(t, add_special_tokens=False)["input_ids"] + [ptok.eos_token_id] for t in texts]
    got = scorer(prompts, texts, None, rids)
    tok = AutoTokenizer.from_pretrained(rm)
    net = AutoModelForSequenceClassification.from_pretrained(rm).eval()
    fmt = Formatter(tok, 64, PLAIN, True)
    ids = [fmt.encode(p, t)[0] for p, t in zip(prompts, texts)]
    assert tok.decode(ids[0]).startswith("[CLS] question : how do cats sleep? answer : yes")
    with torch.no_grad():
        want = torch.stack([sequence_rewards(net, **pad_batch([i], tok.pad_token_id)) for i in ids]).squeeze(-1)
    assert torch.allclose(got, want, atol=1e-5)
    assert scorer(prompts[::-1], texts[::-1]).flip(0).allclose(got, atol=1e-5)  # batch order does not matter
    sig = RewardScorer(str(rm), transform="sigmoid")
    assert torch.allclose(sig(prompts, texts), torch.sigmoid(want), atol=1e-5)


def test_shared_tokenizer_takes_the_fast_path_with_the_same_scores(tmp_path):
    """A decoder RM with the policy's tokenizer scores the policy's ids directly; the result equals
    decoding and re-encoding (for canonically tokenised responses), tail of the template included."""
    rm = export_tiny_rm(tmp_path / "rm", "tiny_decoder", chat=True, max_length=128)
    ptok = policy_tokenizer()
    enc = ppo.PromptEncoder(ptok, 128, True)
    fast = RewardScorer(str(rm), policy_tokenizer=ptok, policy_chat=True)
    slow = RewardScorer(str(rm), policy_tokenizer=None)
    assert fast.fast and not slow.fast
    assert ptok.decode(fast.tail_ids) == "<|im_end|>\n"
    prompts = [[{"role": "user", "content": "how do cats sleep?"}], [{"role": "user", "content": "why is rain wet?"}]]
    texts = ["They sleep curled up, mostly during the day.", "Rain is water"]
    pids = [enc.full_ids(p) for p in prompts]
    rids = [ptok(texts[0], add_special_tokens=False)["input_ids"] + [ptok.eos_token_id],
            ptok(texts[1], add_special_tokens=False)["input_ids"]]  # second one hit the length limit: no eos
    assert fast.encode(prompts[0], texts[0], pids[0], rids[0]) == slow.encode(prompts[0], texts[0])
    a, b = fast(prompts, texts, pids, rids), slow(prompts, texts, pids, rids)
    assert torch.allclose(a, b, atol=1e-5)
    # the fast path really uses the ids: different ids, same text -> a different score
    c = fast(prompts, texts, pids, [rids[1], rids[0]])
    assert not torch.allclose(a, c)


def test_reward_model_without_ser_reward_json_and_run_folders(tmp_path):
    rm = export_tiny_rm(tmp_path / "run" / "ser" / "reward_model", "tiny_decoder", chat=False)
    (rm / "ser_reward.json").unlink()
    s = RewardScorer(str(rm))  # a plain HF reward model: its tokenizer has a chat template -> used
    assert s.formatter.chat and s.meta == {}
    # a SER run folder resolves to its final reward model
    assert ppo.resolve_reward_model_path(str(tmp_path / "run")) == str(rm)
    with pytest.raises(PPOConfigError, match="ppo.reward_model"):
        ppo.resolve_reward_model_path(str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------------------------
# prompts: held-out prompts are never trained on
# --------------------------------------------------------------------------------------------

def test_prompts_from_datamodule_hold_out_test_prompts(tmp_path):
    from ser.data import PreferenceDataModule

    data = write_pairs(tmp_path / "pairs.jsonl", n=90)
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    rows += rows[:10]  # duplicated prompts are deduplicated
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose(tiny_overrides(data))
    dm = PreferenceDataModule(cfg.data, policy_tokenizer(), seed=0)
    train, held = ppo.prompts_from_datamodule(dm)
    key = ppo._prompt_key
    test = {key(p["prompt"]) for p in dm.splits.test}
    val = {key(p["prompt"]) for p in dm.splits.val}
    assert {key(p) for p in held} == test and len(held) == len(test)
    assert not ({key(p) for p in train} & (test | val))
    assert {key(p) for p in train} == {key(p["prompt"]) for p in dm.splits.labeled + dm.splits.pool}
    assert len(train) == len({key(p) for p in train})
    with pytest.raises(ValueError, match="held-out"):
        ppo.run_ppo(compose_ppo(tiny_ppo_overrides(), tmp_path / "x"), "unused", train + held[:1], held)


# --------------------------------------------------------------------------------------------
# PPO itself
# --------------------------------------------------------------------------------------------

def even_token_share(prompts, texts, prompt_ids, response_ids):
    """A deterministic reward of the response: the share of its tokens with an even id."""
    return torch.tensor([sum(t % 2 == 0 for t in r) / max(1, len(r)) for r in response_ids], dtype=torch.float32)


def _learning_run(tmp_path, seed: int):
    cfg = compose_ppo(tiny_ppo_overrides("ppo.steps=30", "ppo.batch_size=16", "ppo.minibatch_size=4", "ppo.lr=1e-2",
                                         "ppo.kl.adaptive=false", "ppo.kl.init_coef=0.05", "ppo.eval_size=0",
                                         "+ppo.policy.config.initializer_range=1.0", "ppo.save_policy=false",
                                         "ppo.log_samples_every=10", f"seed={seed}"), tmp_path / f"s{seed}")
    res = ppo.run_ppo(cfg, None, PROMPTS, [], scorer=even_token_share)
    rows = [json.loads(x) for x in (tmp_path / f"s{seed}" / "ppo" / "ppo_metrics.jsonl").read_text().splitlines()]
    return res, rows


@pytest.mark.slow
def test_tiny_policy_learns_a_deterministic_reward(tmp_path):
    """30 PPO steps on a tiny Llama, three sampling streams (seeds): the share of even token ids
    rises from ~0.5 in each, and clearly on average. One stream is one trajectory, and each CPU's
    kernels (AVX2, AVX512, AMX) give another; the margins are set on the spread over streams.
    Measured on an AMD EPYC (AVX512-BF16), natively and with the AVX2 caps, seeds 0-4: gains
    (last 5 batches - first 5) 0.17-0.45 natively, 0.16-0.52 under AVX2; an Intel Xeon (AMX) gave
    0.12 on seed 0. A random policy's 5-batch mean moves by ~0.03.
    (initializer_range=1 makes the random policy's distribution peaked enough to explore.)"""
    gains = []
    for seed in (0, 1, 2):
        res, rows = _learning_run(tmp_path, seed)
        rewards = [r["reward"] for r in rows]
        assert len(rows) == res["steps"] == 30
        first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
        assert first < 0.7 and last > first + 0.05, (seed, rewards)
        gains.append(last - first)
    assert sum(gains) / len(gains) > 0.12, gains
    # what a run logs, from the last stream (seed 2)
    run_dir = tmp_path / "s2"
    for k in ("kl", "entropy", "clipfrac", "value_loss", "approx_kl", "response_length", "policy_loss", "kl_coef"):
        assert all(isinstance(r[k], float) for r in rows), k
    for r in rows:  # the step's time, broken down by phase
        phases = [r[f"time_{k}_s"] for k in ("generate", "reward", "forward", "update")]
        assert all(t >= 0 for t in phases) and sum(phases) == pytest.approx(r["time_step_s"], abs=0.01)
    assert set(res["time_per_step_phases_s"]) == {"generate", "reward", "forward", "update"}
    assert all(r["kl_coef"] == 0.05 for r in rows)  # fixed controller
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # first rollout: the policy is the reference
    assert rows[-1]["kl"] > 0.1  # it moved away from the reference
    import csv

    samples = list(csv.reader(open(run_dir / "ppo" / "samples.csv", newline="")))
    assert samples[0] == ["step", "prompt", "response", "reward"]
    assert [int(r[0]) for r in samples[1:]] == [1, 1, 10, 10, 20, 20, 30, 30]  # n_samples=2 at steps 1, 10, 20, 30

    metrics = list(csv.DictReader(open(run_dir / "ppo" / "csv" / "metrics.csv")))
    assert {"ppo/reward", "ppo/kl", "ppo/entropy", "ppo/clipfrac", "ppo/value_loss", "ppo/approx_kl",
            "ppo/response_length"} <= set(metrics[0])


def test_interrupted_ppo_resumes_to_the_same_run(tmp_path):
    """A stage killed after step 5 resumes from the step-4 checkpoint with the same command and ends
    exactly as an uninterrupted run: same rewards, KL, KL coefficient and metrics rows."""
    over = tiny_ppo_overrides("ppo.steps=6", "ppo.batch_size=4", "ppo.minibatch_size=2", "ppo.lr=3e-2",
                              "ppo.checkpoint_every=2", "ppo.eval_size=2", "ppo.save_policy=false",
                              "ppo.log_samples_every=2", "+ppo.policy.config.initializer_range=1.0")
    held = [[{"role": "user", "content": "held out"}]]
    ref = ppo.run_ppo(compose_ppo(over, tmp_path / "a"), None, PROMPTS, held, scorer=even_token_share)

    calls = {"n": 0}

    def dies_at_step_6(prompts, texts, pids, rids):
        calls["n"] += 1
        if calls["n"] == 1 + 6:  # the eval-before batch, then rollout steps 1..5 succeed
            raise RuntimeError("killed")
        return even_token_share(prompts, texts, pids, rids)

    out = tmp_path / "b"
    with pytest.raises(RuntimeError, match="killed"):
        ppo.run_ppo(compose_ppo(over, out), None, PROMPTS, held, scorer=dies_at_step_6)
    assert (out / "ppo" / "checkpoints" / "last.ckpt").exists() and not (out / "ppo" / "ppo.json").exists()
    assert len((out / "ppo" / "ppo_metrics.jsonl").read_text().splitlines()) == 5
    resumed_calls = []

    def counting(*a):
        resumed_calls.append(1)
        return even_token_share(*a)

    res = ppo.run_ppo(compose_ppo(over, out), None, PROMPTS, held, scorer=counting)
    assert len(resumed_calls) == 2 + 1  # rollout steps 5 and 6, then eval-after: steps 1-4 came from the checkpoint
    rows = [json.loads(x) for x in (out / "ppo" / "ppo_metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (tmp_path / "a" / "ppo" / "ppo_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for k in ("reward", "kl", "kl_coef", "policy_loss", "value_loss"):
        assert [r[k] for r in rows] == pytest.approx([r[k] for r in ref_rows], abs=1e-5), k
    assert res["eval_before"] == ref["eval_before"]
    assert res["eval_after"] == pytest.approx(ref["eval_after"], abs=1e-5)
    assert res["kl_coef_last"] == pytest.approx(ref["kl_coef_last"], rel=1e-6)
    samples = (out / "ppo" / "samples.csv").read_text()
    assert samples == (tmp_path / "a" / "ppo" / "samples.csv").read_text()
    assert not (out / "ppo" / "checkpoints" / "last.ckpt").exists()  # removed once the stage is done


def test_adaptive_kl_coefficient_moves_and_lora_reference_is_the_base_model(tmp_path):
    """LoRA: the reference is the model with adapters disabled (equal to the policy at step 0);
    the adaptive controller lowers the coefficient while the KL stays under its target; the saved
    policy is a merged plain HF model whose logits equal the trained one's."""
    from transformers import AutoModelForCausalLM

    cfg = compose_ppo(tiny_ppo_overrides("ppo.steps=2", "ppo.policy.lora.r=4", "ppo.kl.target=1000",
                                         "ppo.kl.horizon=10", "ppo.eval_size=2"), tmp_path)
    seen = {}

    def scorer(prompts, texts, pids, rids):
        return torch.randn(len(texts))

    orig = ppo.PPOModule.on_train_start

    def check_ref(self):
        assert self.ref_policy is None and self.lora
        q, qm = left_pad([[11, 12, 13]], 2)
        r = torch.tensor([[5, 6]])
        m = torch.ones_like(r)
        lp = response_forward(self.policy, q, qm, r, m)[0]
        seen["equal_at_start"] = torch.allclose(lp, self.ref_logprobs(q, qm, r, m), atol=1e-6)
        orig(self)

    ppo.PPOModule.on_train_start = check_ref
    try:
        res = ppo.run_ppo(cfg, None, PROMPTS, [[{"role": "user", "content": "held out"}]], scorer=scorer)
    finally:
        ppo.PPOModule.on_train_start = orig
    assert seen["equal_at_start"]
    assert res["kl_coef_last"] < 0.2  # KL far below target: error clipped at -0.2, x(1 - 0.2 * 4 / 10) per step
    assert res["kl_coef_last"] == pytest.approx(0.2 * (1 - 0.2 * 4 / 10) ** 2, rel=1e-6)
    saved = AutoModelForCausalLM.from_pretrained(res["policy"])
    assert not any("lora" in k for k in saved.state_dict())
    assert (Path(res["policy"]) / "value_head.pt").exists() and res["eval_after"]["kl"] != 0.0


@pytest.mark.parametrize("override,key", [
    ("ppo.minibatch_size=16", "ppo.minibatch_size"),
    ("ppo.ppo_epochs=0", "ppo.ppo_epochs"),
    ("ppo.lr=0", "ppo.lr"),
    ("ppo.generation.top_p=1.5", "ppo.generation.top_p"),
    ("ppo.generation.temperature=0", "ppo.generation.temperature"),
    ("ppo.kl.estimator=k9", "ppo.kl.estimator"),
    ("ppo.value_model=shared", "ppo.value_model"),
    ("ppo.reward_transform=tanh", "ppo.reward_transform"),
    ("ppo.lam=1.5", "ppo.lam"),
])
def test_bad_ppo_values_fail_early_naming_the_key(override, key):
    from ser.config import ConfigError

    with pytest.raises(ConfigError) as e:
        validate_ppo(compose_ppo(["ppo=tiny", override]).ppo)
    assert key in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "ppo").glob("*.yaml")))
def test_every_ppo_config_composes_and_validates(option):
    cfg = compose_ppo([f"ppo={option}"])
    from omegaconf import OmegaConf

    OmegaConf.to_container(cfg, resolve=True)
    if option == "none":
        assert cfg.ppo.enabled is False
        return
    validate_ppo(cfg.ppo)
    assert cfg.ppo.enabled


@pytest.mark.parametrize("option", ["mistral_7b", "llama3_8b", "llama2_13b", "llama3_70b"])
def test_paper_ppo_configs_keep_the_authors_settings(option):
    p = compose_ppo([f"ppo={option}"]).ppo
    assert "/" in p.policy.name_or_path and p.policy.lora.r == 16 and p.lr == 1.4e-5 and p.batch_size == 8
    assert p.ppo_epochs == 4 and p.kl.init_coef == 0.2 and p.kl.adaptive and p.kl.target == 0.1
    assert p.reward_transform == "sigmoid"


def test_ppo_recipes_compose_with_the_ppo_entry():
    for path in sorted((CONF / "experiment").glob("ppo_*.yaml")):
        cfg = compose_ppo([f"experiment={path.stem}"])
        validate_ppo(cfg.ppo)
        assert cfg.ppo.enabled


# --------------------------------------------------------------------------------------------
# the hand-off from a finished SER run
# --------------------------------------------------------------------------------------------

def test_handoff_from_a_finished_tiny_ser_run(tmp_path):
    """A tiny SER run exports its reward model; the follow-up job (python -m ser.ppo's run_job) takes
    the run folder, trains the policy on labeled + pool prompts against it, never on test prompts."""
    from ser.train import run

    data = write_pairs(tmp_path / "pairs.jsonl", n=90)
    over = tiny_overrides(data, "loop.max_loops=1", "loop.epochs_per_loop=1")
    run(compose(over, output_dir=tmp_path / "run"))
    rm = tmp_path / "run" / "ser" / "reward_model"
    assert json.loads((rm / "ser_reward.json").read_text())["template"]
    cfg = compose_ppo([*over, "ppo=tiny", f"ppo.reward_model={tmp_path / 'run'}"], tmp_path / "run")
    res = ppo.run_job(cfg)
    out = tmp_path / "run" / "ppo"
    assert res["reward_model"] == str(rm) and not res["fast_path"]  # BERT RM, SmolLM2-tokenised policy
    assert res["steps"] == 3 and Path(res["policy"], "config.json").exists()
    assert res["eval_before"]["kl"] == pytest.approx(0.0, abs=1e-6) and res["eval_after"]["n"] == 4
    held = ppo.load_prompts(out / "eval_prompts.jsonl")
    assert len(held) == res["n_eval_prompts"] > 0 and res["n_train_prompts"] > 0
    assert json.loads((out / "ppo.json").read_text())["steps"] == 3
    # finished: the same call returns the stored summary without training again
    mtime = (out / "ppo_metrics.jsonl").stat().st_mtime
    assert ppo.run_job(cfg) == json.loads((out / "ppo.json").read_text())
    assert (out / "ppo_metrics.jsonl").stat().st_mtime == mtime
    # and a reward-curve figure can be drawn from the metrics
    assert ppo.plot_rewards(out / "ppo_metrics.jsonl", tmp_path / "curve.png").stat().st_size > 0


def test_job_without_a_reward_model_fails_with_one_line(tmp_path):
    with pytest.raises(PPOConfigError, match="ppo.reward_model"):
        ppo.run_job(compose_ppo(tiny_ppo_overrides(), tmp_path))


def test_python_m_ser_ppo_follow_up_job(tmp_path):
    """The Hydra entry as a user runs it, on an exported reward-model folder (separate value model)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    rm = export_tiny_rm(tmp_path / "rm", "tiny")
    data = write_pairs(tmp_path / "pairs.jsonl", n=60)
    cmd = [sys.executable, "-m", "ser.ppo", "ppo=tiny", "model=tiny", f"data.files=[{data}]", "data.format=pairs",
           "data.data_dir=null", "labeled_fraction=0.3", "ppo.steps=2", "ppo.eval_size=0", f"ppo.reward_model={rm}",
           "ppo.value_model=separate",
           "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'job'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((tmp_path / "job" / "ppo" / "ppo.json").read_text())
    assert res["steps"] == 2 and res["reward_model"] == str(rm) and "[ppo] 2 steps" in p.stdout
    bad = subprocess.run(cmd[:-2] + ["ppo.lr=-1", f"hydra.run.dir={tmp_path / 'bad'}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: ppo.lr=-1")


def test_cli_ppo_execs_ser_ppo(monkeypatch):
    import sys

    from ser import cli

    calls = []
    monkeypatch.setattr(cli.os, "execv", lambda exe, args: calls.append((exe, args)))
    assert cli.main(["ppo", "ppo=tiny", "--cfg", "job"]) == 0
    assert calls == [(sys.executable, [sys.executable, "-m", "ser.ppo", "ppo=tiny", "--cfg", "job"])]
    assert {"ppo", "evaluate-policy", "best-of-n"} <= set(cli.COMMANDS)
