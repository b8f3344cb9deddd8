"""PPO step time: ser's PPO stage vs TRL 1.12's PPOTrainer, same policy, same batch, by phase.

The work (issue 5): SmolLM2-135M-Instruct as the policy (offline copy), a frozen copy as the
reference, a separate value model (TRL's only option; ser's ``ppo.value_model=separate``), and a
reward model **with the policy's tokenizer** (TRL scores the policy's token ids directly): a
SmolLM2 sequence-classification model whose score head is random (timing only; both sides load
the very same exported folder). One rollout batch of 8 prompts (HH-RLHF harmless prompts cut to
their last 96 tokens), responses of at most 24 new tokens at temperature 0.7, 2 PPO epochs over
one minibatch of 8 (so both take one AdamW step per epoch), fp32, 2 threads, no gradient
checkpointing, no logging of samples, no checkpoints.

A step is everything from one rollout batch to the next. Phases:

* ser: ``time_generate_s`` (sampling), ``time_reward_s`` (reward model), ``time_forward_s``
  (no-grad log-probs of the policy and the reference, values, GAE), ``time_update_s`` (the PPO
  epochs), from ``ppo_metrics.jsonl``.
* TRL: ``batch_generation`` (sampling, which also hands TRL the policy's logits, so it skips one
  forward that ser runs), the reward model's ``get_reward`` calls, and the rest (reference
  forward, values, and the updates), timed by wrapping TRL's own functions.

Step 1 of each side is warm-up and excluded; the prompts differ between the sides (each samples
its own batches from the same prompt set), so the mean prompt length is printed beside the time.

    python benchmarks/ppo_step.py               # 1 warm-up + 5 measured steps a side (~10 min here)
    OMP_NUM_THREADS=1 python benchmarks/ppo_step.py --quick   # smoke: tiny policy, 2 steps
"""
from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CONF, base_parser, check_line, machine_info, peak_rss_mb, ratio, section,  # noqa: E402
                    setup_env, table, write_results)

NAME = "ppo_step"
PHASES = ("generate", "reward", "forward", "update")


def parse_args():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=None, help="PPO steps a side incl. 1 warm-up (default 6; quick 2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--max-prompt-length", type=int, default=96)
    p.add_argument("--with-head", action="store_true", help="also time ser with its default value head")
    p.add_argument("--no-trl", action="store_true", help="skip TRL even when it is installed")
    return p.parse_args()


def compose_ppo(overrides):
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="ppo_main", overrides=list(overrides))
    with open_dict(cfg):
        cfg.output_dir = "/tmp/ser-bench-unused"
    return cfg


def work_overrides(args, steps: int, value_model: str) -> list[str]:
    return ["ppo=tiny" if args.quick else "ppo=smollm2", "data=hh_rlhf", "logger=none",
            "trainer.enable_progress_bar=false", f"ppo.steps={steps}", f"ppo.batch_size={args.batch_size}",
            f"ppo.minibatch_size={args.batch_size}", f"ppo.ppo_epochs={args.ppo_epochs}",
            f"ppo.max_prompt_length={args.max_prompt_length}", f"ppo.generation.max_new_tokens={args.max_new_tokens}",
            "ppo.generation.temperature=0.7", "ppo.generation.top_p=1.0", "ppo.eval_size=0", "ppo.save_policy=false",
            "ppo.checkpoint_every=0", "ppo.log_samples_every=0", f"ppo.value_model={value_model}",
            "ppo.reward_batch_size=8", f"seed={args.seed}"]


def same_tokenizer_rm(cfg, folder: Path) -> Path:
    """A sequence-classification model on the policy's backbone and tokenizer, exported as ser does
    (``build_hf_model`` takes the policy config as it is: hub id or offline copy, or random init)."""
    import torch

    from ser.model import build_hf_model, export_reward_model
    from ser.ppo import load_policy_tokenizer

    tok = load_policy_tokenizer(cfg.ppo.policy)
    torch.manual_seed(0)
    net = build_hf_model(cfg.ppo.policy, tok)
    return export_reward_model(net, tok, folder, {"use_chat_template": True, "max_length": 512})


