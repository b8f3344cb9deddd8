"""Early validation of a composed config: one clear line naming the key and what to do."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ser import rl
from ser.acquisition import ORACLES, RULES as ACQUISITION_RULES
from ser.data import check_fraction
from ser.errors import ConfigError, DataError, ModelNotFound, PPOConfigError
from ser.losses import LOSSES
from ser.loop import SELECT_MODES, thresholds_from_config
from ser.model import ADAMW_CPU_IMPLS
from ser.progress import LINE_MODES
from ser.selection import STRATEGIES
from ser.status import SCALE_MODES

# trainer.precision: auto (ser.precision decides from the hardware) or a Lightning value
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "bf16", "16-mixed", "16-true", "16", "64-true", "64",
              "transformer-engine", "transformer-engine-float16")


def _positive_int(cfg: DictConfig, key: str, minimum: int = 1) -> None:
    v = OmegaConf.select(cfg, key)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ConfigError(f"{key}={v!r} must be an integer >= {minimum}")


def validate(cfg: DictConfig) -> None:
    """Check every value a researcher may sweep before any model or data is loaded."""
    try:
        check_fraction("labeled_fraction", cfg.labeled_fraction)
        check_fraction("data.val_fraction", cfg.data.val_fraction, allow_zero=True)
        check_fraction("data.test_fraction", cfg.data.test_fraction, allow_zero=True)
        thresholds_from_config(cfg.thresholds)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction = {cfg.data.val_fraction + cfg.data.test_fraction} leaves no training data")
    if cfg.thresholds.centring not in ("none", "labeled_mean", "pool_mean"):
        raise ConfigError(f"thresholds.centring='{cfg.thresholds.centring}' must be none, labeled_mean or pool_mean")
    if cfg.thresholds.get("scaling", "none") not in SCALE_MODES:
        raise ConfigError(f"thresholds.scaling='{cfg.thresholds.scaling}' must be one of {', '.join(SCALE_MODES)}")
    if cfg.loss.kind not in LOSSES:
        raise ConfigError(f"loss.kind='{cfg.loss.kind}' must be one of {', '.join(LOSSES)}")
    if cfg.loss.margin < 0 or cfg.loss.centring_coef < 0:
        raise ConfigError("loss.margin and loss.centring_coef must be >= 0")
    for key, lo in (("loop.max_loops", 0), ("loop.epochs_per_loop", 1), ("loop.score_batch_size", 1),
                    ("data.batch_size", 1), ("data.max_length", 8), ("seed", 0)):
        _positive_int(cfg, key, lo)
    sel = cfg.get("selection")
    if sel is not None:
        if sel.strategy not in STRATEGIES:
            raise ConfigError(f"selection.strategy='{sel.strategy}' must be one of {', '.join(STRATEGIES)}")
        if not 0.5 <= sel.confidence < 1:
            raise ConfigError(f"selection.confidence={sel.confidence} must be in [0.5, 1): a confidence max(P, 1 - P)")
        if not 0 < sel.target_precision <= 1:
            raise ConfigError(f"selection.target_precision={sel.target_precision} must be in (0, 1]")
        if sel.get("mc_passes", 0) < 0 or not 0 < sel.get("mc_min_agreement", 1.0) <= 1:
            raise ConfigError("selection.mc_passes must be >= 0 and selection.mc_min_agreement in (0, 1]")
        if sel.get("mc_scope", "candidates") not in ("candidates", "pool"):
            raise ConfigError(f"selection.mc_scope='{sel.mc_scope}' must be candidates or pool")
        if sel.get("mc_passes", 0) > 0 and sel.strategy == "status":
            raise ConfigError("selection.mc_passes works with the confidence strategies: add selection=pairwise "
                              "(or precision_target, consistent)")
        if sel.strategy != "status" and cfg.data.val_fraction <= 0:
            raise ConfigError(f"selection.strategy={sel.strategy} fits its temperature on validation: set data.val_fraction > 0")
    if cfg.get("acquisition") is not None:
        validate_acquisition(cfg.acquisition)
    if cfg.loop.get("select", "last") not in SELECT_MODES:
        raise ConfigError(f"loop.select='{cfg.loop.select}' must be one of {', '.join(SELECT_MODES)}")
    if cfg.loop.get("select", "last") == "best_val" and cfg.data.val_fraction <= 0:
        raise ConfigError("loop.select=best_val needs a validation split: set data.val_fraction > 0")
    for name, spec in (cfg.data.get("eval_sets") or {}).items():
        if not str(name).isidentifier() or name in ("test", "val"):
            raise ConfigError(f"data.eval_sets.{name}: a name must be an identifier other than test and val")
        if not isinstance(spec, DictConfig) or not (spec.get("files") or spec.get("test_files") or spec.get("hub_id")):
            raise ConfigError(f"data.eval_sets.{name} needs files (or a data config with files/hub_id), "
                              f"e.g. +data.eval_sets.{name}.files=[my_pairs.jsonl]")
    if str(cfg.trainer.get("precision", "auto")) not in PRECISIONS:
        raise ConfigError(f"trainer.precision='{cfg.trainer.precision}' must be one of {', '.join(PRECISIONS)}")
    if cfg.get("progress") is not None:
        if cfg.progress.lines not in LINE_MODES:
            raise ConfigError(f"progress.lines='{cfg.progress.lines}' must be one of {', '.join(LINE_MODES)}")
        if not isinstance(cfg.progress.every_s, (int, float)) or cfg.progress.every_s <= 0:
            raise ConfigError(f"progress.every_s={cfg.progress.every_s!r} must be a number of seconds > 0")
    if cfg.get("float32_matmul_precision", "high") not in ("highest", "high", "medium"):
        raise ConfigError(f"float32_matmul_precision='{cfg.float32_matmul_precision}' must be highest, high or medium")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr={cfg.optim.lr} must be > 0")
    if cfg.optim.get("cpu_impl", "default") not in ADAMW_CPU_IMPLS:
        raise ConfigError(f"optim.cpu_impl='{cfg.optim.cpu_impl}' must be one of {', '.join(ADAMW_CPU_IMPLS)}")
    if cfg.optim.warmup_steps < 0:
        raise ConfigError(f"optim.warmup_steps={cfg.optim.warmup_steps} must be >= 0 (a fraction < 1 or a step count)")
    if cfg.data.overlength not in ("truncate", "drop"):
        raise ConfigError(f"data.overlength='{cfg.data.overlength}' must be truncate or drop")
    if cfg.data.get("prompt_cut", "answer") not in ("answer", "pair"):
        raise ConfigError(f"data.prompt_cut='{cfg.data.prompt_cut}' must be answer (each answer's prompt cut on its own) "
                          "or pair (the same cut for both answers of a pair)")
    if cfg.data.get("html", "text") not in ("text", "keep"):
        raise ConfigError(f"data.html='{cfg.data.html}' must be text (HTML rendered to Markdown) or keep")
    if cfg.data.get("packing") and cfg.data.get("prefix_sharing"):
        raise ConfigError("data.packing=true and data.prefix_sharing=true are two layouts of a training batch: "
                          "set one of them to false")
    pack_length = cfg.data.get("pack_length")
    if pack_length is not None and pack_length < cfg.data.max_length:
        raise ConfigError(f"data.pack_length={pack_length} must be >= data.max_length={cfg.data.max_length} "
                          "(every sequence must fit in one packed row), or null (the longest sequence of the batch)")
    if cfg.data.get("pairs_per_prompt") is not None and cfg.data.pairs_per_prompt < 1:
        raise ConfigError(f"data.pairs_per_prompt={cfg.data.pairs_per_prompt} must be >= 1 (or null: every pair)")
    if cfg.get("ppo") is not None and cfg.ppo.get("enabled"):
        validate_ppo(cfg.ppo)
    if not cfg.data.files and not cfg.data.hub_id:
        raise ConfigError("data.files and data.hub_id are both empty: name local files or a hub dataset")


def validate_acquisition(a: DictConfig) -> None:
    """``acquisition``: one clear line naming the key."""
    if a.rule not in ACQUISITION_RULES:
        raise ConfigError(f"acquisition.rule='{a.rule}' must be one of {', '.join(ACQUISITION_RULES)}")
    if a.oracle not in ORACLES:
        raise ConfigError(f"acquisition.oracle='{a.oracle}' must be hidden (the pool's hidden labels) or file "
                          "(acquisition.answers)")
    for key in ("per_loop", "budget"):
        v = a[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or (v >= 1 and v != int(v)):
            raise ConfigError(f"acquisition.{key}={v!r} must be a count (an integer >= 1) or a share in [0, 1)")
    if a.rule != "none" and (a.per_loop == 0 or a.budget == 0):
        raise ConfigError(f"acquisition.rule={a.rule} with per_loop={a.per_loop} and budget={a.budget} asks for "
                          "nothing: set both > 0, or acquisition=none")
    if a.answers is not None and a.oracle != "file":
        raise ConfigError("acquisition.answers is read by the file oracle only: add acquisition.oracle=file")
    if not a.self_label and a.rule == "none":
        raise ConfigError("acquisition.self_label=false with acquisition=none trains on nothing new: pick a rule")


def validate_ppo(p: DictConfig) -> None:
    """One clear line naming the key, before any model is loaded."""
    def num(key, lo=None, hi=None, integer=False, lo_open=False):
        v = OmegaConf.select(p, key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (not integer or isinstance(v, int))
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v <= hi
        if not ok:
            rng = f"{'>' if lo_open else '>='} {lo}" if lo is not None else ""
            rng += f"{' and ' if rng else ''}<= {hi}" if hi is not None else ""
            raise PPOConfigError(f"ppo.{key}={v!r} must be {'an integer' if integer else 'a number'} {rng}".rstrip())

    for key in ("steps", "batch_size", "minibatch_size", "ppo_epochs", "max_prompt_length", "generation.max_new_tokens",
                "reward_batch_size"):
        num(key, 1, integer=True)
    num("checkpoint_every", 0, integer=True)
    num("eval_size", 0, integer=True)
    num("lr", 0, lo_open=True)
    num("generation.temperature", 0, lo_open=True)
    num("generation.top_p", 0, 1, lo_open=True)
    num("cliprange", 0, lo_open=True)
    num("cliprange_value", 0, lo_open=True)
    num("gamma", 0, 1)
    num("lam", 0, 1)
    num("vf_coef", 0)
    num("kl.init_coef", 0)
    if p.minibatch_size > p.batch_size:
        raise PPOConfigError(f"ppo.minibatch_size={p.minibatch_size} must be <= ppo.batch_size={p.batch_size}")
    if p.kl.adaptive:
        num("kl.target", 0, lo_open=True)
        num("kl.horizon", 0, lo_open=True)
    if p.kl.estimator not in rl.KL_KINDS:
        raise PPOConfigError(f"ppo.kl.estimator='{p.kl.estimator}' must be one of {', '.join(rl.KL_KINDS)}")
    if p.value_model not in ("head", "separate"):
        raise PPOConfigError(f"ppo.value_model='{p.value_model}' must be head or separate")
    if p.reward_transform not in ("raw", "sigmoid"):
        raise PPOConfigError(f"ppo.reward_transform='{p.reward_transform}' must be raw or sigmoid")
    if not p.policy.get("name_or_path"):
        raise PPOConfigError("ppo.policy.name_or_path is empty: name a hub id or a local folder")


def run_reporting_errors(job, cfg: DictConfig):
    """Run an entry point's job; bad configs, data or models end in one `error:` line and exit 2."""
    import sys

    import transformers

    transformers.logging.set_verbosity_error()
    try:
        return job(cfg)
    except (ConfigError, DataError, ModelNotFound) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
