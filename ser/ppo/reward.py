"""Reward-model scoring of the policy's outputs: :class:`RewardScorer` scores ``(prompt,
response)`` with any exported SER reward model or Hugging Face sequence-classification model
(:func:`resolve_reward_model_path`: a reward-model folder, a SER run folder or a hub id).
Responses are decoded and re-encoded with the reward model's own tokenizer and formatting
(``ser_reward.json``: template, chat template, max length), so the policy and the reward model may
use different tokenizers (CPU default: SmolLM2 policy, MiniLM reward model). When both share one
tokenizer (:func:`same_tokenizer`) and the reward model formats with the same chat template, the
fast path scores the policy's own token ids (no decode / re-encode).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch

from ser.errors import PPOConfigError
from ser.ppo.policy import DEFAULT_TEMPLATE


def resolve_reward_model_path(path: str) -> str:
    """A reward-model folder, a SER run folder (``<run>/ser/reward_model``) or a hub id."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_dir():
        for cand in (p, p / "reward_model", p / "ser" / "reward_model", p / "full" / "reward_model", p / "seed" / "reward_model"):
            if (cand / "config.json").exists():
                return str(cand)
        raise PPOConfigError(f"ppo.reward_model={path}: no config.json there (nor in reward_model/ or ser/reward_model/); "
                             f"pass an exported reward-model folder")
    if p.is_absolute() or str(path).startswith((".", "~")) or str(path).count("/") != 1:
        raise PPOConfigError(f"ppo.reward_model={path}: no such folder (pass an exported reward-model folder or a hub id)")
    return str(path)


def same_tokenizer(a, b) -> bool:
    if a is b:
        return True
    try:
        return (a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id
                and getattr(a, "chat_template", None) == getattr(b, "chat_template", None))
    except Exception:  # noqa: BLE001 - exotic tokenizers: take the safe slow path
        return False


class RewardScorer:
    """Sequence reward of ``(prompt messages, response text)`` under a reward model.

    Formatting follows ``ser_reward.json`` when the folder has one (template, chat template, max
    length, as at training time); otherwise the chat template if the tokenizer has one, else the
    plain template. ``policy_tokenizer`` (with ``policy_chat=True``) enables the fast path when the
    tokenizers match: the policy's own ids are scored, with the template's tail after the answer.
    """

    def __init__(self, path: str, policy_tokenizer=None, policy_chat: bool = True, batch_size: int = 16,
                 transform: str = "raw", device: str | torch.device = "cpu", dtype: str = "float32"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ser.data import Formatter

        self.path = resolve_reward_model_path(path)
        try:
            tok = AutoTokenizer.from_pretrained(self.path)
            model = AutoModelForSequenceClassification.from_pretrained(self.path, num_labels=1, dtype=getattr(torch, dtype))
        except OSError as e:
            from ser.model import ModelNotFound

            raise ModelNotFound(f"reward model '{path}' could not be loaded ({str(e).splitlines()[0][:160]})") from e
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        tok.padding_side = "right"
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id
        model.eval().requires_grad_(False)
        meta_file = Path(self.path) / "ser_reward.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        self.meta = meta
        max_len = meta.get("max_length") or min(int(getattr(tok, "model_max_length", 512) or 512), 512)
        self.formatter = Formatter(tok, max_length=max_len, template=meta.get("template", DEFAULT_TEMPLATE),
                                   use_chat_template=meta.get("use_chat_template", True), overlength="truncate")
        self.tok, self.model = tok, model.to(device)
        self.batch_size = int(batch_size)
        if transform not in ("raw", "sigmoid"):
            raise PPOConfigError(f"ppo.reward_transform='{transform}' must be raw or sigmoid")
        self.transform = transform
        self.fast = bool(policy_tokenizer is not None and policy_chat and self.formatter.chat
                         and same_tokenizer(tok, policy_tokenizer))
        self.tail_ids: list[int] = []
        if self.fast:
            probe = [{"role": "user", "content": "q"}]
            full, start = self.formatter.text(probe, "ANSWER")
            self.tail_ids = tok(full[start + len("ANSWER"):], add_special_tokens=False)["input_ids"]

    def to(self, device) -> "RewardScorer":
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompt: list[dict], response: str, prompt_ids: Sequence[int] | None = None,
               response_ids: Sequence[int] | None = None) -> list[int]:
        if self.fast and prompt_ids is not None and response_ids is not None:
            resp = [t for t in response_ids]
            while resp and resp[-1] in (self.tok.eos_token_id, self.tok.pad_token_id):
                resp = resp[:-1]
            ids = list(prompt_ids) + resp + self.tail_ids
            if len(ids) <= self.formatter.max_length:
                return ids
        ids, _ = self.formatter.encode(prompt, response)
        return ids

    @torch.no_grad()
    def __call__(self, prompts: Sequence[list[dict]], responses: Sequence[str],
                 prompt_ids: Sequence[Sequence[int]] | None = None,
                 response_ids: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        from ser.data import pad_batch
        from ser.rewards import sequence_rewards

        seqs = [self.encode(p, r, prompt_ids[i] if prompt_ids is not None else None,
                            response_ids[i] if response_ids is not None else None)
                for i, (p, r) in enumerate(zip(prompts, responses))]
        out = torch.zeros(len(seqs))
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        dev = self.device
        for s in range(0, len(order), self.batch_size):
            b = order[s: s + self.batch_size]
            batch = pad_batch([seqs[i] for i in b], self.tok.pad_token_id)
            r = sequence_rewards(self.model, batch["input_ids"].to(dev), batch["attention_mask"].to(dev)).float().cpu()
            out[torch.as_tensor(b)] = r
        return torch.sigmoid(out) if self.transform == "sigmoid" else out
