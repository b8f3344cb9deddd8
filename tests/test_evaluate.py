"""Downstream evaluation: win/tie/loss by hand, a policy against itself and against a better one,
best-of-N, and the `ser evaluate-policy` / `ser best-of-n` commands on a tiny PPO run."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from ser import ppo
from ser.cli import main as cli_main
from ser.evaluate import best_of_n, compare, evaluate_policy
from tests.test_ppo import PROMPTS, compose_ppo, even_token_share, export_tiny_rm, tiny_policy, tiny_ppo_overrides

TARGET = 1000  # the token a "better" policy always says


def says_target(prompts, texts, prompt_ids, response_ids):
    return torch.tensor([sum(t == TARGET for t in r) / max(1, len(r)) for r in response_ids], dtype=torch.float32)


def test_compare_by_hand():
    r = compare(torch.tensor([1.0, 0.5, 0.25, 0.375, 0.0]), torch.tensor([0.0, 0.5, 0.375, 0.25, 0.0]), tie_margin=0.125)
    # differences 1.0 (win), 0 (tie), -0.125 and +0.125 (ties at the margin), 0 (tie)
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (1, 4, 0, 5)
    assert r["win_rate"] == 0.2 and r["tie_rate"] == 0.8 and r["win_rate_ties_half"] == pytest.approx(0.6)
    r = compare(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 2.0]))
    assert (r["wins"], r["ties"], r["losses"]) == (1, 1, 1) and r["loss_rate"] == pytest.approx(1 / 3)


def test_a_policy_against_itself_ties_everywhere():
    base, tok = tiny_policy()
    res = evaluate_policy(base, base, even_token_share, PROMPTS[:6], tok, max_new_tokens=6, greedy=True, batch_size=4)
    assert (res["wins"], res["ties"], res["losses"]) == (0, 6, 0) and res["identical_responses"] == 6
    assert res["kl_to_reference"] == pytest.approx(0.0, abs=1e-6)
    assert res["judge_reward_policy"] == res["judge_reward_base"]


def test_a_better_policy_wins_and_has_moved_away():
    base, tok = tiny_policy()
    better = copy.deepcopy(base)
    head = better.lm_head
    new = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        new.weight.copy_(head.weight)
        new.bias.zero_()
        new.bias[TARGET] = 50.0
    better.lm_head = new
    res = evaluate_policy(better, base, says_target, PROMPTS[:8], tok, max_new_tokens=5, temperature=1.0, batch_size=4)
    assert res["win_rate"] == 1.0 and res["losses"] == 0 and res["n"] == 8
    assert res["judge_reward_policy"] == 1.0 and res["judge_reward_base"] < 0.1
    assert res["kl_to_reference"] > 5.0  # log(49152) ~ 10.8 nats per token of a forced token
    assert res["examples"][0]["policy"] and len(res["examples"]) == 3


def test_best_of_n_never_loses_to_a_single_sample_under_its_own_reward_model():
    base, tok = tiny_policy(initializer_range=1.0)
    res = best_of_n(base, tok, even_token_share, even_token_share, PROMPTS[:8], n=4, max_new_tokens=6, temperature=1.0)
    assert res["losses"] == 0 and res["wins"] > 0
    assert res["judge_reward_best_of_n"] > res["judge_reward_single"]
    assert res["selector_reward_best_of_n"] == pytest.approx(res["judge_reward_best_of_n"])
    one = best_of_n(base, tok, even_token_share, even_token_share, PROMPTS[:4], n=1, max_new_tokens=6)
    assert one["ties"] == 4  # best of one is the single sample


@pytest.fixture(scope="module")
def tiny_ppo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ppo_run")
    rm = export_tiny_rm(tmp / "rm", "tiny")
    cfg = compose_ppo(tiny_ppo_overrides("ppo.steps=1", "ppo.eval_size=0"), tmp / "run")
    held = [[{"role": "user", "content": f"held-out question {i}"}] for i in range(5)]
    res = ppo.run_ppo(cfg, str(rm), PROMPTS, held)
    return tmp, rm, res


def test_cli_evaluate_policy_on_a_ppo_run(tiny_ppo_run, capsys):
    tmp, rm, res = tiny_ppo_run
    out = tmp / "eval.json"
    assert cli_main(["evaluate-policy", "--run", str(tmp / "run"), "--judge", str(rm), "--limit", "4",
                     "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 4 and r["wins"] + r["ties"] + r["losses"] == 4
    assert r["judge"] == str(rm) and r["policy"] == res["policy"]
    assert r["sampling"]["max_new_tokens"] == 8  # the run's generation settings (ppo=tiny)
    for k in ("win_rate", "tie_rate", "judge_reward_policy", "judge_reward_base", "kl_to_reference"):
        assert isinstance(r[k], float), k
    assert '"win_rate"' in capsys.readouterr().out


def test_cli_best_of_n_and_a_clear_error(tiny_ppo_run, tmp_path, capsys):
    tmp, rm, _ = tiny_ppo_run
    out = tmp_path / "bon.json"
    # the starting policy (a conf/ppo option), the run's held-out prompts and sampling settings
    assert cli_main(["best-of-n", "--run", str(tmp / "run"), "--policy", "tiny", "--reward-model", str(rm),
                     "--n", "3", "--limit", "3", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 3 and r["n_samples"] == 3 and r["losses"] == 0  # judge = selector by default
    assert r["policy"] == "tiny" and r["sampling"]["max_new_tokens"] == 8
    capsys.readouterr()
    assert cli_main(["evaluate-policy", "--judge", str(rm)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: missing --policy, --base, --prompts (or pass --run PPO_RUN_DIR)"
