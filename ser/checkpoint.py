"""Checkpoint and JSON-file helpers shared by the SER trainer (``ser.train``) and the PPO stage
(``ser.ppo``): :class:`AtomicCheckpointIO` (write to a temporary file, then rename),
:func:`last_checkpoint` (the one resumable ``last.ckpt`` of a phase) and :func:`write_json` (an
atomic JSON write). They sit low in the import graph so that neither trainer imports the other.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ser import faults


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, then rename: a run killed while saving keeps its last good checkpoint."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        tmp = f"{path}.tmp"
        super().save_checkpoint(checkpoint, tmp, storage_options)
        faults.point("checkpoint")
        os.replace(tmp, path)


def last_checkpoint(dirpath: Path, every_n_epochs: int = 1) -> ModelCheckpoint:
    """One file, ``last.ckpt``, rewritten at every ``every_n_epochs``-th train-epoch end *after* the
    other callbacks (Lightning runs checkpoint callbacks last), so it always holds the loop state
    that matches its weights. (save_last=True with save_top_k=0 would write nothing until the end of
    training.) Pair it with :class:`AtomicCheckpointIO`."""
    return ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, save_last=False,
                           every_n_epochs=every_n_epochs, save_on_train_epoch_end=True, enable_version_counter=False)


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
