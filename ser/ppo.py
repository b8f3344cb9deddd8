"""Step 4 of SER (Eq. 6): PPO of a policy LLM driven by the (evolved) reward model.

Pieces, from the bottom up:

- :class:`RewardScorer`: scores ``(prompt, response)`` with any exported SER reward model or Hugging
  Face sequence-classification model. Responses are decoded and re-encoded with the reward model's
  own tokenizer and formatting (``ser_reward.json``: template, chat template, max length), so the
  policy and the reward model may use different tokenizers (CPU default: SmolLM2 policy, MiniLM
  reward model). When both share one tokenizer and the reward model formats with the same chat
  template, the fast path scores the policy's own token ids (no decode / re-encode).
- :func:`encode_prompts`, :func:`generate`, :func:`response_forward`: left-padded prompts,
  sampling (temperature / top-p / maximum response length), per-token log-probabilities on the
  response tokens only (the response mask stops at the first eos).
- :class:`PPOModule`: a LightningModule with manual optimisation; one ``training_step`` is one
  rollout batch followed by ``ppo_epochs`` passes over minibatches (clipped surrogate, clipped value
  loss, per-token KL penalty to a frozen reference with a fixed or adaptive coefficient, GAE,
  reward and advantage whitening). The value is a linear head on the policy's last hidden state
  (``value_model=head``) or on a separate backbone (``value_model=separate``). With LoRA the
  reference is the same model with its adapters disabled (no copy).
- :func:`run_ppo`: what the SER run calls after its loop (and ``python -m ser.ppo`` for a follow-up
  job that takes an exported reward-model folder).
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from ser import rl
from ser.checkpoint import AtomicCheckpointIO, last_checkpoint
from ser.errors import PPOConfigError
from ser.precision import resolve_precision
from ser.progress import Progress, ProgressLines

log = logging.getLogger("ser.ppo")

DEFAULT_TEMPLATE = "Question: {q}\n\nAnswer: {a}"


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Policy: loading, prompt encoding, sampling, per-token log-probs
# --------------------------------------------------------------------------------------------

def load_policy_tokenizer(pcfg: DictConfig):
    from ser.model import load_tokenizer

    tok = load_tokenizer(pcfg)
    if tok.eos_token_id is None:
        raise PPOConfigError(f"ppo.policy '{pcfg.name_or_path}': its tokenizer has no eos token (a causal LM policy needs one)")
    return tok


def build_policy(pcfg: DictConfig, tok, causal: bool = True):
    """``AutoModelForCausalLM`` (or the bare ``AutoModel`` backbone with ``causal=False``)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from ser.model import resolve_pretrained

    cls = AutoModelForCausalLM if causal else AutoModel
    dtype = getattr(torch, pcfg.get("dtype", "float32"))
    if pcfg.get("random_init"):
        conf = AutoConfig.for_model(**OmegaConf.to_container(pcfg.config, resolve=True), vocab_size=len(tok),
                                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                    bos_token_id=tok.bos_token_id)
        torch.manual_seed(int(pcfg.get("init_seed", 0)))
        model = cls.from_config(conf, dtype=dtype)
    else:
        model = cls.from_pretrained(resolve_pretrained(pcfg), dtype=dtype)
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


# --------------------------------------------------------------------------------------------
# Reward model scoring of policy outputs
# --------------------------------------------------------------------------------------------

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
        from ser.model import sequence_rewards

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


# --------------------------------------------------------------------------------------------
# Config validation
# --------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------
# The LightningModule
# --------------------------------------------------------------------------------------------

