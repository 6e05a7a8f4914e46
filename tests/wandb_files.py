"""Reading an offline W&B run back from its `.wandb` file (wandb 0.2x+ ships no Python reader of it)."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of a `.wandb` file: wandb's 7-byte header, then LevelDB-log blocks of 32 KiB whose
    chunks (4-byte CRC, 2-byte length, 1-byte type: full, first, middle, last) carry the records."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):  # a chunk still being written
            return
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4) and pending:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def complete_records(path: Path, timeout: float = 30.0) -> list[Any]:
    """The run file's records once wandb's service has written its exit record (it may still be flushing
    after `wandb.finish()` returns)."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_wandb_run(path: Path) -> dict:
    """An offline run's config, metric definitions, history rows and summary, from its run file."""
    run: dict = {"config": {}, "metrics": {}, "history": [], "summary": {}}
    for record in complete_records(path):
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):  # init's config rides on the run record, later updates on their own
            items = record.run.config.update if kind == "run" else record.config.update
            run["config"] |= {i.key: json.loads(i.value_json) for i in items}
        elif kind == "metric" and record.metric.step_metric:
            run["metrics"][record.metric.glob_name or record.metric.name] = record.metric.step_metric
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            run["history"].append(row)
        elif kind == "summary":
            run["summary"] |= {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update}
    return run
