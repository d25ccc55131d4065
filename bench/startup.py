"""Start-up: process start to the first training step of `python -m job train`, and where each second goes.

    .venv/bin/python bench/startup.py                       # real CIFAR-10 from the local tarball, 3 repeats
    .venv/bin/python bench/startup.py --repeats 5 --loops fit,custom --baseline 0056702

Each repeat starts a fresh `python -m job train` (the real CLI, default flags, a local output folder) through a
thin wrapper that timestamps the job's own functions as they run: job.cli imported, preflight (reading and
decoding the data), `import job.train` (TensorFlow and Keras), device detection, the splits (the training set
as a tensor), the model, the data plots (revisions before 2026-12-03 drew them before training), then the loop until its first call into TensorFlow returns (the
first `steps_per_execution` steps: tracing plus those steps) and the second (the same number of steps,
traced). "first step" subtracts the steady steps of the first call from it. The wrapper stops the process
there (os._exit), so a repeat costs start-up only. The same wrapper times the chapter's code
(bench/reference.py, `model.fit` without steps_per_execution: its first batch).

`--baseline REV` also runs the trainer of git revision REV (exported with `git archive` into a temporary
folder: the shared working tree is not touched), alternating with the current one, so the ratio comes from
neighbouring runs on this shared machine. A separate in-process measurement splits reading the data into
inflating the gzip stream and decoding (pickles → NHWC arrays). Writes bench/results/startup.{json,md};
never a test (the numbers are this machine's).
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
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "cifar10" / "cifar-10-python.tar.gz"
RESULTS = ROOT / "bench" / "results"
MARKS_ENV = "STARTUP_MARKS"  # The child writes its timeline (JSON) here.
SPAWN_ENV = "STARTUP_SPAWNED_AT"  # time.time() just before the parent started the child.

# (phase, the mark it ends at): each phase runs from the previous mark to its own.
PHASES = (
    ("python, job.cli imported", "cli_imported"),
    ("preflight: output checks, data read and decoded", "preflight_done"),
    ("import TensorFlow + Keras (job.train)", "train_imported"),
    ("devices, strategy, seeds", "devices_done"),
    ("training set to a tensor, tf.data splits", "splits_done"),
    ("model and optimizer built, checkpoint, config.json", "model_done"),
    ("data plots (sample grid, label counts)", "plots_done"),
    ("tensorboard hparams, loop set-up, tracing, first step", "first_step"),
)
REFERENCE_PHASES = (
    ("python, import TensorFlow + Keras", "train_imported"),
    ("data read and decoded (the project's loader)", "preflight_done"),
    ("float32 copies, tf.data, model built and compiled", "model_done"),
    ("fit set-up, tracing, first step", "first_step"),
)


# ----------------------------------------------------------------------------------------------- the child


def child(argv: list[str]) -> None:
    """Run `python -m job <argv>` (or bench/reference.py) in this process with timestamps; exit after 2 calls."""
    marks: dict[str, float] = {"spawned": float(os.environ[SPAWN_ENV]), "child_started": time.time()}
    calls: list[float] = []

    def mark(name: str) -> None:
        marks.setdefault(name, time.time())

    def finish() -> None:
        Path(os.environ[MARKS_ENV]).write_text(json.dumps({"marks": marks, "calls": calls}))
        os._exit(0)  # Start-up is measured: skip the rest of training.

    def on_call_returned() -> None:
        calls.append(time.time())
        if len(calls) == 2:
            finish()

    if argv and argv[0] == "reference":
        _run_reference(argv[1:], mark, on_call_returned)
        return
    sys.path.insert(0, str(Path.cwd()))  # The revision under test (this checkout or --baseline's export).
    from job import cli, preflight  # Neither imports TensorFlow.

    mark("cli_imported")
    wrap(preflight, "preflight", after=lambda: mark("preflight_done"))

    import builtins

    original_import = builtins.__import__

    def on_train_imported() -> None:
        mark("train_imported")  # First: the imports below come back through hooked_import.
        train_module = sys.modules["job.train"]
        from job import devices, plots

        wrap(devices, "detect", after=lambda: mark("devices_done"))
        wrap(plots, "write_data_plots", after=lambda: mark("plots_done"))
        wrap(train_module, "make_splits", after=lambda: mark("splits_done"))
        wrap(train_module, "Checkpointer", after=lambda: mark("model_done"))
        from job import monitor

        wrap(monitor.Monitor, "step_end", after=on_call_returned)

    def hooked_import(name: str, *args: Any, **kwargs: Any) -> Any:
        module = original_import(name, *args, **kwargs)
        if name == "job.train" and "train_imported" not in marks:
            on_train_imported()
        return module

    builtins.__import__ = hooked_import
    sys.argv = ["python -m job", *argv]
    code = cli.main(argv)
    finish() if code == 0 else sys.exit(code)


def _run_reference(argv: list[str], mark: Callable[[str], None], on_call_returned: Callable[[], None]) -> None:
    """The chapter's code with the same marks: TensorFlow imported, data read, first batches."""
    import runpy

    sys.argv = ["bench/reference.py", *argv]
    sys.path.insert(0, str(ROOT))
    import tensorflow as tf  # The reference imports it first thing; timing it here is the same work.

    mark("train_imported")
    from job import data

    wrap(data, "load", after=lambda: mark("preflight_done"))
    original_fit = tf.keras.Model.fit

    def fit(model: Any, *args: Any, **kwargs: Any) -> Any:
        mark("model_done")

        class FirstCalls(tf.keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                on_call_returned()

        kwargs["callbacks"] = [*kwargs.get("callbacks", []), FirstCalls()]
        return original_fit(model, *args, **kwargs)

    tf.keras.Model.fit = fit
    runpy.run_path(str(ROOT / "bench" / "reference.py"), run_name="__main__")


def wrap(owner: Any, name: str, after: Callable[[], None], before: Callable[[], None] | None = None) -> None:
    """Replace owner.name with a function that calls `before()`, it, then `after()`."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before()
        result = original(*args, **kwargs)
        after()
        return result

    setattr(owner, name, wrapper)


# ---------------------------------------------------------------------------------------------- the parent


def one_run(source: Path, argv: list[str], scratch: Path) -> dict[str, Any]:
    """One fresh process; its marks as seconds since the parent spawned it."""
    marks_file = scratch / f"marks-{time.monotonic_ns()}.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", MARKS_ENV: str(marks_file), "PYTHONPATH": str(source)}
    env[SPAWN_ENV] = repr(time.time())
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *argv]
    result = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not marks_file.exists():
        raise RuntimeError(f"{' '.join(argv)} in {source} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    timeline = json.loads(marks_file.read_text())
    spawned = timeline["marks"]["spawned"]
    marks = {name: at - spawned for name, at in timeline["marks"].items()}
    first, second = (at - spawned for at in timeline["calls"])
    return {"marks": marks, "first_call": first, "second_call": second}


def train_argv(data: Path, loop: str, scratch: Path, tag: str) -> list[str]:
    return ["train", "--loop", loop, "--data", str(data), "--output", str(scratch / "runs"), "--run-id", tag]


def phases(run: dict[str, Any], steps_per_call: int, names: tuple[tuple[str, str], ...] = PHASES) -> dict[str, float]:
    """Seconds per phase; the first step is the first call less the steady time of its other steps."""
    marks = dict(run["marks"])
    steady_call = run["second_call"] - run["first_call"]
    marks["first_step"] = run["first_call"] - steady_call * (steps_per_call - 1) / steps_per_call
    result, previous = {}, 0.0
    for phase, name in names:
        if name in marks:
            result[phase] = marks[name] - previous
            previous = marks[name]
    result["total: process start to first step"] = marks["first_step"]
    result["steady step (for reference)"] = steady_call / steps_per_call
    return result


def median_table(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        model = names[0] if names else model
        flags = set(cpuinfo.read_text().split())
        extras = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
        model += f" ({', '.join(extras) if extras else 'AVX2, no AVX-512'})"
    return f"{model}, {os.cpu_count()} cores"


def read_breakdown(data: Path, repeats: int) -> dict[str, float]:
    """In-process, best of `repeats`: inflating the gzip stream alone with zlib (what Python's tarfile uses) and
    zlib-ng (what job.data uses), and the whole load (inflate + tar + decode)."""
    sys.path.insert(0, str(ROOT))
    from zlib_ng import zlib_ng

    from job import data as data_module

    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, library in (("inflate gzip stream, zlib", zlib), ("inflate gzip stream, zlib-ng", zlib_ng)):
            started = time.perf_counter()
            with data.open("rb") as stream:
                inflater = library.decompressobj(wbits=31)  # gzip
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    inflater.decompress(chunk)
            times.setdefault(name, []).append(time.perf_counter() - started)
        started = time.perf_counter()
        data_module.load(str(data))
        times.setdefault("whole load (inflate + tar + decode)", []).append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def save_results(name: str, result: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> None:
    """bench/results/NAME.json and NAME.md (the table `render` makes), and the table on stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(render(result))
    print(render(result))


def export_revision(revision: str, folder: Path, repository: Path = ROOT) -> Path:
    """`git archive REV` into folder: the trainer as it was, without touching the shared working tree."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision], cwd=repository, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def markdown(result: dict[str, Any]) -> str:
    columns = list(result["tables"])
    lines = [
        "| phase (seconds, median) | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    keys: list[str] = []
    for table in result["tables"].values():
        keys += [key for key in table if key not in keys]
    keys.sort(key=lambda key: key.startswith(("total", "steady")))  # Stable: phases in order, then the totals.
    for key in keys:
        cells = [f"{table[key]:.2f}" if key in table else "" for table in result["tables"].values()]
        bold = key.startswith("total")
        lines.append(f"| {'**' + key + '**' if bold else key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Machine: {result['machine']}; {result['date']}; {result['repeats']} repeat(s), medians; load average "
        f"{result['load_average']:.1f} at the end (other processes share the cores).",
    ]
    lines.append(f"Data: {result['data']}.")
    for name, ratio in result.get("ratios", {}).items():
        lines.append(f"{name}: {ratio:.2f}× (median of neighbouring-run ratios).")
    breakdown = result.get("read_breakdown")
    if breakdown:
        lines.append(
            "Reading the data in-process (best of 3): "
            + ", ".join(f"{key} {value:.2f} s" for key, value in breakdown.items())
            + "."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loops", default="fit", help="comma-separated: fit,custom")
    parser.add_argument("--baseline", default="", help="a git revision to time alongside (git archive)")
    parser.add_argument("--repository", type=Path, default=ROOT, help="where --baseline is read from")
    parser.add_argument("--no-reference", action="store_true", help="skip the chapter's code")
    parser.add_argument("--name", default="startup", help="results file name (bench/results/NAME.{json,md})")
    arguments = parser.parse_args()
    loops = [loop for loop in arguments.loops.split(",") if loop]
    with tempfile.TemporaryDirectory(prefix="startup-") as folder:
        scratch = Path(folder)
        sources = {"this checkout": ROOT}
        if arguments.baseline:
            sources[f"baseline {arguments.baseline}"] = export_revision(
                arguments.baseline, scratch / "baseline", arguments.repository
            )
        runs: dict[str, list[dict[str, float]]] = {}
        for repeat in range(arguments.repeats):
            for loop in loops:
                for label, source in sources.items():
                    column = f"{label}, {loop}"
                    print(f"repeat {repeat + 1}/{arguments.repeats}: {column}", file=sys.stderr, flush=True)
                    argv = train_argv(arguments.data, loop, scratch, f"{loop}-{repeat}-{len(runs.get(column, []))}")
                    runs.setdefault(column, []).append(phases(one_run(source, argv, scratch), 10))
            if not arguments.no_reference:
                print(f"repeat {repeat + 1}/{arguments.repeats}: reference", file=sys.stderr, flush=True)
                argv = ["reference", "--data", str(arguments.data), "--epochs", "1"]
                runs.setdefault("chapter's code (reference.py)", []).append(
                    phases(one_run(ROOT, argv, scratch), 1, REFERENCE_PHASES)
                )
        ratios = {}
        total = "total: process start to first step"
        for column in runs:
            if column.startswith("this checkout"):
                for other in runs:
                    if other != column and not other.startswith("this checkout") and other.endswith(column[-4:]):
                        pairs = zip(runs[column], runs[other], strict=False)
                        ratios[f"{other} / {column}, to first step"] = statistics.median(
                            theirs[total] / ours[total] for ours, theirs in pairs
                        )
        result = {
            "machine": machine(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "data": str(arguments.data),
            "repeats": arguments.repeats,
            "tables": {column: median_table(column_runs) for column, column_runs in runs.items()},
            "runs": runs,
            "ratios": ratios,
            "load_average": os.getloadavg()[0],
        }
        if arguments.data.name.endswith(".tar.gz"):
            result["read_breakdown"] = read_breakdown(arguments.data, 3)
    save_results(arguments.name, result, markdown)


if __name__ == "__main__":
    child(sys.argv[2:]) if sys.argv[1:2] == ["--child"] else main()  # A measured run, or the measurement.
