"""Publish latency: from the last training step to summary.json of `python -m job train`, and where it goes.

    .venv/bin/python bench/publish_latency.py                    # local and gs:// (a local fake GCS server), 3 each
    .venv/bin/python bench/publish_latency.py --outputs local --repeats 5

Each repeat is a fresh `python -m job train` (default flags, 2 epochs) on generated data with the real test
set's size (10,000 images, so the test evaluation costs what it costs on CIFAR-10) and 2,000 training
images (so the epoch is short), through the same kind of wrapper as bench/startup.py: it timestamps the
last training step, the end of the loop (last validation, checkpoint, records), the start of publishing
(after the test evaluation), the SavedModel export, model.keras, the data plots and the run plots, the model card, the
uploads and summary.json. gs:// goes to fake-gcs-server on this machine (tests/gcs_fixtures.py): an upload
costs the client's time, not a real network's. Writes bench/results/publish-latency.{json,md}; never a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # Run as a script from anywhere.

from bench.startup import machine, save_results, wrap  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MARKS_ENV = "PUBLISH_MARKS"
PHASES = (
    ("last epoch's validation, checkpoint and records", "loop_done"),
    ("test evaluation (test[500:])", "publish_started"),
    ("SavedModel export", "export_done"),
    ("model.keras", "save_done"),
    ("data plots (label counts, sample grid)", "data_plots_done"),
    ("run plots (summary, diagram, learning curves)", "plots_done"),
    ("model card", "card_done"),
    ("uploads (tensorboard, model, model.keras, plots)", "uploads_done"),
    ("summary.json", "summary_done"),
)


def child(argv: list[str]) -> None:
    """`python -m job <argv>` in this process, with the marks written at exit."""
    marks: dict[str, float] = {}

    def mark(name: str) -> Any:
        return lambda: marks.__setitem__(name, time.perf_counter())

    from job import cli

    cli.import_trainer()  # As the CLI loads TensorFlow and Keras: matplotlib only when the pictures are drawn.
    import keras

    import job.train as train_module  # The marks need its functions; importing it here moves no measured time.
    from job import monitor, plots
    from job.artifacts import RunWriter

    wrap(monitor.Monitor, "step_end", after=mark("last_step"))  # The last call wins.
    wrap(train_module.Trainee, "train", after=mark("loop_done"))
    wrap(train_module, "publish", before=mark("publish_started"), after=mark("finished"))
    wrap(keras.Model, "export", after=mark("export_done"))
    wrap(keras.Model, "save", after=mark("save_done"))
    wrap(plots, "write_data_plots", after=mark("data_plots_done"))  # Drawn before training until 2026-12-03.
    wrap(plots, "write_run_plots", after=mark("plots_done"))
    wrap(train_module, "write_model_card", after=mark("card_done"))
    wrap(RunWriter, "publish_summary", before=mark("uploads_done"), after=mark("summary_done"))
    code = cli.main(argv)
    Path(os.environ[MARKS_ENV]).write_text(json.dumps(marks))
    sys.exit(code)


def one_run(data: Path, output: str, run_id: str, scratch: Path, env: dict[str, str]) -> dict[str, float]:
    marks_file = scratch / f"{run_id}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "train", "--data", str(data)]
    command += ["--output", output, "--run-id", run_id, "--epochs", "2"]  # The last epoch: traced already.
    environment = {**env, "TF_CPP_MIN_LOG_LEVEL": "2", MARKS_ENV: str(marks_file), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{run_id} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    marks = json.loads(marks_file.read_text())
    seconds, previous = {}, marks["last_step"]
    for phase, name in PHASES:
        seconds[phase] = marks[name] - previous
        previous = marks[name]
    seconds["total: last step to summary.json"] = marks["summary_done"] - marks["last_step"]
    seconds["of which publishing (export to summary.json)"] = marks["summary_done"] - marks["publish_started"]
    return seconds


def markdown(result: dict[str, Any]) -> str:
    columns = list(result["tables"])
    lines = ["| phase (seconds, median) | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for key in next(iter(result["tables"].values())):
        cells = " | ".join(f"{result['tables'][column][key]:.2f}" for column in columns)
        lines.append(f"| {'**' + key + '**' if key.startswith('total') else key} | {cells} |")
    lines += [
        "",
        f"Machine: {result['machine']}; {result['date']}; {result['repeats']} repeat(s), medians; 2 epochs of "
        f"{result['train_images']:,} generated training images, {result['test_images']:,} test images; load average "
        f"{result['load_average']:.1f} at the end (other processes share the cores).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--outputs", default="local,gcs", help="comma-separated: local,gcs")
    parser.add_argument("--name", default="publish-latency")
    arguments = parser.parse_args()
    from tests.gcs_fixtures import start_fake_gcs_server, stop_fake_gcs_server
    from tests.helpers import job_env, make_cifar_like, write_tarball

    train_images, test_images = 2_000, 10_000
    outputs = [kind for kind in arguments.outputs.split(",") if kind]
    server = start_fake_gcs_server() if "gcs" in outputs else None
    env = job_env({"STORAGE_EMULATOR_HOST": server.url} if server else None)
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in outputs}
    try:
        with tempfile.TemporaryDirectory(prefix="publish-") as folder:
            scratch = Path(folder)
            data = scratch / "cifar-10-python.tar.gz"
            write_tarball(make_cifar_like(train_images, test_images), data)
            bucket = server.create_bucket() if server else ""
            for repeat in range(arguments.repeats):
                for kind in outputs:
                    print(f"repeat {repeat + 1}/{arguments.repeats}: {kind}", file=sys.stderr, flush=True)
                    output = f"gs://{bucket}/runs" if kind == "gcs" else str(scratch / "runs")
                    runs[kind].append(one_run(data, output, f"{kind}-{repeat}", scratch, env))
    finally:
        if server is not None:
            stop_fake_gcs_server(server)
    result = {
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "repeats": arguments.repeats,
        "train_images": train_images,
        "test_images": test_images,
        "tables": {
            ("local folder" if kind == "local" else "gs:// (fake-gcs-server)"): {
                key: statistics.median(run[key] for run in kind_runs) for key in kind_runs[0]
            }
            for kind, kind_runs in runs.items()
        },
        "runs": runs,
        "load_average": os.getloadavg()[0],
    }
    save_results(arguments.name, result, markdown)


if __name__ == "__main__":
    child(sys.argv[2:]) if sys.argv[1:2] == ["--child"] else main()  # A measured run, or the measurement.
