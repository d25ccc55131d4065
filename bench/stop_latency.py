"""Save-and-exit time on SIGTERM: from the signal to the exit 75 of `python -m job train`, both loops, mid-epoch.

    .venv/bin/python bench/stop_latency.py                                   # fit and custom, local and gs://, 3 each
    .venv/bin/python bench/stop_latency.py --loops custom --outputs gcs --repeats 5

What a preempted pod has to do within its grace period (docs/reliability.md: GKE gives a Spot or preemptible
node's pods 15 s by default). Each run is a fresh process with the chapter's settings on the real CIFAR-10
(--data; generated images when the file is missing), 2 epochs. It waits for the job's own `training` line,
then a random 2-12 s (seeded with --seed, recorded), so the signal lands anywhere from the first call into
TensorFlow (still tracing) to mid-epoch, sends SIGTERM and times the exit. `fit` keeps the last epoch's
checkpoint and stops at the next call into TensorFlow; the custom loop also saves the step it stopped at
(checkpoint + metrics, uploaded for gs://). gs:// goes to a local fake-gcs-server (tests/gcs_fixtures.py),
so an upload costs this machine's client time, not a real network's.
Writes bench/results/stop-latency.{json,md} (--name); never a test (the numbers are this machine's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # Run as a script from anywhere.

from tests.gcs_fixtures import start_fake_gcs_server, stop_fake_gcs_server  # noqa: E402
from tests.helpers import job_env, make_cifar_like, write_tarball  # noqa: E402

REAL_DATA = ROOT.parent / "shared" / "data" / "cifar10" / "cifar-10-python.tar.gz"
RESULTS = ROOT / "bench" / "results"
DELAYS = (2.0, 12.0)  # Seconds after the `training` line: from tracing to mid-epoch 1 on this machine.
TRAINING = "training run="


def machine() -> str:
    """The CPU model (lscpu's 'Model name') and core count."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {os.cpu_count()} cores"


def one_stop(
    data: str, loop: str, output: str, run_id: str, delay: float, env: dict[str, str], extra: list[str]
) -> dict[str, Any]:
    """Start training, wait `delay` seconds, SIGTERM, and time the save-and-exit."""
    args = ["train", "--loop", loop, "--epochs", "2", "--data", data, "--output", output, "--run-id", run_id, *extra]
    with tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "job", *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=ROOT
        )
        assert process.stdout is not None
        seen: list[str] = []
        for line in process.stdout:
            seen.append(line.rstrip())
            if line.startswith(TRAINING):
                break
        else:
            raise SystemExit(f"the job ended before {TRAINING!r}: exit {process.wait()}; {seen[-3:]}")
        reached = time.perf_counter()
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        signalled = time.perf_counter()
        rest = process.stdout.read()
        exit_code = process.wait()
        exited = time.perf_counter()
        stderr.seek(0)
        errors = [line for line in stderr.read().splitlines() if line.strip()]
    last_step = [line for line in (seen + rest.splitlines()) if line.startswith("epoch ")][-1:]
    return {
        "loop": loop,
        "output": "gcs" if output.startswith("gs://") else "local",
        "delay_after_training_line_s": round(delay, 2),
        "to_training_line_s": round(reached - started, 2),
        "stop_s": round(exited - signalled, 3),
        "exit_code": exit_code,
        "last_progress_line": last_step[0] if last_step else None,
        "last_stderr_line": errors[-1] if errors else None,
    }


def table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| loop | output | runs | exit 75 | median s | max s | signal after the training line (s) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for loop in dict.fromkeys(run["loop"] for run in runs):
        for output in dict.fromkeys(run["output"] for run in runs):
            group = [run for run in runs if (run["loop"], run["output"]) == (loop, output)]
            if not group:
                continue
            times = [run["stop_s"] for run in group]
            delays = ", ".join(f"{run['delay_after_training_line_s']:.1f}" for run in group)
            rows.append(
                f"| {loop} | {output} | {len(group)} | {sum(run['exit_code'] == 75 for run in group)} "
                f"| {statistics.median(times):.2f} | {max(times):.2f} | {delays} |"
            )
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REAL_DATA) if REAL_DATA.exists() else None)
    parser.add_argument("--loops", default="fit,custom")
    parser.add_argument("--outputs", default="local,gcs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--name", default="stop-latency", help="Results file stem under bench/results/.")
    parser.add_argument("--args", default="", help="Extra train flags, e.g. '--steps-per-execution 1'.")
    options = parser.parse_args()
    rng = random.Random(options.seed)
    work = Path(tempfile.mkdtemp(prefix="stop-latency-"))
    data = options.data
    if data is None:
        data = str(work / "cifar-10-python.tar.gz")
        write_tarball(make_cifar_like(train_size=50_000, test_size=10_000), Path(data))
    server = start_fake_gcs_server() if "gcs" in options.outputs else None
    env = job_env({"STORAGE_EMULATOR_HOST": server.url} if server else None)
    env["JOB_STAGING_DIR"] = str(work / "staging")
    bucket = server.create_bucket() if server else ""
    runs = []
    try:
        for repeat in range(options.repeats):
            for loop in options.loops.split(","):
                for kind in options.outputs.split(","):
                    output = f"gs://{bucket}/runs" if kind == "gcs" else str(work / "runs")
                    delay = rng.uniform(*DELAYS)
                    run = one_stop(data, loop, output, f"{loop}-{kind}-{repeat}", delay, env, options.args.split())
                    print(json.dumps(run), flush=True)
                    runs.append(run)
    finally:
        if server:
            stop_fake_gcs_server(server)
    result = {"machine": machine(), "data": data, "seed": options.seed, "args": options.args, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{options.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = (
        f"Save-and-exit time after SIGTERM ({result['machine']}; `bench/stop_latency.py {options.args}`)\n\n"
        + table(runs)
    )
    (RESULTS / f"{options.name}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
