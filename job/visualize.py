"""`python -m job inspect` and `python -m job compare`: look at the data without training, and compare runs.

    python -m job inspect --data cifar-10-python.tar.gz --output inspect
    python -m job compare runs/symbolic-fit-… runs/imperative-custom-… --output comparison
    python -m job compare gs://my-bucket/runs --output gs://my-bucket/comparisons/today

`inspect` writes label_distribution.png, sample_grid.png and data.json (the label counts). `compare`
prints one row per run (a run folder, or a folder of runs, local or gs://), and writes the same table
as comparison.md next to val_accuracy.png, which overlays the runs' validation-accuracy curves.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from job.errors import OutputError
from job.runs import JsonOption, Run, find_runs, format_number, format_table
from job.storage import open_store

COMPARISON_TABLE = "comparison.md"
COMPARISON_PLOT = "val_accuracy.png"
DATA_JSON = "data.json"
SAMPLE_SEED = 2  # Equals plots.SAMPLE_SEED; job.plots imports numpy, which `--help` should not wait for.
HEADERS = ("run", "api", "loop", "params", "epochs", "val acc", "test acc", "wall s", "images/s")


@contextmanager
def output_folder(location: str) -> Iterator[Path]:
    """A local folder to write into: the folder itself, or for gs:// a temporary one uploaded at the end."""
    store = open_store(location)
    store.check_writable()
    with tempfile.TemporaryDirectory(prefix="cifar10-job-") as temporary:
        folder = store.staging(Path(temporary))
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        store.upload_tree("", folder)  # Nothing to copy when the folder is the output itself.


def inspect(
    data: Annotated[
        str | None,
        typer.Option(
            envvar="JOB_DATA", help="Like train --data: a tarball, folder, .npz or gs:// (default: download)."
        ),
    ] = None,
    output: Annotated[str, typer.Option(help="Folder or gs://BUCKET/PREFIX for the plots and data.json.")] = "inspect",
    seed: Annotated[int, typer.Option(help="random.sample seed for the 25 images (the chapter's 2).")] = SAMPLE_SEED,
) -> None:
    """Look at the data without training: label counts (balanced or not) and 25 sample images."""
    from job import plots
    from job.data import load
    from job.run_record import describe_data  # As in config.json's "data" block, without the run's split.

    dataset = load(data)
    described = describe_data(dataset)
    train, test = described["train_label_counts"], described["test_label_counts"]
    with output_folder(output) as folder:
        (folder / DATA_JSON).write_text(json.dumps(described, indent=2) + "\n")
        plots.plot_label_distribution(train, test, folder / plots.LABEL_DISTRIBUTION)
        plots.plot_sample_grid(dataset.x_train, dataset.y_train, folder / plots.SAMPLE_GRID, seed)
    rows = [["CLASS", "TRAIN", "TEST"], *([name, str(train[name]), str(test[name])] for name in train)]
    typer.echo(f"{dataset.source}: {described['train_size']} train and {described['test_size']} test images")
    typer.echo(format_table(rows))
    typer.echo(f"train: {plots.describe_balance(train)}\ntest: {plots.describe_balance(test)}")
    typer.echo(f"wrote {DATA_JSON}, {plots.LABEL_DISTRIBUTION} and {plots.SAMPLE_GRID} to {open_store(output).url}")


def comparison_row(run: Run) -> dict[str, Any]:
    """One run's numbers: from summary.json when complete, else what config.json and metrics.jsonl say."""
    summary = run.summary or {}
    last_epoch = run.epochs[-1] if run.epochs else {}
    return {
        "run": run.run_id,
        "url": run.url,
        "status": run.status,
        "api": run.config.get("api"),
        "loop": run.config.get("loop"),
        "params": summary.get("parameters", run.config.get("parameters")),
        "epochs": len(run.epochs),
        "val_accuracy": summary.get("val_accuracy", last_epoch.get("val_accuracy")),
        "test_accuracy": summary.get("test_accuracy"),
        "wall_seconds": summary.get("wall_seconds"),
        "images_per_s": summary.get("train_images_per_second"),
    }


def format_cells(row: dict[str, Any]) -> list[str]:
    params = row["params"]
    return [
        *(str(row[key] if row[key] is not None else "-") for key in ("run", "api", "loop")),
        f"{params:,}" if isinstance(params, int) else "-",
        str(row["epochs"]),
        format_number(row["val_accuracy"]),
        format_number(row["test_accuracy"]),
        format_number(row["wall_seconds"], 1),
        format_number(row["images_per_s"], 0),
    ]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(format_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def collect_runs(locations: list[str]) -> list[Run]:
    """Every run at or directly below each location, each once (exit 4 for a location without runs)."""
    found: dict[str, Run] = {}
    for location in locations:
        runs = find_runs(location)
        if not runs:
            raise OutputError(f"no run at {location}: pass run folders, or a folder of runs (see `runs list`)")
        found.update((run.url, run) for run in runs)
    return list(found.values())


def compare(
    runs: Annotated[list[str], typer.Argument(help="Run folders, or folders of runs: local paths or gs://.")],
    output: Annotated[
        str, typer.Option(help=f"Folder or gs://BUCKET/PREFIX for {COMPARISON_TABLE} and {COMPARISON_PLOT}.")
    ] = "comparison",
    json_output: JsonOption = False,
) -> None:
    """Compare runs: api, loop, params, epochs, final val/test accuracy, wall time, images/s, and the curves."""
    from job import plots

    found = collect_runs(runs)
    rows = [comparison_row(run) for run in found]
    curves = {f"{row['run']} ({row['api']}, {row['loop']})": run.epochs for run, row in zip(found, rows, strict=True)}
    with output_folder(output) as folder:
        text = f"# Run comparison\n\n{markdown_table(rows)}\n![validation accuracy per epoch]({COMPARISON_PLOT})\n"
        (folder / COMPARISON_TABLE).write_text(text)
        plots.plot_compare(curves, folder / COMPARISON_PLOT)
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(format_table([[header.upper() for header in HEADERS], *map(format_cells, rows)]))
    typer.echo(f"wrote {COMPARISON_TABLE} and {COMPARISON_PLOT} to {open_store(output).url}")


def register(app: typer.Typer) -> None:
    """Add `inspect` and `compare` to the CLI."""
    app.command("inspect")(inspect)
    app.command("compare")(compare)
