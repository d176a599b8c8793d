"""Read an offline wandb run back (tests only): its config and history rows, from the .wandb file.

The file is a LevelDB-style log (32 KiB blocks of records with a 7-byte header: CRC, length,
type full/first/middle/last) after wandb's own 7-byte file header; each record is a protobuf
`wandb_internal_pb2.Record`.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

_BLOCK = 32768


def _records(path: Path) -> list[bytes]:
    data, out, part, pos = path.read_bytes(), [], b"", 7
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # block padding
            pos += left
            continue
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            out.append(payload)
        elif kind == 2:
            part = payload
        elif kind == 3:
            part += payload
        elif kind == 4:
            out.append(part + payload)
    return out


def _parsed(path: Path, timeout_s: float) -> list:
    """The file's records once its `exit` record is there: `run.finish()` can return before
    wandb's core process has written the file out."""
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + timeout_s
    while True:
        records = []
        for raw in _records(path):
            rec = pb.Record()
            rec.ParseFromString(raw)
            records.append(rec)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_offline_run(wandb_dir: str | Path, timeout_s: float = 30.0) -> tuple[dict, list[dict]]:
    """(config {key: value}, history rows [{key: value, "_step": n}]) of the newest offline run."""
    runs = sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb"))
    assert runs, f"no offline wandb run under {wandb_dir}"
    config, history = {}, []
    for rec in _parsed(runs[-1], timeout_s):
        kind = rec.WhichOneof("record_type")
        updates = rec.run.config.update if kind == "run" else rec.config.update if kind == "config" else []
        for item in updates:
            config[item.key] = json.loads(item.value_json)
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in rec.history.item})
    return config, history


def isolate(monkeypatch, folder: Path) -> None:
    """Keep wandb's own cache, config and core logs inside the test's folder (not ~/.cache)."""
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(Path(folder) / "wandb-home" / var.lower()))
