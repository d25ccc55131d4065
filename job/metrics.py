"""metrics.jsonl, one JSON object per line: a step record every 100 steps and an epoch record per epoch.

`job.monitor` makes the records, `encode` is the one writer (`RunWriter` appends and trims with it) and
`decode` the one reader (the resume, `runs`, the plots and bench/benchmark.py). Records are plain dicts,
typed here, so `runs show --json` and the log lines carry them as written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NotRequired, TypedDict, TypeVar, cast


class StepRecord(TypedDict):
    kind: Literal["step"]
    epoch: int  # 1-based, as in every log line.
    step: int  # Steps completed in this epoch.
    samples_seen: int
    loss: float  # The epoch's running mean, as Keras logs `batch_loss`.
    batch_loss: NotRequired[float]  # The custom loop's loss of this one batch.
    images_per_second: float


class EpochRecord(TypedDict):
    kind: Literal["epoch"]
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float  # The whole epoch, validation included.
    train_seconds: float
    images_per_second: float  # Training only.


Record = StepRecord | EpochRecord
R = TypeVar("R", bound=Mapping[str, Any])  # A record as written, or as a test or a foreign file spells it.


def encode(records: Iterable[Record]) -> bytes:
    """Records as metrics.jsonl lines: one JSON object per line, keys sorted."""
    return "".join(json.dumps(record, sort_keys=True) + "\n" for record in records).encode()


def decode(raw: bytes) -> tuple[list[Record], list[int]]:
    """The step and epoch records, and the numbers of the lines that are not one (torn by a kill, foreign).

    Only `kind` and `epoch` are checked; the other fields are as the writer left them.
    """
    records: list[Record] = []
    damaged: list[int] = []
    for number, line in enumerate(raw.decode(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        kind, epoch = (record.get("kind"), record.get("epoch")) if isinstance(record, dict) else (None, None)
        if kind in ("step", "epoch") and isinstance(epoch, int):
            records.append(cast(Record, record))
        else:
            damaged.append(number)
    return records, damaged


def last_records(records: Iterable[R], kind: str) -> list[R]:
    """Records of one kind in order, the last one winning per (epoch, step), as after a resume."""
    latest = {(record["epoch"], record.get("step", 0)): record for record in records if record.get("kind") == kind}
    return [latest[key] for key in sorted(latest)]
