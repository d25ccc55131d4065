"""Progress lines: one plain, parsable line per logged step and per epoch (or JSON lines for collectors).

No carriage-return progress bars: in a pod `kubectl logs` shows every line, so each one must stand alone.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Reporter:
    def __init__(self, log_format: str = "text", stream: TextIO | None = None) -> None:
        self.json = log_format == "json"
        self.stream = stream or sys.stdout

    def event(self, message: str, **fields: Any) -> None:
        """A free-form event (start, resume, publish)."""
        if self.json:
            self._write(json.dumps({"event": message, "time": time.time(), **fields}, sort_keys=True))
        else:
            details = " ".join(f"{key}={value}" for key, value in fields.items())
            self._write(f"{message} {details}".rstrip())

    def record(self, record: dict[str, Any], epochs: int, steps_per_epoch: int, eta_seconds: float | None) -> None:
        if self.json:
            self._write(json.dumps({"event": record["kind"], **record, "eta_seconds": eta_seconds}, sort_keys=True))
            return
        where = f"epoch {record['epoch']}/{epochs}"
        if record["kind"] == "step":
            where += f" step {record['step']}/{steps_per_epoch}"
        numbers = " ".join(
            f"{key} {record[key]:.4f}"
            for key in ("batch_loss", "loss", "accuracy", "val_loss", "val_accuracy")
            if isinstance(record.get(key), float)
        )
        speed = f" {record['images_per_second']:.0f} images/s" if record.get("images_per_second") else ""
        eta = f" eta {format_duration(eta_seconds)}" if eta_seconds is not None else ""
        self._write(f"{where} {numbers}{speed}{eta}")

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
