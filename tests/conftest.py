"""Shared test set-up: offline hub, the real data folder, and composed configs."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("SER_DATA_DIR", str((ROOT / ".." / "shared" / "data").resolve()))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# phase reuse never reaches work cached outside this test session (tests/test_reuse.py tests it)
os.environ["SER_REUSE_DIR"] = tempfile.mkdtemp(prefix="ser-test-reuse-")
atexit.register(shutil.rmtree, os.environ["SER_REUSE_DIR"], True)


def compose(overrides: list[str] | tuple[str, ...] = (), output_dir: str | Path | None = None):
    """The config `python -m ser.train OVERRIDES` would run, with output_dir resolved."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import open_dict

    import ser.schema  # noqa: F401  registers the config schema conf/train.yaml starts from

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=list(overrides), return_hydra_config=False)
    with open_dict(cfg):
        cfg.output_dir = str(output_dir) if output_dir else "/tmp/ser-test-unused"
    return cfg


@pytest.fixture
def data_dir() -> Path:
    p = Path(os.environ["SER_DATA_DIR"])
    if not p.is_dir():
        pytest.skip(f"real data not found at {p}; set SER_DATA_DIR")
    return p