class PromptBatches(torch.utils.data.Sampler):
    """Batches ``start .. start + count - 1`` of one fixed sequence of ``steps`` prompt-index batches,
    reshuffled at every pass over the prompts (PPO runs one batch per epoch, so that a resumed run
    continues the same sequence)."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, start: int = 0, count: int | None = None):
        self.n, self.bs, self.steps, self.seed = n, batch_size, steps, seed
        self.start = start
        self.count = steps - start if count is None else count

    def __iter__(self):
        rng = random.Random(self.seed)
        order: list[int] = []
        for step in range(self.start + self.count):
            batch = []
            while len(batch) < self.bs:
                if not order:
                    order = list(range(self.n))
                    rng.shuffle(order)
                batch.append(order.pop())
            if step >= self.start:
                yield batch

    def __len__(self) -> int:
        return self.count


SAMPLE_COLUMNS = ["step", "prompt", "response", "reward"]  # samples.csv and the logger's sample table


class PPOModule(pl.LightningModule):
    """PPO for a causal LM; ``training_step`` = one rollout batch + ``ppo_epochs`` minibatch passes.

    ``scorer(prompts, texts, prompt_ids, response_ids) -> Tensor[B]`` gives the sequence reward.
    """

    def __init__(self, pcfg: DictConfig, policy, tokenizer, scorer: Callable, ref_policy=None,
                 value_backbone=None, prompts: Sequence[list[dict]] = (), eval_prompts: Sequence[list[dict]] = (),
                 out_dir: str | Path | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = pcfg
        self.policy = policy
        self.tok = tokenizer
        self.encoder = PromptEncoder(tokenizer, pcfg.max_prompt_length, pcfg.policy.get("use_chat_template", True),
                                     pcfg.policy.get("template", DEFAULT_TEMPLATE))
        mcfg = (value_backbone or policy).config
        hidden = mcfg.get_text_config().hidden_size if hasattr(mcfg, "get_text_config") else mcfg.hidden_size
        self.value_backbone = value_backbone
        self.value_head = nn.Linear(hidden, 1)
        nn.init.normal_(self.value_head.weight, std=1.0 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.value_head.bias)
        self.lora = hasattr(policy, "peft_config") and hasattr(policy, "disable_adapter")
        for m in (policy, value_backbone):
            if m is not None:
                disable_dropout(m)
        # not submodules: kept out of the optimizer and of checkpoints, moved by hand
        object.__setattr__(self, "ref_policy", ref_policy)
        object.__setattr__(self, "scorer", scorer)
        if ref_policy is None and not self.lora:
            raise ValueError("a reference policy is needed (or a LoRA policy whose adapters can be disabled)")
        kl = pcfg.kl
        self.kl_ctl = (rl.AdaptiveKLController(kl.init_coef, kl.target, kl.horizon) if kl.adaptive
                       else rl.FixedKLController(kl.init_coef))
        self.prompts = list(prompts)
        self.eval_prompts = list(eval_prompts)
        self.out_dir = Path(out_dir) if out_dir else None
        self.history: list[dict] = []
        self.samples: list[dict] = []
        self.eval_before: dict | None = None
        self.eval_after: dict | None = None
        self._prompt_cache: dict[str, list[int]] = {}

    # -- helpers ------------------------------------------------------------------------------
    def _prompt_ids(self, messages, full: bool = False) -> list[int]:
        key = ("F" if full else "T") + _prompt_key(messages)
        if key not in self._prompt_cache:
            self._prompt_cache[key] = self.encoder.full_ids(messages) if full else self.encoder(messages)
        return self._prompt_cache[key]

    def on_fit_start(self) -> None:
        self._set_modes()  # from_pretrained hands models back in eval mode
        if self.ref_policy is not None:
            self.ref_policy.to(self.device)
        if hasattr(self.scorer, "to"):
            self.scorer.to(self.device)

    def _set_modes(self) -> None:
        # dropout is off (disable_dropout at start); train mode keeps gradient checkpointing active
        self.policy.train()
        if self.value_backbone is not None:
            self.value_backbone.train()

    def ref_logprobs(self, query, qmask, resp, rmask) -> torch.Tensor:
        t = self.cfg.generation.temperature
        if self.ref_policy is not None:
            return response_forward(self.ref_policy, query, qmask, resp, rmask, t)[0]
        with self.policy.disable_adapter():
            return response_forward(self.policy, query, qmask, resp, rmask, t)[0]

    @torch.no_grad()
    def sample(self, prompts: Sequence[list[dict]], do_sample: bool = True) -> dict:
        g = self.cfg.generation
        pids = [self._prompt_ids(m) for m in prompts]
        query, qmask = left_pad(pids, self.tok.pad_token_id)
        query, qmask = query.to(self.device), qmask.to(self.device)
        resp, rmask = generate(self.policy, query, qmask, self.tok, g.max_new_tokens, g.temperature, g.top_p, do_sample)
        resp_ids = [r[m.bool()].tolist() for r, m in zip(resp.cpu(), rmask.cpu())]
        texts = [self.tok.decode([t for t in ids if t != self.tok.eos_token_id], skip_special_tokens=True).strip()
                 for ids in resp_ids]
        t0 = time.perf_counter()
        scores = self.scorer(list(prompts), texts, [self._prompt_ids(m, full=True) for m in prompts], resp_ids)
        self._reward_s = time.perf_counter() - t0
        return {"query": query, "qmask": qmask, "resp": resp, "rmask": rmask, "texts": texts, "resp_ids": resp_ids,
                "scores": torch.as_tensor(scores, dtype=torch.float32).reshape(-1).to(self.device)}

    @torch.no_grad()
    def evaluate_reward(self, prompts: Sequence[list[dict]]) -> dict:
        """Mean training-RM reward and KL to the reference on ``prompts`` (sampled as in training)."""
        if not prompts:
            return {}
        self._set_modes()
        bs = self.cfg.get("eval_batch_size", self.cfg.batch_size)
        scores, kls, lens = [], [], []
        for s in range(0, len(prompts), bs):
            ro = self.sample(prompts[s: s + bs])
            lp = response_forward(self.policy, ro["query"], ro["qmask"], ro["resp"], ro["rmask"], self.cfg.generation.temperature)[0]
            ref = self.ref_logprobs(ro["query"], ro["qmask"], ro["resp"], ro["rmask"])
            kls.append(((lp - ref) * ro["rmask"]).sum(1).cpu())
            scores.append(ro["scores"].cpu())
            lens.append(ro["rmask"].sum(1).float().cpu())
        return {"reward": float(torch.cat(scores).mean()), "kl": float(torch.cat(kls).mean()),
                "response_length": float(torch.cat(lens).mean()), "n": len(prompts)}

    # -- Lightning hooks ---------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.cfg.lr, eps=self.cfg.get("adam_eps", 1e-5),
                                 weight_decay=self.cfg.get("weight_decay", 0.0))

    def train_dataloader(self):
        # one rollout batch per epoch (reloaded every epoch): checkpoints fall between rollout steps
        return torch.utils.data.DataLoader(
            self.prompts, batch_sampler=PromptBatches(len(self.prompts), self.cfg.batch_size, self.cfg.steps,
                                                      int(self.cfg.get("seed", 0) or 0), start=self.current_epoch,
                                                      count=1),
            collate_fn=_identity)

    # -- checkpointed state (weights and optimizer: Lightning) -----------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ppo_state"] = {"history": self.history, "samples": self.samples, "eval_before": self.eval_before,
                                   "kl_ctl": dict(vars(self.kl_ctl))}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        st = checkpoint["ppo_state"]
        self.history, self.samples, self.eval_before = st["history"], st["samples"], st["eval_before"]
        vars(self.kl_ctl).update(st["kl_ctl"])
        if self.out_dir is not None:  # drop rows of steps after the checkpoint: they run again
            (self.out_dir / "ppo_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
            if (self.out_dir / "samples.csv").exists():
                with open(self.out_dir / "samples.csv", "w", newline="") as f:
                    csv.writer(f).writerows([SAMPLE_COLUMNS, *self.samples])

    def on_train_start(self) -> None:
        n = self.cfg.get("eval_size", 0)
        if n and self.eval_prompts and self.eval_before is None:
            torch.manual_seed(int(self.cfg.get("seed", 0) or 0) + 12345)
            self.eval_before = self.evaluate_reward(self.eval_prompts[:n])

    def on_train_end(self) -> None:
        n = self.cfg.get("eval_size", 0)
        if n and self.eval_prompts:
            torch.manual_seed(int(self.cfg.get("seed", 0) or 0) + 12345)
            self.eval_after = self.evaluate_reward(self.eval_prompts[:n])

    def training_step(self, batch, batch_idx):
        c = self.cfg
        t0 = time.perf_counter()
        step = len(self.history)  # 0-based rollout step
        # sampling and minibatch order depend on (seed, step) only: a resumed run draws the same
        torch.manual_seed(int(c.get("seed", 0) or 0) * 1000003 + step)
        self._set_modes()
        ro = self.sample(batch)
        t_gen = time.perf_counter() - t0
        query, qmask, resp, rmask = ro["query"], ro["qmask"], ro["resp"], ro["rmask"]
        B = resp.shape[0]
        raw = ro["scores"]
        score = raw
        if c.whiten_rewards:
            score = rl.whiten_scores(raw)  # unchanged for a batch of one
        temp = c.generation.temperature
        with torch.no_grad():
            old_logp, old_values, ent = response_forward(self.policy, query, qmask, resp, rmask, temp, self.value_head,
                                                         self.value_backbone, entropy=True)
            ref_logp = self.ref_logprobs(query, qmask, resp, rmask)
            rewards, kl = rl.token_rewards(score, old_logp, ref_logp, rmask, self.kl_ctl.value, c.kl.estimator)
            adv, returns = rl.gae(rewards, old_values, rmask, c.gamma, c.lam)
            if c.get("whiten_advantages", True):
                adv = rl.masked_whiten(adv, rmask) * rmask
        t_forward = time.perf_counter() - t0 - t_gen
        t_reward = getattr(self, "_reward_s", 0.0)
        opt = self.optimizers()
        stats = {k: [] for k in ("policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl")}
        gen = torch.Generator().manual_seed(int(c.get("seed", 0) or 0) * 100003 + step)
        for _ in range(c.ppo_epochs):
            perm = torch.randperm(B, generator=gen)
            for s in range(0, B, c.minibatch_size):
                mb = perm[s: s + c.minibatch_size].to(self.device)
                # trim to the longest response of the minibatch
                w = int(rmask[mb].sum(1).max().item()) or 1
                m = rmask[mb][:, :w]
                logp, values, mb_ent = response_forward(self.policy, query[mb], qmask[mb], resp[mb][:, :w], m, temp,
                                                        self.value_head, self.value_backbone,
                                                        entropy=c.get("ent_coef", 0.0) > 0)
                pg, clipfrac, approx_kl = rl.policy_loss(logp, old_logp[mb][:, :w], adv[mb][:, :w], m, c.cliprange)
                vl, vclip = rl.value_loss(values, old_values[mb][:, :w], returns[mb][:, :w], m, c.cliprange_value)
                loss = pg + c.vf_coef * vl
                if mb_ent is not None:
                    loss = loss - c.ent_coef * rl.masked_mean(mb_ent, m)
                opt.zero_grad()
                self.manual_backward(loss)
                if c.get("max_grad_norm"):
                    self.clip_gradients(opt, gradient_clip_val=c.max_grad_norm, gradient_clip_algorithm="norm")
                opt.step()
                for k, v in zip(stats, (pg, vl, clipfrac, vclip, approx_kl)):
                    stats[k].append(float(v.detach()))
        mean_kl = float(kl.sum(1).mean())
        kl_coef = self.kl_ctl.value
        self.kl_ctl.update(mean_kl, B)
        lengths = rmask.sum(1).float()
        row = {
            "step": step + 1,
            "reward": float(raw.mean()), "reward_std": float(raw.std()) if B > 1 else 0.0,
            "kl": mean_kl, "kl_coef": kl_coef,
            "entropy": float(rl.masked_mean(ent, rmask)),
            "response_length": float(lengths.mean()),
            "non_score_reward": float((-kl_coef * kl).sum(1).mean()),
            **{k: sum(v) / max(1, len(v)) for k, v in stats.items()},
            # phases: sampling, reward-model scoring, no-grad forwards (log-probs, reference, values, GAE),
            # the PPO minibatch updates
            "time_generate_s": round(t_gen - t_reward, 3), "time_reward_s": round(t_reward, 3),
            "time_forward_s": round(t_forward, 3), "time_update_s": round(time.perf_counter() - t0 - t_gen - t_forward, 3),
            "time_step_s": round(time.perf_counter() - t0, 3),
        }
        self.history.append(row)
        self.log_dict({f"ppo/{k}": float(v) for k, v in row.items()}, on_step=True, on_epoch=False, batch_size=B,
                      prog_bar=False)
        self.log("reward", row["reward"], prog_bar=True, on_step=True, on_epoch=False, logger=False, batch_size=B)
        every = int(c.get("log_samples_every", 0) or 0)
        if every and (row["step"] == 1 or row["step"] % every == 0 or row["step"] == c.steps):
            self._log_samples(row["step"], batch, ro["texts"], raw)
        if self.out_dir is not None:
            with open(self.out_dir / "ppo_metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def _log_samples(self, step: int, prompts, texts, scores) -> None:
        from ser.data import render_plain_prompt

        n = int(self.cfg.get("n_samples", 4))
        rows = [[step, render_plain_prompt(p)[-300:], t, round(float(s), 4)]
                for p, t, s in list(zip(prompts, texts, scores.tolist()))[:n]]
        self.samples.extend(rows)
        cols = SAMPLE_COLUMNS
        logger = self.logger
        if logger is not None and hasattr(logger, "log_table"):
            try:
                logger.log_table(key="ppo/samples", columns=cols, data=rows)
                return
            except Exception as e:  # noqa: BLE001 - never stop training for a table
                log.warning("could not log the sample table to %s: %s", type(logger).__name__, e)
        if self.out_dir is not None:
            path = self.out_dir / "samples.csv"
            new = not path.exists()
            with open(path, "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(cols)
                w.writerows(rows)


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------

def save_policy(policy, tok, path: Path, value_head: nn.Module | None = None, meta: dict | None = None) -> Path:
    """A plain Hugging Face folder (LoRA merged), loadable with ``AutoModelForCausalLM``."""
    from ser.model import save_merged

    def extra(d: Path) -> None:
        if value_head is not None:
            torch.save(value_head.state_dict(), d / "value_head.pt")
        (d / "ser_policy.json").write_text(json.dumps(meta or {}, indent=2))
    return save_merged(policy, tok, path, extra)


def policy_source(pcfg: DictConfig) -> dict:
    """How to rebuild the starting policy: a folder or hub id, or the random-init config."""
    from ser.model import resolve_pretrained

    if pcfg.get("random_init"):
        return {"random_init": OmegaConf.to_container(pcfg, resolve=True)}
    return {"name_or_path": resolve_pretrained(pcfg)}


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------

def _make_logger(cfg: DictConfig, out: Path):
    lc = cfg.get("logger")
    if not lc or "_target_" not in lc:
        return False
    from hydra.utils import instantiate

    kw = {"save_dir": str(out)}
    if "wandb" in lc._target_.lower():
        kw["name"] = f"{Path(str(cfg.get('output_dir', out))).name}/ppo"
        kw["job_type"] = "ppo"
    return instantiate(lc, **kw)


def run_ppo(cfg: DictConfig, reward_model_path: str, train_prompts: Sequence[list[dict]],
            eval_prompts: Sequence[list[dict]], out_dir: str | Path | None = None, scorer: Callable | None = None,
            progress: Progress | None = None) -> dict:
    """Train the policy of ``cfg.ppo`` against ``reward_model_path``; results in ``<output_dir>/ppo``.

    ``cfg`` is the composed run config (``ppo``, ``seed``, ``logger``, ``output_dir``, optionally
    ``trainer.accelerator``). Returns the stage's summary (also written to ``ppo/ppo.json``); a
    finished stage is not run again (its summary is returned).
    ``scorer`` replaces the reward model (tests: any ``f(prompts, texts, prompt_ids, response_ids)``).
    """
    p = cfg.ppo  # validated by the entry point (ser.config.validate / validate_ppo)
    out = Path(out_dir) if out_dir else Path(cfg.output_dir) / "ppo"
    done = out / "ppo.json"
    if done.exists():
        log.info("PPO stage already finished: %s", done)
        return json.loads(done.read_text())
    train_prompts, eval_prompts = list(train_prompts), list(eval_prompts)
    if not train_prompts:
        raise PPOConfigError("no training prompts for PPO (the data module's labeled + pool splits are empty)")
    held = {_prompt_key(x) for x in eval_prompts}
    if any(_prompt_key(x) in held for x in train_prompts):
        raise ValueError("held-out (eval) prompts found among the PPO training prompts")
    rm_path = None
    if scorer is None:
        if not reward_model_path:
            raise PPOConfigError("no reward model for PPO: pass ppo.reward_model=PATH (or run PPO inside a SER run)")
        rm_path = resolve_reward_model_path(reward_model_path)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "checkpoints" / "last.ckpt"
    resume = last if last.exists() else None
    if resume is None:
        for f in ("ppo_metrics.jsonl", "samples.csv"):
            (out / f).unlink(missing_ok=True)
    seed = int(cfg.get("seed", 0) or 0)
    pl.seed_everything(seed, workers=True, verbose=False)
    t_start = time.perf_counter()
    tok = load_policy_tokenizer(p.policy)
    policy = build_policy(p.policy, tok)
    lora = p.policy.get("lora")
    use_lora = bool(lora and lora.get("r", 0) > 0)
    ref = None if use_lora else copy.deepcopy(policy).eval().requires_grad_(False)
    policy = apply_lora(policy, lora)
    value_backbone = build_policy(p.policy, tok, causal=False) if p.value_model == "separate" else None
    enc_chat = bool(p.policy.get("use_chat_template", True) and getattr(tok, "chat_template", None))
    if scorer is None:
        scorer = RewardScorer(rm_path, policy_tokenizer=tok, policy_chat=enc_chat, batch_size=p.reward_batch_size,
                              transform=p.reward_transform, dtype=p.get("reward_dtype", "float32"))
        print(f"[ppo] reward model {rm_path} ({'fast path: shared tokenizer' if scorer.fast else 'decode + re-encode'})",
              flush=True)
    save_prompts(out / "eval_prompts.jsonl", eval_prompts)
    if p.policy.get("random_init"):  # the starting policy cannot be rebuilt from a hub id: keep it
        save_policy(ref if ref is not None else policy, tok, out / "policy_init", meta={"source": "random_init"})
        source = {"name_or_path": str(out / "policy_init")}
    else:
        source = policy_source(p.policy)
    module = PPOModule(p, policy, tok, scorer, ref_policy=ref, value_backbone=value_backbone, prompts=train_prompts,
                       eval_prompts=eval_prompts, out_dir=out)
    t_setup = time.perf_counter() - t_start
    tc = cfg.get("trainer") or {}
    every = int(p.get("checkpoint_every", 0) or 0)
    callbacks = [last_checkpoint(out / "checkpoints", every)] if every else []
    if progress is not None:
        rollouts = lambda t: len(module.history)  # noqa: E731 - PPO steps = rollout batches
        callbacks.append(ProgressLines(progress, "ppo", label=lambda t: "ppo", position=lambda t: (rollouts(t), p.steps),
                                       steps_done=rollouts))
        progress.eta.plan("ppo", p.steps)
    accelerator = p.get("accelerator") or tc.get("accelerator", "auto")
    precision = resolve_precision(p.get("precision", "32-true"), accelerator)
    print(f"[ppo] {precision.line()}", flush=True)
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, max_epochs=p.steps,
        precision=precision.precision, logger=_make_logger(cfg, out), enable_checkpointing=bool(every),
        callbacks=callbacks, plugins=[AtomicCheckpointIO()], reload_dataloaders_every_n_epochs=1,
        enable_progress_bar=bool(tc.get("enable_progress_bar", True)) and not (progress and progress.enabled),
        enable_model_summary=False,
        log_every_n_steps=1, num_sanity_val_steps=0, default_root_dir=str(out))
    if resume is not None:
        print(f"[ppo] resuming from {resume}", flush=True)
    t0 = time.perf_counter()
    trainer.fit(module, ckpt_path=str(resume) if resume else None)
    t_fit = time.perf_counter() - t0
    hist = module.history
    summary = {
        "policy_start": source,
        "reward_model": rm_path or "custom scorer",
        "fast_path": bool(getattr(scorer, "fast", False)),
        "steps": len(hist),
        "batch_size": p.batch_size,
        "reward_first": hist[0]["reward"] if hist else None,
        "reward_last": hist[-1]["reward"] if hist else None,
        "reward_first_quarter": _mean([h["reward"] for h in hist[: max(1, len(hist) // 4)]]),
        "reward_last_quarter": _mean([h["reward"] for h in hist[-max(1, len(hist) // 4):]]),
        "kl_last": hist[-1]["kl"] if hist else None,
        "kl_coef_last": module.kl_ctl.value,
        "eval_before": module.eval_before,
        "eval_after": module.eval_after,
        "n_train_prompts": len(train_prompts),
        "n_eval_prompts": len(eval_prompts),
        "time_per_step_s": round(_mean([h["time_step_s"] for h in hist]) or 0.0, 2),
        "time_per_step_phases_s": {k: round(_mean([h.get(f"time_{k}_s") for h in hist]) or 0.0, 2)
                                   for k in ("generate", "reward", "forward", "update")},
        "timings": {"setup_s": round(t_setup, 2), "fit_s": round(t_fit, 2)},
        "config": OmegaConf.to_container(p, resolve=True),
    }
    if trainer.logger and (module.eval_before or module.eval_after):
        m = {f"ppo/eval_{k}_{w}": v for w, d in (("before", module.eval_before), ("after", module.eval_after)) if d
             for k, v in d.items()}
        trainer.logger.log_metrics(m, step=trainer.global_step)
        trainer.logger.save()
    if p.get("save_policy", True):
        summary["policy"] = str(save_policy(module.policy, tok, out / "policy", module.value_head, meta={
            "start": source, "reward_model": summary["reward_model"], "steps": len(hist),
            "generation": OmegaConf.to_container(p.generation, resolve=True),
            "max_prompt_length": p.max_prompt_length, "use_chat_template": p.policy.get("use_chat_template", True),
            "template": p.policy.get("template", DEFAULT_TEMPLATE)}))
    summary["timings"]["total_s"] = round(time.perf_counter() - t_start, 2)
    tmp = done.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, done)
    if last.exists():  # a finished stage is never run again: its resume point is only disk (policy + optimizer)
        last.unlink()
    ea, eb = module.eval_after or {}, module.eval_before or {}
    print(f"[ppo] {len(hist)} steps, {summary['time_per_step_s']} s/step; train reward {summary['reward_first_quarter']:.4f} "
          f"(first quarter) -> {summary['reward_last_quarter']:.4f} (last quarter)"
          + (f"; held-out reward {eb.get('reward', float('nan')):.4f} -> {ea.get('reward', float('nan')):.4f}, "
             f"KL {ea.get('kl', float('nan')):.3f}" if ea else "") + f"; policy: {summary.get('policy')}", flush=True)
    return summary


def _identity(batch):
    return batch


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def plot_rewards(metrics_jsonl: str | Path, png: str | Path, title: str = "PPO: mean reward per rollout batch") -> Path:
    """Reward (and KL) curve of a PPO run from its ``ppo_metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in Path(metrics_jsonl).read_text().splitlines() if x.strip()]
    steps = [r["step"] for r in rows]
    rew = [r["reward"] for r in rows]
    k = max(1, len(rew) // 5)
    smooth = [sum(rew[max(0, i - k + 1): i + 1]) / len(rew[max(0, i - k + 1): i + 1]) for i in range(len(rew))]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(steps, rew, "o-", alpha=0.45, label="batch mean")
    ax[0].plot(steps, smooth, "-", lw=2, label=f"running mean ({k})")
    ax[0].set_xlabel("PPO step (rollout batch)")
    ax[0].set_ylabel("reward (training RM)")
    ax[0].legend()
    ax[0].set_title(title, fontsize=9)
    ax[1].plot(steps, [r["kl"] for r in rows], "o-", color="C3")
    ax[1].set_xlabel("PPO step")
    ax[1].set_ylabel("KL to reference (per sequence)")
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return Path(png)


# --------------------------------------------------------------------------------------------
# python -m ser.ppo: a follow-up job on an exported reward model
# --------------------------------------------------------------------------------------------

def run_job(cfg: DictConfig) -> dict:
    """Prompts from the same data config and seed as the SER run, then :func:`run_ppo`."""
    if not cfg.ppo.get("enabled", True):
        raise PPOConfigError("ppo=none: pick a policy config, e.g. ppo=smollm2 (or ppo=tiny)")
    if not cfg.ppo.get("reward_model"):
        raise PPOConfigError("ppo.reward_model is not set: pass ppo.reward_model=PATH (an exported reward-model folder, "
                             "a SER run folder, or a hub sequence-classification model)")
    from ser.config import validate_ppo

    validate_ppo(cfg.ppo)
    rm = resolve_reward_model_path(cfg.ppo.reward_model)
    train, held_out = prompts_from_config(cfg)
    print(f"[ppo] prompts: {len(train)} to train on (labeled + pool), {len(held_out)} held out (test)", flush=True)
    prog = cfg.get("progress") or {}
    with Progress(prog.get("every_s", 30), prog.get("lines", "auto")) as progress:
        return run_ppo(cfg, rm, train, held_out, progress=progress)


def main() -> None:
    import hydra

    @hydra.main(config_path="../conf", config_name="ppo_main", version_base="1.3")
    def _main(cfg: DictConfig) -> float | None:
        from ser.config import run_reporting_errors

        return run_reporting_errors(run_job, cfg).get("reward_last_quarter")  # PPOConfigError is a ConfigError

    _main()


if __name__ == "__main__":
    import ser.train  # noqa: F401  registers the ${ser_dirname:...} resolver used by the run folder

    main()
