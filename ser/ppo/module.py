"""The PPO LightningModule: :class:`PPOModule` (manual optimisation; one ``training_step`` is one
rollout batch followed by ``ppo_epochs`` passes over minibatches: clipped surrogate, clipped value
loss, per-token KL penalty to a frozen reference with a fixed or adaptive coefficient, GAE, reward
and advantage whitening; the value is a linear head on the policy's last hidden state
(``value_model=head``) or on a separate backbone (``value_model=separate``); with LoRA the
reference is the same model with its adapters disabled, no copy), and :class:`PromptBatches`, the
sampler that gives it one prompt batch per epoch so that a resumed run continues the same sequence.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn as nn
from omegaconf import DictConfig

from ser import rl
from ser.ppo.policy import DEFAULT_TEMPLATE, PromptEncoder, disable_dropout, generate, left_pad, response_forward
from ser.ppo.prompts import _prompt_key

log = logging.getLogger("ser.ppo")


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


def _identity(batch):
    return batch
