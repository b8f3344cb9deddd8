"""``python -m ser.ppo``: the PPO stage as a follow-up job on an exported reward model.
:func:`run_job` takes its prompts from the same data config and seed as the SER run, then runs
:func:`~ser.ppo.stage.run_ppo`; :func:`main` is the Hydra entry point (``conf/ppo_main.yaml``)
that ``ser/ppo/__main__.py`` calls.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ser.errors import PPOConfigError
from ser.ppo.prompts import prompts_from_config
from ser.ppo.reward import resolve_reward_model_path
from ser.ppo.stage import run_ppo
from ser.progress import Progress

#: conf/ at the repository root
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


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

    def _main(cfg: DictConfig) -> float | None:
        from ser.config import run_reporting_errors

        return run_reporting_errors(run_job, cfg).get("reward_last_quarter")  # PPOConfigError is a ConfigError

    # Hydra names the job after the task function's module, "ppo" as when this entry point was
    # ser/ppo.py: hydra.job.name, the log file <run>/ppo.log, "ppo is powered by Hydra". A task of a
    # named module would look for a relative config_path inside the package: conf/ is given absolute.
    _main.__module__ = "ser.ppo"
    hydra.main(config_path=str(CONF_DIR), config_name="ppo_main", version_base="1.3")(_main)()
