"""Downstream evaluation of policies (the paper's Fig. 4), judged by a reward model.

- :func:`evaluate_policy`: a trained policy against its starting policy on held-out prompts: win,
  tie and loss rates under a judge reward model (e.g. the full-data reward model), the mean judge
  reward of both, and the KL of the trained policy to the starting one (on its own samples).
- :func:`best_of_n`: the cheaper downstream use of a reward model: sample ``n`` responses, keep the
  one a given reward model prefers, and judge it against a single sample the same way.

The paper judges with GPT-4; here the judge is any reward model folder (no network needed).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import torch

from ser.ppo import (DEFAULT_TEMPLATE, PromptEncoder, RewardScorer, generate, left_pad, load_prompts,
                     response_forward)

log = logging.getLogger("ser.evaluate")
CONF = Path(__file__).resolve().parents[1] / "conf"


# --------------------------------------------------------------------------------------------
# Loading policies
# --------------------------------------------------------------------------------------------

def load_policy(source: str | dict, device: str | torch.device = "cpu"):
    """``(model, tokenizer, meta)`` from a saved policy folder, a hub id, a ``conf/ppo`` option name
    (``smollm2``, ``tiny``, ...) or a ``{"name_or_path"|"random_init": ...}`` record of ``ppo.json``."""
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ser.ppo import build_policy, load_policy_tokenizer

    if isinstance(source, dict):
        if "random_init" in source:
            pcfg = OmegaConf.create(source["random_init"])
            tok = load_policy_tokenizer(pcfg)
            return build_policy(pcfg, tok).to(device).eval(), tok, {}
        revision = {"revision": source["revision"]} if source.get("revision") else {}
        source = source["name_or_path"]
    else:
        revision = {}
    p = Path(str(source)).expanduser()
    if not p.is_dir() and (CONF / "ppo" / f"{source}.yaml").exists():
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="ppo_main", overrides=[f"ppo={source}"])
        tok = load_policy_tokenizer(cfg.ppo.policy)
        return build_policy(cfg.ppo.policy, tok).to(device).eval(), tok, {}
    src, revision = (str(p), {}) if p.is_dir() else (str(source), revision)
    tok = AutoTokenizer.from_pretrained(src, **revision)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **revision)
    model.config.pad_token_id = tok.pad_token_id
    meta_file = p / "ser_policy.json"
    meta = json.loads(meta_file.read_text()) if p.is_dir() and meta_file.exists() else {}
    return model.to(device).eval(), tok, meta


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_responses(model, tok, encoder: PromptEncoder, prompts: Sequence[list[dict]], max_new_tokens: int = 64,
                     temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 8, greedy: bool = False,
                     reference=None) -> dict:
    """One response per prompt; with ``reference``, the per-sequence KL ``sum_t log pi/pi_ref``
    on these samples (log-probs at ``temperature``, as sampled)."""
    dev = next(model.parameters()).device
    texts, resp_ids, prompt_ids, kls, lens = [], [], [], [], []
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s: s + batch_size]
        q, qm = left_pad([encoder(m) for m in chunk], tok.pad_token_id)
        q, qm = q.to(dev), qm.to(dev)
        r, rm = generate(model, q, qm, tok, max_new_tokens, temperature, top_p, do_sample=not greedy)
        ids = [x[m.bool()].tolist() for x, m in zip(r.cpu(), rm.cpu())]
        resp_ids += ids
        prompt_ids += [encoder.full_ids(m) for m in chunk]
        texts += [tok.decode([t for t in x if t != tok.eos_token_id], skip_special_tokens=True).strip() for x in ids]
        lens += rm.sum(1).tolist()
        if reference is not None:
            t = 1.0 if greedy else temperature
            lp = response_forward(model, q, qm, r, rm, t)[0]
            lr = response_forward(reference, q, qm, r, rm, t)[0]
            kls += ((lp - lr) * rm).sum(1).tolist()
    return {"texts": texts, "resp_ids": resp_ids, "prompt_ids": prompt_ids, "kl": kls, "length": lens}


def _mean(xs) -> float:
    xs = list(xs)
    return float(sum(xs) / len(xs)) if xs else float("nan")


def compare(a: torch.Tensor, b: torch.Tensor, tie_margin: float = 0.0) -> dict:
    """Win/tie/loss of ``a`` over ``b`` (per prompt): a tie when ``|a - b| <= tie_margin``."""
    d = (a - b).float()
    wins, losses = int((d > tie_margin).sum()), int((d < -tie_margin).sum())
    n = len(d)
    ties = n - wins - losses
    return {"n": n, "wins": wins, "ties": ties, "losses": losses, "win_rate": wins / n if n else float("nan"),
            "tie_rate": ties / n if n else float("nan"), "loss_rate": losses / n if n else float("nan"),
            "win_rate_ties_half": (wins + 0.5 * ties) / n if n else float("nan")}


# --------------------------------------------------------------------------------------------
# The two evaluations
# --------------------------------------------------------------------------------------------

def evaluate_policy(policy, base, judge, prompts: Sequence[list[dict]], tokenizer, max_new_tokens: int = 64,
                    temperature: float = 0.7, top_p: float = 1.0, max_prompt_length: int = 256,
                    use_chat_template: bool = True, template: str = DEFAULT_TEMPLATE, batch_size: int = 8,
                    seed: int = 0, tie_margin: float = 0.0, greedy: bool = False, n_examples: int = 3) -> dict:
    """Win rate of ``policy`` against ``base`` (the starting policy, also the KL reference) under
    the reward model ``judge`` (a :class:`RewardScorer`, or a path to one) on ``prompts``."""
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0] or \
            policy.get_input_embeddings().weight.shape[0] != base.get_input_embeddings().weight.shape[0]:
        raise ValueError("the policy and the starting policy have different vocabularies: compare a policy with its own start")
    enc = PromptEncoder(tokenizer, max_prompt_length, use_chat_template, template)
    if isinstance(judge, (str, Path)):
        judge = RewardScorer(str(judge), policy_tokenizer=tokenizer, policy_chat=enc.chat)
    kw = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, batch_size=batch_size, greedy=greedy)
    torch.manual_seed(seed)
    pol = sample_responses(policy, tokenizer, enc, prompts, reference=base, **kw)
    torch.manual_seed(seed)
    ref = sample_responses(base, tokenizer, enc, prompts, **kw)
    jp = torch.as_tensor(judge(list(prompts), pol["texts"], pol["prompt_ids"], pol["resp_ids"])).float()
    jb = torch.as_tensor(judge(list(prompts), ref["texts"], ref["prompt_ids"], ref["resp_ids"])).float()
    res = compare(jp, jb, tie_margin)
    res.update({
        "judge": getattr(judge, "path", "custom"),
        "judge_reward_policy": float(jp.mean()), "judge_reward_base": float(jb.mean()),
        "kl_to_reference": _mean(pol["kl"]),
        "response_length_policy": _mean(pol["length"]), "response_length_base": _mean(ref["length"]),
        "identical_responses": sum(a == b for a, b in zip(pol["texts"], ref["texts"])),
        "sampling": {"greedy": greedy, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
                     "seed": seed, "tie_margin": tie_margin},
        "examples": [{"prompt": p[-1]["content"][-300:], "policy": a, "base": b, "judge_policy": float(x),
                      "judge_base": float(y)}
                     for p, a, b, x, y in list(zip(prompts, pol["texts"], ref["texts"], jp, jb))[:n_examples]],
    })
    return res


def best_of_n(policy, tokenizer, selector, judge, prompts: Sequence[list[dict]], n: int = 4, max_new_tokens: int = 64,
              temperature: float = 0.7, top_p: float = 1.0, max_prompt_length: int = 256, use_chat_template: bool = True,
              template: str = DEFAULT_TEMPLATE, batch_size: int = 8, seed: int = 0, tie_margin: float = 0.0) -> dict:
    """Best-of-``n`` with ``selector`` (a reward model) against a single sample, judged by ``judge``.

    For each prompt ``n`` responses are sampled; the selector keeps its favourite; the single-sample
    baseline is the first of the ``n`` (a plain sample of the same policy).
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    enc = PromptEncoder(tokenizer, max_prompt_length, use_chat_template, template)
    if isinstance(selector, (str, Path)):
        selector = RewardScorer(str(selector), policy_tokenizer=tokenizer, policy_chat=enc.chat)
    if isinstance(judge, (str, Path)):
        judge = RewardScorer(str(judge), policy_tokenizer=tokenizer, policy_chat=enc.chat)
    torch.manual_seed(seed)
    rep = [p for p in prompts for _ in range(n)]
    s = sample_responses(policy, tokenizer, enc, rep, max_new_tokens=max_new_tokens, temperature=temperature,
                         top_p=top_p, batch_size=batch_size)
    sel = torch.as_tensor(selector(rep, s["texts"], s["prompt_ids"], s["resp_ids"])).float().view(len(prompts), n)
    best = sel.argmax(1)
    pick = lambda key, j: [s[key][i * n + int(j[i])] for i in range(len(prompts))]  # noqa: E731
    first = torch.zeros(len(prompts), dtype=torch.long)
    jb = torch.as_tensor(judge(list(prompts), pick("texts", best), pick("prompt_ids", best), pick("resp_ids", best))).float()
    j1 = torch.as_tensor(judge(list(prompts), pick("texts", first), pick("prompt_ids", first), pick("resp_ids", first))).float()
    res = compare(jb, j1, tie_margin)
    res.update({
        "n_samples": n,
        "selector": getattr(selector, "path", "custom"), "judge": getattr(judge, "path", "custom"),
        "judge_reward_best_of_n": float(jb.mean()), "judge_reward_single": float(j1.mean()),
        "selector_reward_best_of_n": float(sel.max(1).values.mean()), "selector_reward_single": float(sel[:, 0].mean()),
        "sampling": {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed},
    })
    return res


