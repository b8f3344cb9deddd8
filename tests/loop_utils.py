"""Reading a run's checkpointed state in tests."""
from __future__ import annotations

from pathlib import Path

import torch


def selections(out: Path, phase: str = "ser"):
    """The DataModule's pseudo-label selections of ``phase`` from its last checkpoint."""
    ck = torch.load(out / phase / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    dm_state = next(v for k, v in ck.items() if k.endswith("PreferenceDataModule"))
    return dm_state["selections"]