def run_ser(args, steps: int, value_model: str, rm: Path, prompts, out: Path) -> dict:
    from ser.ppo import run_ppo

    cfg = compose_ppo(work_overrides(args, steps, value_model))
    res = run_ppo(cfg, str(rm), prompts, [], out_dir=out)
    rows = [json.loads(x) for x in (out / "ppo_metrics.jsonl").read_text().splitlines() if x.strip()]
    return {"rows": rows, "fast_path": res["fast_path"]}


def summarize_ser(rows, warmup: int = 1) -> dict:
    m = rows[warmup:]
    out = {"steps": len(m), "s_per_step": sum(r["time_step_s"] for r in m) / len(m),
           "response_len": sum(r["response_length"] for r in m) / len(m)}
    for k in PHASES:
        out[f"{k}_s"] = sum(r[f"time_{k}_s"] for r in m) / len(m)
    return out


def run_trl(args, steps: int, rm: Path, prompt_ids, tmp: Path) -> dict:
    """TRL's PPOTrainer on the same policy, reference, reward model and batch; per-step phases."""
    import torch
    import trl.experimental.ppo.ppo_trainer as pt
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from ser.ppo import build_policy, load_policy_tokenizer

    cfg = compose_ppo(work_overrides(args, steps, "separate"))
    pc = cfg.ppo.policy
    tok = load_policy_tokenizer(pc)
    tok.padding_side = "left"
    torch.manual_seed(args.seed)
    policy = build_policy(pc, tok)
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    reward = AutoModelForSequenceClassification.from_pretrained(rm, num_labels=1).eval()
    value = AutoModelForSequenceClassification.from_pretrained(rm, num_labels=1)
    for m in (reward, value):
        m.config.pad_token_id = tok.pad_token_id
    ds = Dataset.from_dict({"input_ids": prompt_ids})
    p = cfg.ppo
    conf = PPOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        num_mini_batches=1, num_ppo_epochs=args.ppo_epochs, response_length=args.max_new_tokens, temperature=0.7,
        learning_rate=p.lr, total_episodes=steps * args.batch_size, kl_coef=p.kl.init_coef, cliprange=p.cliprange,
        vf_coef=p.vf_coef, cliprange_value=p.cliprange_value, gamma=p.gamma, lam=p.lam, whiten_rewards=True,
        stop_token="eos", missing_eos_penalty=None, local_rollout_forward_batch_size=args.batch_size,
        num_sample_generations=0, report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, bf16=False,
        fp16=False, gradient_checkpointing=False, seed=args.seed, dataloader_num_workers=0, max_grad_norm=1.0,
        disable_tqdm=True)
    phase = {"generate": 0.0, "reward": 0.0}
    marks: list[dict] = []

    def timed(fn, key, only=None):
        def wrapper(*a, **kw):
            if only is not None and a[0] is not only:
                return fn(*a, **kw)
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phase[key] += time.perf_counter() - t
        return wrapper

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            marks.append({"t": time.perf_counter(), **phase})
            return control

    orig = (pt.batch_generation, pt.get_reward)
    pt.batch_generation = timed(orig[0], "generate")
    pt.get_reward = timed(orig[1], "reward", only=reward)
    try:
        trainer = PPOTrainer(args=conf, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                             value_model=value, train_dataset=ds, callbacks=[Clock()])
        t0 = time.perf_counter()
        marks.append({"t": t0, **phase})
        trainer.train()
    finally:
        pt.batch_generation, pt.get_reward = orig
    return {"marks": marks, "gradient_checkpointing": bool(conf.gradient_checkpointing)}


