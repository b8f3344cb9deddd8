"""Every config in conf/ composes, validates, and its components instantiate."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ser.config import ConfigError, validate
from ser.loop import thresholds_from_config
from ser.precision import resolve_precision
from tests.conftest import CONF, compose

GROUPS = {g.name: sorted(p.stem for p in g.glob("*.yaml") if not p.stem.startswith("_"))
          for g in CONF.iterdir() if g.is_dir() and g.name not in ("hydra",)}


def all_options():
    for group, options in sorted(GROUPS.items()):
        for opt in options:
            yield group, opt


def test_groups_exist():
    for g in ("model", "data", "loss", "optim", "thresholds", "loop", "trainer", "logger", "experiment"):
        assert GROUPS.get(g), f"config group {g} is empty"


@pytest.mark.parametrize("group,option", list(all_options()))
def test_every_config_composes_and_validates(group, option, tmp_path):
    cfg = compose([f"{group}={option}"], output_dir=tmp_path)
    validate(cfg)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("option", GROUPS["trainer"])
def test_trainer_configs_instantiate(option, tmp_path):
    cfg = compose([f"trainer={option}"], output_dir=tmp_path)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        if isinstance(cfg.trainer.get("strategy"), dict) or OmegaConf.is_dict(cfg.trainer.get("strategy")):
            instantiate(cfg.trainer.strategy)  # the strategy object itself builds without a GPU
        pytest.skip("no GPU here: the gpu path is checked on a GPU machine")
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator).precision  # as ser.train does
    trainer = instantiate(cfg.trainer, precision=precision, logger=False, default_root_dir=str(tmp_path))
    assert trainer.world_size >= 1


@pytest.mark.parametrize("option", GROUPS["logger"])
def test_logger_configs_instantiate(option, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose([f"logger={option}"], output_dir=tmp_path)
    if "_target_" not in (cfg.logger or {}):
        assert option == "none"
        return
    logger = instantiate(cfg.logger)
    assert logger is not None


@pytest.mark.parametrize("option", [o for o in GROUPS["model"] if o.startswith("tiny")])
def test_tiny_models_build(option):
    from ser.model import build_hf_model, load_tokenizer

    cfg = compose([f"model={option}"])
    tok = load_tokenizer(cfg.model)
    net = build_hf_model(cfg.model, tok)
    assert net.config.num_labels == 1 and net.config.pad_token_id == tok.pad_token_id


@pytest.mark.parametrize("option", ["mistral_7b", "llama3_8b", "llama2_13b", "llama3_70b"])
def test_paper_gpu_models_keep_paper_settings(option):
    m = compose([f"model={option}"]).model
    assert "/" in m.name_or_path and m.dtype == "bfloat16" and m.gradient_checkpointing
    assert m.lora.r == (2 if option == "llama3_70b" else 8) and m.lora.alpha == 32 and m.lora.dropout == 0.1


def test_thresholds_defaults_are_the_papers():
    th = thresholds_from_config(compose().thresholds)
    assert (th.tau_high, th.tau_low, th.tau_delta, th.rule) == (0.55, 0.45, 0.3, "paper")


@pytest.mark.parametrize("override,key", [
    ("labeled_fraction=0", "labeled_fraction"),
    ("labeled_fraction=1.5", "labeled_fraction"),
    ("thresholds.tau_low=0.7", "tau_low"),
    ("thresholds.centring=median", "thresholds.centring"),
    ("loss.kind=hinge", "loss.kind"),
    ("loop.max_loops=-1", "loop.max_loops"),
    ("data.batch_size=0", "data.batch_size"),
    ("optim.lr=0", "optim.lr"),
    ("data.val_fraction=0.85", "val_fraction"),
    ("float32_matmul_precision=tf32", "float32_matmul_precision"),
    ("optim.cpu_impl=fused", "optim.cpu_impl"),
    ("data.pack_length=16", "data.pack_length"),
])
def test_bad_values_fail_early_naming_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        validate(compose([override]))
    assert key in str(e.value) and "\n" not in str(e.value)


def test_slurm_launcher_config_composes():
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=["hydra/launcher=slurm_gpu", "experiment=paper_hh_llama3_8b"],
                            return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 8
    assert cfg.trainer.accelerator == "gpu" and cfg.model.lora.r == 8


@pytest.mark.parametrize("override,key,says", [
    ("optim.lr=abc", "optim.lr", "could not be converted to Float"),
    ("loop.max_loops=1.5", "loop.max_loops", "could not be converted to Integer"),
    ("model.lora.r=abc", "model.lora.r", "could not be converted to Integer"),
    ("data.group_by_length=maybe", "data.group_by_length", "is not a valid bool"),
    ("optim.lrr=1", "optim.lrr", "not in 'OptimConfig'"),
    ("thresholds.tau=0.5", "thresholds.tau", "not in 'ThresholdsConfig'"),
    ("ppo.kl.target=high", "ppo.kl.target", "could not be converted to Float"),
])
def test_the_schema_rejects_wrong_types_and_unknown_keys(override, key, says):
    """ser/schema.py types every value: Hydra refuses the override before anything runs."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        compose([override])
    msg = f"{e.value} {e.value.__cause__}"
    assert key in msg and says in msg


def test_every_yaml_key_is_in_the_schema():
    """Every preset composes into the schema (none adds a key the schema lacks), typed."""
    from ser.schema import TrainConfig

    for group, options in GROUPS.items():
        for option in options:
            cfg = compose([f"{group}={option}"])
            assert OmegaConf.get_type(cfg) is TrainConfig
    assert isinstance(compose(["optim.lr=3e-4"]).optim.lr, float)


def test_cli_reports_a_bad_type_without_a_traceback(tmp_path):
    import subprocess
    import sys

    for override, key in (("optim.lr=abc", "optim.lr"), ("optim.lrr=1", "optim.lrr")):
        done = subprocess.run([sys.executable, "-m", "ser.train", override, f"hydra.run.dir={tmp_path}"],
                              cwd=CONF.parent, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert f"full_key: {key}" in done.stderr and "Traceback" not in done.stderr


SWEEPS = sorted(p.stem for p in (CONF.parent / "multirun_sweeps").glob("*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_config_composes_at_each_swept_value(sweep, tmp_path):
    """`python -m ser.train -m --config-dir multirun_sweeps --config-name SWEEP experiment=ser_hh_minilm`:
    the sweep file composes and every value it sweeps gives a valid config."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import open_dict

    import ser.schema  # noqa: F401

    if "optuna" in (CONF.parent / "multirun_sweeps" / f"{sweep}.yaml").read_text():
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optional extra ser[sweep] is not installed")
    search = f"hydra.searchpath=[file://{CONF}]"  # as --config-dir: the sweep file first, then conf/
    with initialize_config_dir(config_dir=str(CONF.parent / "multirun_sweeps"), version_base="1.3"):
        base = hydra_compose(config_name=sweep, overrides=[search, "experiment=ser_hh_minilm"], return_hydra_config=True)
        params = dict(base.hydra.sweeper.params)
        assert params, f"{sweep}: sweeps nothing"
        for key, values in params.items():
            if "(" in str(values):  # an Optuna search space (interval(...), choice(...)): composed by Optuna
                continue
            for value in str(values).split(","):
                cfg = hydra_compose(config_name=sweep, overrides=[search, "experiment=ser_hh_minilm", f"{key}={value}"])
                with open_dict(cfg):
                    cfg.output_dir = str(tmp_path)
                validate(cfg)
                OmegaConf.to_container(cfg, resolve=True)