# --------------------------------------------------------------------------------------------
# Command-line glue (ser evaluate-policy / ser best-of-n)
# --------------------------------------------------------------------------------------------

def _run_files(run: str | None) -> dict:
    """A PPO stage folder (``<run>/ppo`` or the run folder itself): policy, start, held-out prompts."""
    if not run:
        return {}
    d = Path(run).expanduser()
    if not (d / "ppo.json").exists() and (d / "ppo" / "ppo.json").exists():
        d = d / "ppo"
    if not (d / "ppo.json").exists():
        raise FileNotFoundError(f"{run}: no ppo.json (not a finished PPO stage folder)")
    info = json.loads((d / "ppo.json").read_text())
    policy = info.get("policy") or str(d / "policy")
    meta_file = Path(policy) / "ser_policy.json"
    return {"policy": policy, "base": info["policy_start"], "prompts": str(d / "eval_prompts.jsonl"),
            "reward_model": info.get("reward_model"),
            "meta": json.loads(meta_file.read_text()) if meta_file.exists() else {}}


def _gen_kw(args, meta: dict) -> dict:
    g = meta.get("generation", {})
    return dict(max_new_tokens=args.max_new_tokens or g.get("max_new_tokens", 64),
                temperature=args.temperature or g.get("temperature", 0.7),
                top_p=args.top_p or g.get("top_p", 1.0),
                max_prompt_length=args.max_prompt_length or meta.get("max_prompt_length", 256),
                use_chat_template=meta.get("use_chat_template", True), template=meta.get("template", DEFAULT_TEMPLATE),
                batch_size=args.batch_size, seed=args.seed)


