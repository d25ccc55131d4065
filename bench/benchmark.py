"""Benchmark: the chapter's own code (bench/reference.py) against our trainer, side by side in one run.

    make bench                                               # 5 epochs, 1 repeat, all five variants
    .venv/bin/python bench/benchmark.py --epochs 5 --repeats 2 --variants reference,symbolic-fit

Every variant trains in its own subprocess (a fresh TensorFlow), round-robin, so drift in a shared
machine's speed hits all of them alike; ratios to the reference come from neighbouring runs. Per variant
it reports steady-state train images/s (epochs after the first, whose time includes tracing), the time to
60% validation accuracy, the final test accuracy on test[500:], the fraction of step time spent waiting
for input, and the achieved GFLOP/s against this machine's 4096² matmul peak (bench/matmul_peak.py, at the
start and the end of the same run, the faster of the two). It also times `python -m job --help` and
`train --help`. Results go to bench/results/latest.json and latest.md. Without
../shared/data/cifar10/cifar-10-python.tar.gz it trains on generated data and marks the accuracy columns n/a.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar10" / "cifar-10-python.tar.gz"
RESULTS = ROOT / "bench" / "results"
REFERENCE = "reference"
VARIANTS = (REFERENCE, "symbolic-fit", "symbolic-custom", "imperative-fit", "imperative-custom")
TARGET_VAL_ACCURACY = 0.60
HELP_COMMANDS = {"--help": ["--help"], "train --help": ["train", "--help"]}

# Forward FLOPs per 32×32 image, counted by hand: conv 2·H·W·k²·Cin·Cout ('same' padding), dense 2·in·out.
CONV1 = 2 * 32 * 32 * 9 * 3 * 32
CONV2 = 2 * 16 * 16 * 9 * 32 * 64
DENSES = 2 * 8 * 8 * 64 * 256 + 2 * 256 * 10
# Training = forward + input gradients + weight gradients (3× forward), except that nothing needs the
# gradient of the input image, so the first conv costs 2× its forward. Pooling, ReLU and softmax are ignored.
TRAIN_FLOPS_PER_IMAGE = 2 * CONV1 + 3 * (CONV2 + DENSES)

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}


def run_quiet(command: list[str]) -> str:
    """Run a command, fail loudly with its stderr tail, return its stdout."""
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def time_help(repeats: int = 5) -> dict[str, float]:
    """Best-of-N wall time of `python -m job --help` and `python -m job train --help`."""
    best = {}
    for name, arguments in HELP_COMMANDS.items():
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run_quiet([sys.executable, "-m", "job", *arguments])
            times.append(time.perf_counter() - started)
        best[name] = min(times)
    return best


def matmul_peak() -> dict[str, float]:
    """float32 and bfloat16 4096² matmul GFLOP/s, in a fresh process (bench/matmul_peak.py)."""
    return dict(json.loads(run_quiet([sys.executable, "bench/matmul_peak.py"])))


def train_variant(variant: str, data: Path, epochs: int, scratch: Path, tag: str) -> dict[str, Any]:
    """One full training run in a subprocess: per-epoch records and the final test accuracy."""
    if variant == REFERENCE:
        command = [sys.executable, "bench/reference.py", "--data", str(data), "--epochs", str(epochs)]
        lines = [json.loads(line) for line in run_quiet(command).splitlines() if line.startswith("{")]
        return {"epochs": [line for line in lines if "epoch" in line], "test_accuracy": lines[-1]["test_accuracy"]}
    api, loop = variant.split("-")
    run_id = f"{variant}-{tag}"
    command = [sys.executable, "-m", "job", "train", "--api", api, "--loop", loop, "--data", str(data)]
    run_quiet([*command, "--output", str(scratch), "--run-id", run_id, "--epochs", str(epochs)])
    run_dir = scratch / run_id
    from job.metrics import decode

    metrics, _ = decode((run_dir / "metrics.jsonl").read_bytes())
    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "epochs": [record for record in metrics if record["kind"] == "epoch"],
        "test_accuracy": summary["test_accuracy"],
        "precision": config["precision"],
        "xla": config["xla"],
    }


def steady_images_per_second(run: dict[str, Any]) -> float:
    """Mean images/s over the epochs after the first (the first includes tracing)."""
    epochs = run["epochs"][1:] or run["epochs"]
    return statistics.mean(record["images_per_second"] for record in epochs)


def best_epoch_images_per_second(runs: list[dict[str, Any]]) -> float:
    """The fastest steady epoch over all repeats: the least disturbed by other processes on the machine."""
    return max(record["images_per_second"] for run in runs for record in run["epochs"][1:] or run["epochs"])


def seconds_to_accuracy(run: dict[str, Any], target: float = TARGET_VAL_ACCURACY) -> float | None:
    """Training plus validation seconds until the first epoch with val_accuracy ≥ target (None: never)."""
    elapsed = 0.0
    for record in run["epochs"]:
        elapsed += record["seconds"]
        if record["val_accuracy"] >= target:
            return elapsed
    return None


def probe_variant(variant: str, data: Path) -> dict[str, Any]:
    """Step time with the real input pipeline vs the same step fed one batch from memory (bench/probe.py)."""
    output = run_quiet([sys.executable, "bench/probe.py", "--variant", variant, "--data", str(data)])
    return dict(json.loads(output.strip().splitlines()[-1]))


def summarise(variant: str, runs: list[dict[str, Any]], ratios: list[float], probe: dict[str, Any]) -> dict[str, Any]:
    """One table row: medians over repeats, FLOP rates from the steady images/s."""
    speed = statistics.median(steady_images_per_second(run) for run in runs)
    to_target = [seconds_to_accuracy(run) for run in runs]
    reached = [seconds for seconds in to_target if seconds is not None]
    return {
        "variant": variant,
        "precision": runs[0].get("precision", "float32"),
        "xla": runs[0].get("xla", False),
        "train_images_per_second": speed,
        "vs_reference": statistics.median(ratios) if ratios else None,
        "seconds_to_60_val": statistics.median(reached) if len(reached) == len(runs) else None,
        "test_accuracy": statistics.median(run["test_accuracy"] for run in runs),
        "input_wait_fraction": probe["input_wait_fraction"],
        "step_only_images_per_second": probe["step_only_images_per_second"],
        "train_gflops": speed * TRAIN_FLOPS_PER_IMAGE / 1e9,
        "step_only_gflops": probe["step_only_images_per_second"] * TRAIN_FLOPS_PER_IMAGE / 1e9,
        "runs": runs,
        "probe": probe,
    }


def machine() -> dict[str, Any]:
    """CPU model, core count and library versions, for the README's table caption."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        flags = cpuinfo.read_text().split()
        cpu = (names[0] if names else cpu) + (" with AVX512_BF16" if "avx512_bf16" in flags else "")
    versions = run_quiet(
        [sys.executable, "-c", "import tensorflow as t, keras as k; print(t.__version__, k.__version__)"]
    )
    tensorflow, keras = versions.split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tensorflow,
        "keras": keras,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def generated_tarball(folder: Path) -> Path:
    """CIFAR-sized generated data (50,000 + 10,000 learnable images) when the real set is absent."""
    from tests.helpers import make_cifar_like, write_tarball

    path = folder / "generated-cifar-10-python.tar.gz"
    write_tarball(make_cifar_like(50_000, 10_000), path)
    return path


def percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def markdown(result: dict[str, Any]) -> str:
    """The results table plus the lines the README quotes."""
    peak, rows, real = result["peak_gflops"], result["variants"], result["real_data"]
    lines = [
        "| variant | precision | train img/s | × reference | best epoch img/s (× ref.) | to 60% val | test acc "
        "| input wait | GFLOP/s | % f32 peak | % bf16 peak | step alone: GFLOP/s, % bf16 peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    best = {row["variant"]: best_epoch_images_per_second(row["runs"]) for row in rows}
    for row in rows:
        to_target = row["seconds_to_60_val"]
        best_ratio = f" ({best[row['variant']] / best[REFERENCE]:.2f}×)" if REFERENCE in best else ""
        lines.append(
            f"| {row['variant']} | {row['precision']} | {row['train_images_per_second']:.0f} "
            f"| {'1.00' if row['variant'] == REFERENCE else format(row['vs_reference'] or 0, '.2f')}× "
            f"| {best[row['variant']]:.0f}{best_ratio} "
            f"| {f'{to_target:.0f} s' if real and to_target is not None else 'n/a'} "
            f"| {percent(row['test_accuracy']) if real else 'n/a'} | {percent(row['input_wait_fraction'])} "
            f"| {row['train_gflops']:.0f} | {percent(row['train_gflops'] / peak['float32'], 0)} "
            f"| {percent(row['train_gflops'] / peak['bfloat16'], 0)} "
            f"| {row['step_only_gflops']:.0f}, {percent(row['step_only_gflops'] / peak['bfloat16'], 0)} |"
        )
    startup = result["startup_seconds"]
    lines += [
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; TensorFlow "
        f"{result['machine']['tensorflow']}, Keras {result['machine']['keras']}; {result['machine']['date']}.",
        f"Data: {result['data']}; {result['epochs']} epochs, {result['repeats']} repeat(s), medians.",
        f"Matmul peak (4096², same run): float32 {peak['float32']:.0f} GFLOP/s, bfloat16 {peak['bfloat16']:.0f} GFLOP/s.",
        f"Training FLOPs per image: {TRAIN_FLOPS_PER_IMAGE / 1e6:.1f} M.",
        f"Start-up (best of 5): `python -m job --help` {startup['--help']:.2f} s, "
        f"`python -m job train --help` {startup['train --help']:.2f} s.",
    ]
    return "\n".join(lines + custom_vs_fit(rows)) + "\n"


def custom_vs_fit(rows: list[dict[str, Any]]) -> list[str]:
    """The GradientTape loop's images/s relative to fit, per model style."""
    speed = {row["variant"]: row["train_images_per_second"] for row in rows}
    best = {row["variant"]: best_epoch_images_per_second(row["runs"]) for row in rows}
    lines = []
    for api in ("symbolic", "imperative"):
        fit, custom = f"{api}-fit", f"{api}-custom"
        if fit in speed and custom in speed:
            lines.append(
                f"Custom loop vs fit ({api}): {speed[custom] / speed[fit]:.2f}× (median), "
                f"{best[custom] / best[fit]:.2f}× (best epochs)."
            )
    return lines


def measure(variants: list[str], data: Path, epochs: int, repeats: int, scratch: Path) -> list[dict[str, Any]]:
    """Round-robin training runs (the order reversed every other repeat), then one probe per variant."""
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    ratios: dict[str, list[float]] = {variant: [] for variant in variants}
    for repeat in range(repeats):
        order = variants if repeat % 2 == 0 else variants[::-1]
        for variant in order:
            print(f"repeat {repeat + 1}/{repeats}: training {variant}", file=sys.stderr, flush=True)
            runs[variant].append(train_variant(variant, data, epochs, scratch, f"r{repeat}"))
        if REFERENCE in variants:
            reference = steady_images_per_second(runs[REFERENCE][-1])
            for variant in variants:
                ratios[variant].append(steady_images_per_second(runs[variant][-1]) / reference)
    probes = {}
    for variant in variants:
        print(f"probing {variant}", file=sys.stderr, flush=True)
        probes[variant] = probe_variant(variant, data)
    return [summarise(variant, runs[variant], ratios[variant], probes[variant]) for variant in variants]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ",".join(VARIANTS))
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="cifar-10-python.tar.gz (else generated)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    arguments = parser.parse_args()
    variants = [variant.strip() for variant in arguments.variants.split(",") if variant.strip()]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}: choose from {','.join(VARIANTS)}")
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        real = arguments.data.exists()
        data = arguments.data if real else generated_tarball(Path(scratch))
        result: dict[str, Any] = {"machine": machine(), "startup_seconds": time_help()}
        first_peak = matmul_peak()
        result.update(data=str(arguments.data) if real else "generated", real_data=real)
        result.update(epochs=arguments.epochs, repeats=arguments.repeats)
        result["variants"] = measure(variants, data, arguments.epochs, arguments.repeats, Path(scratch))
        last_peak = matmul_peak()  # Other processes only ever slow a matmul down: keep the faster of the two.
        result["peak_gflops"] = {key: max(first_peak[key], last_peak[key]) for key in first_peak}
        result["peak_gflops_measured"] = [first_peak, last_peak]
    arguments.output.mkdir(parents=True, exist_ok=True)
    (arguments.output / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    (arguments.output / "latest.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
