"""Progress lines: one plain, parsable line per logged step and per epoch (or JSON lines for collectors).

No carriage-return progress bars in a pod: `kubectl logs` shows every line, so each one must stand alone.
On a terminal (stdout is a TTY, TERM is not "dumb", --log-format text) the step lines become one live
bar, redrawn in place, and every epoch line stays on screen.

With --log-format json every line, on stdout and stderr alike, is one JSON object carrying `severity` and
`message`, the fields Cloud Logging's agents classify and display an entry by (https://cloud.google.com/
logging/docs/structured-logging); without them GKE files stdout as INFO and stderr as ERROR. `message` is
the line text mode would print; the other keys land in the entry's jsonPayload.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

INFO, WARNING, ERROR = "INFO", "WARNING", "ERROR"  # Cloud Logging LogSeverity names.
_json_lines = False  # Set once per process by the CLI (use_json_lines), read by stderr_line.


def json_line(severity: str, message: str, **fields: Any) -> str:
    """One structured log entry: severity, message, the time (Unix seconds) and any other fields."""
    return json.dumps({**fields, "severity": severity, "message": message, "time": time.time()}, sort_keys=True)


def use_json_lines(enabled: bool) -> None:
    """Make stderr_line print JSON (--log-format json), for the lines written outside a Reporter."""
    global _json_lines
    _json_lines = enabled


def stderr_line(line: str, severity: str = ERROR, **fields: Any) -> None:
    """An error or notice on stderr: `line` as it is in text mode; in JSON, its text (less "error: ") as message."""
    text = json_line(severity, line.removeprefix("error: "), **fields) if _json_lines else line
    print(text, file=sys.stderr, flush=True)


def is_terminal(stream: TextIO) -> bool:
    """True for an interactive terminal; pipes, files and `kubectl logs` get plain lines."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "") != "dumb"


def progress_bar(done: int, total: int, width: int = 24) -> str:
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
        details = " ".join(f"{key}={value}" for key, value in fields.items())
        line = f"{message} {details}".rstrip()
        self._write(json_line(INFO, line, event=message, **fields) if self.json else line)

    def warning(self, message: str) -> None:
        """Something went wrong that does not stop the run (a plot could not be drawn)."""
        self._write(json_line(WARNING, message, event="warning") if self.json else f"warning: {message}")

    def record(self, record: Mapping[str, Any], epochs: int, steps_per_epoch: int, eta_seconds: float | None) -> None:
        """A step or epoch record's line: text, JSON, or on a terminal the live bar for steps."""
        where = f"epoch {record['epoch']}/{epochs}"
        if record["kind"] == "step":
            where += f" step {record['step']}/{steps_per_epoch}"
        numbers = " ".join(
            f"{key} {record[key]:.4f}"
            for key in ("batch_loss", "loss", "accuracy", "val_loss", "val_accuracy")
            if isinstance(record.get(key), float)
        )
        speed = f" {record['images_per_second']:.0f} images/s" if record.get("images_per_second") else ""
        minutes, seconds = divmod(int(eta_seconds or 0), 60)
        eta = f" eta {minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if eta_seconds is not None else ""
        line = f"{where} {numbers}{speed}{eta}"
        if self.json:
            self._write(json_line(INFO, line, event=record["kind"], **record, eta_seconds=eta_seconds))
        elif self.live and record["kind"] == "step":  # Redraw the bar in place, clearing the rest of the old one.
            self.stream.write(f"\r{progress_bar(record['step'], steps_per_epoch)} {line}\x1b[K")
            self.stream.flush()
            self._bar_shown = True
        else:
            self._write(line)

    def _write(self, line: str) -> None:
        if self._bar_shown:  # Put a permanent line where the bar was; the next step draws a new bar.
            self.stream.write("\r\x1b[K")
            self._bar_shown = False
        print(line, file=self.stream, flush=True)