def _write(res: dict, out: str | None) -> None:
    text = json.dumps(res, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    summary = {k: v for k, v in res.items() if k not in ("examples", "sampling")}
    print(json.dumps(summary, indent=2))
    if out:
        print(f"written: {out}")


def add_common_args(p) -> None:
    p.add_argument("--prompts", help="jsonl of {\"prompt\": [messages] | text} (default: the run's held-out prompts)")
    p.add_argument("--limit", type=int, default=64, help="evaluate on the first LIMIT prompts (default 64)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--max-prompt-length", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tie-margin", type=float, default=0.0, help="|judge difference| <= this is a tie (default 0)")
    p.add_argument("--out", help="write the full result (with examples) to this JSON file")


def cli_evaluate_policy(args) -> int:
    run = _run_files(args.run)
    policy_src = args.policy or run.get("policy")
    base_src = args.base or run.get("base")
    prompts_src = args.prompts or run.get("prompts")
    missing = [n for n, v in (("--policy", policy_src), ("--base", base_src), ("--prompts", prompts_src)) if not v]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (or pass --run PPO_RUN_DIR)")
    policy, tok, meta = load_policy(policy_src)
    base, _, _ = load_policy(base_src)
    prompts = load_prompts(prompts_src)[: args.limit]
    res = evaluate_policy(policy, base, args.judge, prompts, tok, tie_margin=args.tie_margin, greedy=args.greedy,
                          **_gen_kw(args, meta))
    res.update({"policy": str(policy_src), "base": base_src if isinstance(base_src, str) else json.dumps(base_src)[:200],
                "prompts": str(prompts_src)})
    _write(res, args.out)
    return 0


def cli_best_of_n(args) -> int:
    run = _run_files(args.run)
    policy_src = args.policy or run.get("policy")
    prompts_src = args.prompts or run.get("prompts")
    if not policy_src or not prompts_src:
        raise ValueError("missing --policy or --prompts (or pass --run PPO_RUN_DIR)")
    policy, tok, meta = load_policy(policy_src)
    meta = meta or run.get("meta", {})  # e.g. the starting policy sampled as in the PPO run
    prompts = load_prompts(prompts_src)[: args.limit]
    res = best_of_n(policy, tok, args.reward_model, args.judge or args.reward_model, prompts, n=args.n,
                    tie_margin=args.tie_margin, **{k: v for k, v in _gen_kw(args, meta).items()})
    res.update({"policy": str(policy_src), "prompts": str(prompts_src)})
    _write(res, args.out)
    return 0
