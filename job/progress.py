"""Progress lines: one plain, parsable line per logged step and per epoch (or JSON lines for collectors).

No carriage-return progress bars in a pod: `kubectl logs` shows every line, so each one must stand alone.
On a terminal (stdout is a TTY, TERM is not "dumb", --log-format text) the step lines become one live
bar, redrawn in place, and every epoch line stays on screen.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


BAR_WIDTH = 24


def is_terminal(stream: TextIO) -> bool:
    """True for an interactive terminal; pipes, files and `kubectl logs` get plain lines."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "") != "dumb"


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = round(width * min(max(done / max(total, 1), 0.0), 1.0))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class Reporter:
    def __init__(self, log_format: str = "text", stream: TextIO | None = None, live: bool | None = None) -> None:
        self.json = log_format == "json"
        self.stream = stream or sys.stdout
        # A live bar only for text on a terminal; `live` overrides the detection (tests, --log-format json).
        self.live = not self.json and (is_terminal(self.stream) if live is None else live)
        self._bar_shown = False

    def event(self, message: str, **fields: Any) -> None:
        """A free-form event (start, resume, publish)."""
        if self.json:
            self._write(json.dumps({"event": message, "time": time.time(), **fields}, sort_keys=True))
        else:
            details = " ".join(f"{key}={value}" for key, value in fields.items())
            self._write(f"{message} {details}".rstrip())

    def warning(self, message: str) -> None:
        """Something went wrong that does not stop the run (a plot could not be drawn)."""
        if self.json:
            self._write(json.dumps({"event": "warning", "time": time.time(), "message": message}, sort_keys=True))
        else:
            self._write(f"warning: {message}")

    def record(self, record: dict[str, Any], epochs: int, steps_per_epoch: int, eta_seconds: float | None) -> None:
        if self.json:
            event = {"event": record["kind"], "time": time.time(), **record, "eta_seconds": eta_seconds}
            self._write(json.dumps(event, sort_keys=True))
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
        line = f"{where} {numbers}{speed}{eta}"
        if self.live and record["kind"] == "step":
            self._draw(f"{progress_bar(record['step'], steps_per_epoch)} {line}")
        else:
            self._write(line)

    def _draw(self, line: str) -> None:
        """Replace the bar line in place: carriage return, the line, then clear what is left of the old one."""
        self.stream.write(f"\r{line}\x1b[K")
        self.stream.flush()
        self._bar_shown = True

    def _write(self, line: str) -> None:
        if self._bar_shown:  # Put a permanent line where the bar was; the next step draws a new bar.
            self.stream.write("\r\x1b[K")
            self._bar_shown = False
        print(line, file=self.stream, flush=True)