def summarize_trl(marks, warmup: int = 1) -> dict:
    steps = [{k: b[k] - a[k] for k in ("t", "generate", "reward")} for a, b in zip(marks, marks[1:])][warmup:]
    n = len(steps)
    out = {"steps": n, "s_per_step": sum(s["t"] for s in steps) / n,
           "generate_s": sum(s["generate"] for s in steps) / n, "reward_s": sum(s["reward"] for s in steps) / n}
    out["forward_s"] = None  # TRL's reference / value forwards and updates are not separable from outside
    out["update_s"] = out["s_per_step"] - out["generate_s"] - out["reward_s"]
    return out


def trl_available() -> str | None:
    try:
        import trl

        return trl.__version__
    except ImportError:
        return None


def main() -> None:
    args = parse_args()
    setup_env(args.threads)
    import torch

    steps = args.steps if args.steps is not None else (2 if args.quick else 6)
    info = machine_info(args.threads)
    print(f"{NAME}: policy={'tiny' if args.quick else 'SmolLM2-135M-Instruct'} batch={args.batch_size} "
          f"ppo_epochs={args.ppo_epochs} max_new_tokens={args.max_new_tokens} fp32 threads={torch.get_num_threads()} "
          f"steps={steps} (1 warm-up){' (quick)' if args.quick else ''}")
    from ser.ppo import PromptEncoder, load_policy_tokenizer, prompts_from_config

    cfg = compose_ppo(work_overrides(args, steps, "separate"))
    with section("prompts and the same-tokenizer reward model (not timed)"):
        train_prompts, _ = prompts_from_config(cfg)
        tok = load_policy_tokenizer(cfg.ppo.policy)
        enc = PromptEncoder(tok, args.max_prompt_length, cfg.ppo.policy.get("use_chat_template", True),
                            cfg.ppo.policy.get("template"))
        prompt_ids = [enc(m) for m in train_prompts]
        print(f"   {len(prompt_ids)} prompts, mean {sum(map(len, prompt_ids)) / len(prompt_ids):.0f} tokens")
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rm = same_tokenizer_rm(cfg, tmp / "rm")
        variants = [("separate", "ser (value model)")] + ([("head", "ser (value head)")] if args.with_head else [])
        for vm, label in variants:
            with section(f"{label}: {steps} PPO steps"):
                r = run_ser(args, steps, vm, rm, train_prompts, tmp / f"ser_{vm}")
                print(f"   reward path: {'fast (shared tokenizer)' if r['fast_path'] else 'decode + re-encode'}")
                runs[label] = {"variant": label, **summarize_ser(r["rows"])}
        version = None if args.no_trl else trl_available()
        if version:
            with section(f"TRL {version} PPOTrainer: {steps} PPO steps"):
                t = run_trl(args, steps, rm, prompt_ids, tmp)
                runs["trl"] = {"variant": f"TRL {version} PPOTrainer", **summarize_trl(t["marks"])}
        else:
            print("TRL skipped: " + ("--no-trl" if args.no_trl else "install it with: pip install 'ser[bench]' (trl==1.12.0)"))
    if "trl" in runs:
        for row in runs.values():
            row["x_trl_speed"] = ratio(runs["trl"]["s_per_step"], row["s_per_step"])
    cols = ["variant", "steps", "s_per_step", "generate_s", "reward_s", "forward_s", "update_s", "response_len"] + (
        ["x_trl_speed"] if "trl" in runs else [])
    table(runs.values(), cols, f"Seconds per PPO step (mean of steps 2..{steps}); x_trl_speed = TRL s/step / this s/step")
    checks = []
    if "trl" in runs:
        print("\nTarget: no slower than TRL on the same work")
        checks.append(check_line("ser (value model) speed vs TRL PPOTrainer", runs["ser (value model)"]["x_trl_speed"], 1.0))
    write_results(NAME, {"machine": info, "args": vars(args), "runs": runs, "checks": checks,
                         "peak_rss_mb": peak_rss_mb()}, args.quick, args.out)


if __name__ == "__main__":
    main()
