"""Prompt lists of the PPO stage: the prompts to train on and the held-out prompts to evaluate on,
taken from the SER run's data splits (:func:`prompts_from_datamodule`, :func:`prompts_from_config`:
labeled + pool prompts to train on, test prompts held out, never trained on), their
deduplication key, and jsonl files of prompts (:func:`save_prompts`, :func:`load_prompts`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

from ser.ppo.policy import load_policy_tokenizer


def _prompt_key(messages: list[dict]) -> str:
    return json.dumps(messages, sort_keys=True)


def _dedup(prompts: Sequence[list[dict]]) -> list[list[dict]]:
    seen, out = set(), []
    for p in prompts:
        k = _prompt_key(p)
        if k not in seen:
            seen.add(k)
            out.append([{"role": m["role"], "content": m["content"]} for m in p])
    return out


def prompts_from_datamodule(dm) -> tuple[list[list[dict]], list[list[dict]]]:
    """``(train_prompts, eval_prompts)``: labeled + pool prompts to train on, test prompts to evaluate.

    Both deduplicated; a prompt of the test split is never among the training prompts (held-out
    prompts are never trained on). Validation prompts are used for neither.
    """
    if not hasattr(dm, "splits"):
        dm.setup()
    s = dm.splits
    eval_prompts = _dedup([p["prompt"] for p in s.test])
    held = {_prompt_key(p) for p in eval_prompts} | {_prompt_key(p["prompt"]) for p in s.val}
    train = _dedup([p["prompt"] for p in list(s.labeled) + list(s.pool)])
    train = [p for p in train if _prompt_key(p) not in held]
    return train, eval_prompts


def prompts_from_config(cfg: DictConfig) -> tuple[list[list[dict]], list[list[dict]]]:
    """:func:`prompts_from_datamodule` for the run config ``cfg`` (same data, same seed, hence the
    same splits as its SER run); the data module tokenises with the policy's tokenizer."""
    from ser.data import PreferenceDataModule

    dm = PreferenceDataModule(cfg.data, load_policy_tokenizer(cfg.ppo.policy), seed=cfg.seed)
    dm.setup()
    return prompts_from_datamodule(dm)


def save_prompts(path: Path, prompts: Sequence[list[dict]]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def load_prompts(path: str | Path) -> list[list[dict]]:
    """Prompts from a jsonl file: ``{"prompt": [messages] | "text"}`` per line."""
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        p = row["prompt"] if isinstance(row, dict) else row
        out.append([{"role": "user", "content": p}] if isinstance(p, str) else p)
    return out
