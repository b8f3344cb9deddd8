"""Step 4 of SER (Eq. 6): PPO of a policy LLM driven by the (evolved) reward model. From the bottom
up: :mod:`ser.ppo.policy` (the policy: loading, LoRA, prompt encoding, sampling, per-token
log-probabilities), :mod:`ser.ppo.prompts` (training and held-out prompts from the SER run's
splits), :mod:`ser.ppo.reward` (:class:`RewardScorer`: reward-model scoring of policy outputs, across
tokenizers), :mod:`ser.ppo.module` (:class:`PPOModule`, the LightningModule: rollouts and PPO
updates), :mod:`ser.ppo.stage` (:func:`run_ppo`, what the SER run calls after its loop),
:mod:`ser.ppo.job` (``python -m ser.ppo``: the follow-up job on an exported reward model) and
:mod:`ser.ppo.plots` (the reward curve). This package re-exports their public names, so
``from ser.ppo import run_ppo`` (and ``ser.ppo.PPOModule``, ...) work as before.
"""
from __future__ import annotations

from ser.errors import PPOConfigError
from ser.ppo.job import main, run_job
from ser.ppo.module import SAMPLE_COLUMNS, PPOModule, PromptBatches
from ser.ppo.plots import plot_rewards
from ser.ppo.policy import (DEFAULT_TEMPLATE, PromptEncoder, apply_lora, build_policy, disable_dropout, generate,
                            left_pad, load_policy_tokenizer, response_forward, response_mask)
from ser.ppo.prompts import _prompt_key  # noqa: F401  ser.ppo._prompt_key, as before
from ser.ppo.prompts import load_prompts, prompts_from_config, prompts_from_datamodule, save_prompts
from ser.ppo.reward import RewardScorer, resolve_reward_model_path, same_tokenizer
from ser.ppo.stage import policy_source, run_ppo, save_policy

__all__ = [
    "DEFAULT_TEMPLATE", "PPOConfigError", "PPOModule", "PromptBatches", "PromptEncoder", "RewardScorer",
    "SAMPLE_COLUMNS", "apply_lora", "build_policy", "disable_dropout", "generate", "left_pad", "load_policy_tokenizer",
    "load_prompts", "main", "plot_rewards", "policy_source", "prompts_from_config", "prompts_from_datamodule",
    "resolve_reward_model_path", "response_forward", "response_mask", "run_job", "run_ppo", "same_tokenizer",
    "save_policy", "save_prompts",
]
