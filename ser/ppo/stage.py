"""The PPO stage: :func:`run_ppo`, what the SER run calls after its loop (and ``python -m ser.ppo``
for a follow-up job, :mod:`ser.ppo.job`): it builds the policy, its reference, the value model and
the reward scorer, trains :class:`~ser.ppo.module.PPOModule` (resuming from
``ppo/checkpoints/last.ckpt``) and writes ``ppo/ppo.json``; with it, saving the trained policy
(:func:`save_policy`, :func:`policy_source`) and the stage's logger.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from ser.checkpoint import AtomicCheckpointIO, last_checkpoint
from ser.errors import PPOConfigError
from ser.ppo.module import PPOModule
from ser.ppo.policy import DEFAULT_TEMPLATE, apply_lora, build_policy, load_policy_tokenizer
from ser.ppo.prompts import _prompt_key, save_prompts
from ser.ppo.reward import RewardScorer, resolve_reward_model_path
from ser.precision import resolve_precision
from ser.progress import Progress, ProgressLines

log = logging.getLogger("ser.ppo")


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
    from ser.model import resolve_pretrained, revision_kwargs

    if pcfg.get("random_init"):
        return {"random_init": OmegaConf.to_container(pcfg, resolve=True)}
    src = resolve_pretrained(pcfg)
    return {"name_or_path": src, **revision_kwargs(pcfg, src)}


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


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None
