"""`python -m job runs list|show`: browse run folders, local or gs://, without importing TensorFlow.

    python -m job runs list gs://my-bucket/runs
    python -m job runs list              # $JOB_OUTPUT, else ./runs: where `train` writes by default
    python -m job runs show gs://my-bucket/runs/symbolic-fit-20261126T153000Z-3f9a --json

A run is complete exactly when its summary.json exists (the trainer publishes it last, create-only);
anything else is incomplete: still training, or stopped before publishing. A location that holds no
run (no config.json, metrics.jsonl or summary.json) is an output error: exit 4, like a missing bucket.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from job import metrics
from job.artifacts import CONFIG, METRICS, SUMMARY, parse_json
from job.config import DEFAULT_OUTPUT
from job.errors import OutputError
from job.storage import Store, open_store

RUN_FILES = (CONFIG, METRICS, SUMMARY)
EPOCH_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy")
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")]


@dataclass(frozen=True)
class Run:
    """What the three small files of one run folder say about it."""

    run_id: str
    url: str
    config: dict[str, Any]
    summary: dict[str, Any] | None
    epochs: Sequence[Mapping[str, Any]]  # The last record per epoch, in epoch order.
    steps: int  # Custom-loop step records.

    @property
    def status(self) -> str:
        return "complete" if self.summary is not None else "incomplete"

    def overview(self) -> dict[str, Any]:
        """The `runs list` row, as JSON values."""
        summary = self.summary or {}
        return {
            "run_id": self.run_id,
            "url": self.url,
            "status": self.status,
            "api": self.config.get("api"),
            "loop": self.config.get("loop"),
            "epochs_done": len(self.epochs),
            "epochs_planned": self.config.get("epochs"),
            "test_accuracy": summary.get("test_accuracy"),
            "test_loss": summary.get("test_loss"),
            "completed_at": summary.get("completed_at"),
            "label": self.config.get("label") or None,
        }


def read_run(store: Store) -> Run | None:
    """The run stored at `store` (its id: the folder's name), or None when none of its files exist."""
    raw = {name: store.read_bytes(name) for name in RUN_FILES}
    if all(content is None for content in raw.values()):
        return None
    records, _ = metrics.decode(raw[METRICS] or b"")  # A half-written last line is skipped.
    run_id = store.url.rstrip("/").rsplit("/", 1)[-1]
    epochs, steps = metrics.last_records(records, "epoch"), sum(record["kind"] == "step" for record in records)
    return Run(run_id, store.url, parse_json(raw[CONFIG]) or {}, parse_json(raw[SUMMARY]), epochs, steps)


def find_runs(location: str) -> list[Run]:
    """Every run directly below location (or location itself, if it is a run folder)."""
    store = open_store(location)
    if not store.is_listable():
        raise OutputError(
            f"{Path(location).expanduser()} does not exist or is not a folder: "
            "pass a local runs folder or gs://BUCKET/PREFIX"
        )
    # The sub-folders holding a run file, listed two levels deep: checkpoints and models are not walked.
    keys = (key.split("/") for key in store.list_keys(depth=2))
    run_ids = sorted({parts[0] for parts in keys if len(parts) == 2 and parts[1] in RUN_FILES})
    stores = [store.child(run_id) for run_id in run_ids] or [store]
    with ThreadPoolExecutor(max_workers=8) as pool:  # Three small reads per run; gs:// latency adds up.
        return [run for run in pool.map(read_run, stores) if run is not None]


def format_table(rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def format_number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def list_runs(
    location: Annotated[
        str,
        typer.Argument(
            envvar="JOB_OUTPUT",
            help=f"A local runs folder or gs://BUCKET/PREFIX (what --output was; default: $JOB_OUTPUT, else {DEFAULT_OUTPUT}).",
        ),
    ] = DEFAULT_OUTPUT,
    json_output: JsonOption = False,
) -> None:
    """List the runs under LOCATION (default: where `train` writes): complete or incomplete, epochs, test accuracy."""
    runs = find_runs(location)
    if json_output:
        typer.echo(json.dumps([run.overview() for run in runs], indent=2))
        return
    if not runs:
        typer.echo(f"no runs under {location}")
        return
    labelled = any(run.config.get("label") for run in runs)  # A LABEL column (train --label) when a run has one.
    rows = [["RUN ID", "STATUS", "API", "LOOP", "EPOCHS", "TEST ACC", "FINISHED", *(["LABEL"] if labelled else [])]]
    for run in runs:
        row = run.overview()
        epochs = f"{row['epochs_done']}/{row['epochs_planned'] if row['epochs_planned'] is not None else '?'}"
        api, loop, finished = (str(row[key] or "-") for key in ("api", "loop", "completed_at"))
        label = [row["label"] or "-"] if labelled else []
        rows.append([run.run_id, run.status, api, loop, epochs, format_number(row["test_accuracy"]), finished, *label])
    typer.echo(format_table(rows))


def show_run(
    run: Annotated[str, typer.Argument(help="A run folder: a local path or gs://BUCKET/PREFIX/RUN_ID.")],
    json_output: JsonOption = False,
) -> None:
    """Show one run: whether it completed, its summary and its per-epoch metrics (exit 4 if no run is there)."""
    store = open_store(run)
    found = read_run(store)
    if found is None:
        raise OutputError(
            f"no run at {store.url}: it has no {', '.join(RUN_FILES)} (list runs with `runs list PARENT`)"
        )
    if json_output:
        payload = {**found.overview(), "config": found.config, "summary": found.summary, "epochs": found.epochs}
        typer.echo(json.dumps({**payload, "steps": found.steps}, indent=2))
        return
    typer.echo(format_details(found))


def format_details(run: Run) -> str:
    """The `runs show` text: a header of facts, then one line per epoch."""
    status = "complete" if run.summary is not None else "incomplete (no summary.json: still training, or stopped)"
    steps = f", {run.steps} step records" if run.steps else ""
    facts = [
        ["run", run.run_id],
        ["location", run.url],
        ["status", status],
        ["variant", f"api={run.config.get('api', '-')} loop={run.config.get('loop', '-')}"],
        ["epochs", f"{len(run.epochs)} of {run.config.get('epochs', '?')}{steps}"],
    ]
    if (summary := run.summary) is not None:
        accuracy, loss = format_number(summary.get("test_accuracy")), format_number(summary.get("test_loss"))
        speed = format_number(summary.get("train_images_per_second"), 0)
        parameters = summary.get("parameters")
        facts += [
            ["test", f"accuracy {accuracy}, loss {loss}"],
            ["speed", f"{speed} train images/s, wall {format_number(summary.get('wall_seconds'), 1)} s"],
            ["parameters", f"{parameters:,}" if isinstance(parameters, int) else "-"],
            ["finished", str(summary.get("completed_at", "-"))],
        ]
    text = format_table(facts)
    if run.epochs:
        rows = [["EPOCH", *(column.upper() for column in EPOCH_COLUMNS)]]
        for record in run.epochs:
            rows.append([str(record["epoch"]), *(format_number(record.get(column)) for column in EPOCH_COLUMNS)])
        text += "\n\n" + format_table(rows)
    return text


def register(app: typer.Typer) -> None:
    """Add the `runs` commands to the CLI."""
    runs_app = typer.Typer(
        help="Browse runs (local or gs://): complete vs incomplete, final metrics.",
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
    )
    runs_app.command("list")(list_runs)
    runs_app.command("show")(show_run)
    app.add_typer(runs_app, name="runs")
