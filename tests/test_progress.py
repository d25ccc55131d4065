"""Progress output: plain parsable lines off a terminal, a live bar redrawn in place on one."""

from __future__ import annotations

import io
import json

import pytest

from job.progress import Reporter, is_terminal, progress_bar

STEP = {"kind": "step", "epoch": 1, "step": 100, "samples_seen": 6400, "loss": 1.5, "images_per_second": 1234.0}
EPOCH = {"kind": "epoch", "epoch": 1, "loss": 1.4, "accuracy": 0.5, "val_loss": 1.6, "val_accuracy": 0.45,
         "images_per_second": 1200.0}  # fmt: skip


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_every_record_is_one_plain_line() -> None:
    stream = io.StringIO()
    reporter = Reporter(stream=stream)
    reporter.record(STEP, epochs=2, steps_per_epoch=200, eta_seconds=65)
    reporter.record(EPOCH, epochs=2, steps_per_epoch=200, eta_seconds=None)
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert stream.getvalue().splitlines() == [
        "epoch 1/2 step 100/200 loss 1.5000 1234 images/s eta 0:01:05",
        "epoch 1/2 loss 1.4000 accuracy 0.5000 val_loss 1.6000 val_accuracy 0.4500 1200 images/s",
    ]


def test_on_a_terminal_steps_redraw_one_bar_and_epochs_stay() -> None:
    stream = FakeTerminal()
    reporter = Reporter(stream=stream)
    assert reporter.live
    reporter.record(STEP, epochs=2, steps_per_epoch=200, eta_seconds=65)
    reporter.record({**STEP, "step": 200}, epochs=2, steps_per_epoch=200, eta_seconds=60)
    reporter.record(EPOCH, epochs=2, steps_per_epoch=200, eta_seconds=None)
    reporter.event("finished", run="r1")
    bar_half, bar_full = progress_bar(100, 200), progress_bar(200, 200)
    assert stream.getvalue() == (
        f"\r{bar_half} epoch 1/2 step 100/200 loss 1.5000 1234 images/s eta 0:01:05\x1b[K"
        f"\r{bar_full} epoch 1/2 step 200/200 loss 1.5000 1234 images/s eta 0:01:00\x1b[K"
        "\r\x1b[Kepoch 1/2 loss 1.4000 accuracy 0.5000 val_loss 1.6000 val_accuracy 0.4500 1200 images/s\n"
        "finished run=r1\n"
    )
    assert bar_half == "[" + "#" * 12 + "-" * 12 + "]"


def test_json_lines_never_draw_a_bar_even_on_a_terminal() -> None:
    stream = FakeTerminal()
    reporter = Reporter(log_format="json", stream=stream, live=True)
    reporter.record(STEP, epochs=2, steps_per_epoch=200, eta_seconds=65)
    reporter.warning("skipped model diagram")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "step" and first["step"] == 100 and first["eta_seconds"] == 65
    # Cloud Logging's fields: severity, and as message the line text mode prints.
    assert (
        first["severity"] == "INFO"
        and first["message"] == "epoch 1/2 step 100/200 loss 1.5000 1234 images/s eta 0:01:05"
    )
    assert second["event"] == "warning" and second["message"] == "skipped model diagram"
    assert second["severity"] == "WARNING"


def test_a_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    assert not is_terminal(FakeTerminal())
    monkeypatch.setenv("TERM", "xterm-256color")
    assert is_terminal(FakeTerminal()) and not is_terminal(io.StringIO())


def test_warnings_are_plain_lines() -> None:
    stream = io.StringIO()
    Reporter(stream=stream).warning("skipped sample grid: ValueError: bad")
    assert stream.getvalue() == "warning: skipped sample grid: ValueError: bad\n"
