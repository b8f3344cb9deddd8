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
    """``{"summary": {key: value}, "config": {key: value}, "history_keys": set}`` of a ``.wandb`` file
    (nested summary keys joined with "/")."""
    from wandb.proto import wandb_internal_pb2

    out: dict = {"summary": {}, "config": {}, "history_keys": set()}
    for data in _chunks(Path(path).read_bytes()):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
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
