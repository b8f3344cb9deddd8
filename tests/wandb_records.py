"""Reading an offline wandb run back: its ``run-*.wandb`` transaction log (this wandb writes no
``wandb-summary.json`` or ``config.yaml`` in offline mode). The log uses LevelDB's record format:
32 KiB blocks of chunks, each a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle,
4 last) and a protobuf ``Record``; the file starts with a 7-byte ``:W&B`` header."""
from __future__ import annotations

import json
import struct
from pathlib import Path


def _chunks(raw: bytes, header: int = 7, block: int = 32768):
    pos, buf = header, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield data
        elif kind == 2:
            buf = data
        elif kind == 3:
            buf += data
        elif kind == 4:
            yield buf + data


def read_run(path: Path) -> dict:
    """``{"summary": {key: value}, "config": {key: value}, "history_keys": set, "kinds": [record
    types in order]}`` of a ``.wandb`` file (nested summary keys joined with "/"). The run is complete
    when ``kinds`` ends with ``"exit"``."""
    from wandb.proto import wandb_internal_pb2

    out: dict = {"summary": {}, "config": {}, "history_keys": set(), "kinds": []}
    for data in _chunks(Path(path).read_bytes()):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        out["kinds"].append(kind)
        if kind == "summary":
            for it in rec.summary.update:
                out["summary"][it.key or "/".join(it.nested_key)] = json.loads(it.value_json)
        elif kind in ("config", "run"):
            items = rec.config.update if kind == "config" else rec.run.config.update
            for it in items:
                value = json.loads(it.value_json)
                out["config"][it.key or "/".join(it.nested_key)] = value.get("value", value) if isinstance(value, dict) else value
        elif kind == "history":
            out["history_keys"].update(it.key or "/".join(it.nested_key) for it in rec.history.item)
    return out


def read_finished_run(path: Path, wait_s: float = 60.0) -> dict:
    """:func:`read_run` once the run's ``exit`` record is on disk. wandb-core writes the log from its
    own process; on a loaded machine the last records (the summary among them) can land a moment
    after ``run.finish()`` returns, so a reader that does not wait sees a truncated run."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        out = read_run(path)
        if "exit" in out["kinds"] or time.monotonic() > deadline:
            assert "exit" in out["kinds"], f"{path}: no exit record after {wait_s:.0f} s; records: {out['kinds'][-12:]}"
            return out
        time.sleep(0.5)
