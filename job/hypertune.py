"""Report the tuning objective to Vertex AI hyper-parameter tuning, as the `cloudml-hypertune` package does.

Vertex AI sets CLOUD_ML_TRIAL_ID (and may set CLOUD_ML_HP_METRIC_FILE) in each trial and reads JSON
lines from that file. The line format copies `hypertune.HyperTune.report_hyperparameter_tuning_metric`
in cloudml-hypertune 0.1.0.dev6 (PyPI): sorted keys, every value but the timestamp a string.
One difference: the package rewrites the file from its in-memory history (the last 100 reports of
this process); we append, so a trial resumed in a new pod keeps its earlier lines. The last line wins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from job.errors import OutputError

DEFAULT_METRIC_FILE = "/tmp/hypertune/output.metrics"  # cloudml-hypertune's _DEFAULT_METRIC_PATH.


def metric_file(env: Mapping[str, str]) -> Path | None:
    """Where to report, or None outside a tuning trial (neither variable set)."""
    if path := env.get("CLOUD_ML_HP_METRIC_FILE", "").strip():
        return Path(path)
    return Path(DEFAULT_METRIC_FILE) if env.get("CLOUD_ML_TRIAL_ID", "").strip() else None


def report(metric_tag: str, value: float, step: int, env: Mapping[str, str]) -> None:
    """Append the objective to the trial's metric file as cloudml-hypertune writes it; nothing outside a trial."""
    path = metric_file(env)
    if path is None:
        return
    body = {
        "timestamp": time.time(),
        "trial": env.get("CLOUD_ML_TRIAL_ID", "0"),
        metric_tag: str(float(value)),
        "global_step": str(int(step) if step else 0),
        "checkpoint_path": "",
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as metrics:
            metrics.write(json.dumps(body, sort_keys=True) + "\n")
    except OSError as error:
        raise OutputError(f"cannot write the hyper-parameter tuning metric to {path}: {error}") from None
