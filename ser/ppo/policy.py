"""The policy LLM of the PPO stage: its tokenizer and model (:func:`load_policy_tokenizer`,
:func:`build_policy`, :func:`apply_lora`, :func:`disable_dropout`), prompt encoding
(:class:`PromptEncoder`: chat template or ``DEFAULT_TEMPLATE``; :func:`left_pad`), sampling
(:func:`generate`: temperature / top-p / maximum response length) and per-token
log-probabilities on the response tokens only (:func:`response_forward`; :func:`response_mask`
stops at the first eos).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from ser import rl
from ser.errors import PPOConfigError

DEFAULT_TEMPLATE = "Question: {q}\n\nAnswer: {a}"


def load_policy_tokenizer(pcfg: DictConfig):
    from ser.model import load_tokenizer

    tok = load_tokenizer(pcfg)
    if tok.eos_token_id is None:
        raise PPOConfigError(f"ppo.policy '{pcfg.name_or_path}': its tokenizer has no eos token (a causal LM policy needs one)")
    return tok


def build_policy(pcfg: DictConfig, tok, causal: bool = True):
    """``AutoModelForCausalLM`` (or the bare ``AutoModel`` backbone with ``causal=False``)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from ser.model import resolve_pretrained, revision_kwargs

    cls = AutoModelForCausalLM if causal else AutoModel
    dtype = getattr(torch, pcfg.get("dtype", "float32"))
    if pcfg.get("random_init"):
        conf = AutoConfig.for_model(**OmegaConf.to_container(pcfg.config, resolve=True), vocab_size=len(tok),
                                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                    bos_token_id=tok.bos_token_id)
        torch.manual_seed(int(pcfg.get("init_seed", 0)))
        model = cls.from_config(conf, dtype=dtype)
    else:
        src = resolve_pretrained(pcfg)
        model = cls.from_pretrained(src, dtype=dtype, **revision_kwargs(pcfg, src))
    model.config.pad_token_id = tok.pad_token_id
    if causal and getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if pcfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def disable_dropout(model) -> None:
    """Dropout off (as TRL's PPO does): old and new log-probs must come from the same function,
    while the model stays in train mode (so gradient checkpointing still works)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def apply_lora(model, lora: DictConfig | None):
    if not lora or lora.get("r", 0) <= 0:
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    target = OmegaConf.to_container(lora.target_modules) if lora.get("target_modules") else "all-linear"
    return get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=lora.r, lora_alpha=lora.alpha,
                                            lora_dropout=lora.dropout, target_modules=target))


class PromptEncoder:
    """Prompt messages -> the policy's token ids (chat template when it has one, else ``template``)."""

    def __init__(self, tok, max_prompt_length: int = 256, use_chat_template: bool = True,
                 template: str = DEFAULT_TEMPLATE):
        self.tok = tok
        self.max_prompt_length = int(max_prompt_length)
        self.chat = bool(use_chat_template and getattr(tok, "chat_template", None))
        self.template = template

    def text(self, messages: list[dict]) -> str:
        from ser.data import render_plain_prompt

        if self.chat:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        t = self.template
        return (t[: t.index("{a}")] if "{a}" in t else t).replace("{q}", render_plain_prompt(messages))

    def full_ids(self, messages: list[dict]) -> list[int]:
        return self.tok(self.text(messages), add_special_tokens=not self.chat)["input_ids"]

    def __call__(self, messages: list[dict]) -> list[int]:
        """Cut from the left to ``max_prompt_length`` (the end of a conversation matters most)."""
        ids = self.full_ids(messages)
        return ids[-self.max_prompt_length:] if len(ids) > self.max_prompt_length else ids


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def response_mask(resp: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on response tokens up to and including the first eos, 0 after it."""
    is_eos = (resp == eos_id).long()
    after_first = (is_eos.cumsum(1) - is_eos) > 0
    return (~after_first).long()


@torch.no_grad()
def generate(model, query: torch.Tensor, qmask: torch.Tensor, tok, max_new_tokens: int, temperature: float = 1.0,
             top_p: float = 1.0, do_sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample responses for left-padded prompts; returns ``(response_ids, response_mask)``.

    Tokens after the first eos are set to the pad id and masked out.
    """
    kw = dict(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=0) if do_sample else dict(do_sample=False)
    was_training = model.training
    model.eval()
    out = model.generate(input_ids=query, attention_mask=qmask, max_new_tokens=int(max_new_tokens),
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, use_cache=True, **kw)
    model.train(was_training)
    resp = out[:, query.shape[1]:]
    if resp.shape[1] == 0:
        resp = torch.full((query.shape[0], 1), tok.eos_token_id, dtype=torch.long, device=query.device)
    mask = response_mask(resp, tok.eos_token_id)
    return resp.masked_fill(mask == 0, tok.pad_token_id), mask


def response_forward(model, query, qmask, resp, rmask, temperature: float = 1.0, value_head: nn.Module | None = None,
                     value_backbone: nn.Module | None = None, entropy: bool = False):
    """Per-token log-probs of ``resp`` (and values, entropy) for ``[left-padded query | response]``.

    Position ``t`` of the result belongs to response token ``t``: its log-prob under the logits at
    the previous position (divided by ``temperature``, as sampled), and the value of the state
    before it. Returns ``(logprobs, values | None, entropy | None)``, each ``(B, R)``.
    """
    ids = torch.cat([query, resp], 1)
    attn = torch.cat([qmask, rmask], 1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    P, R = query.shape[1], resp.shape[1]
    want_hidden = value_head is not None and value_backbone is None
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False,
                output_hidden_states=want_hidden, logits_to_keep=R + 1)
    logits = out.logits[:, -(R + 1):-1].float() / float(temperature)
    logp = rl.logprobs_from_logits(logits, resp)
    ent = rl.entropy_from_logits(logits) if entropy else None
    values = None
    if value_head is not None:
        if value_backbone is None:
            hidden = out.hidden_states[-1]
        else:
            hidden = value_backbone(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).last_hidden_state
        h = hidden[:, P - 1: P + R - 1]
        values = value_head(h.to(value_head.weight.dtype)).squeeze(-1).float()
    return logp, values, ent
