"""Vertex AI custom training: where its AIP_* variables put a run, and the run id a restarted replica keeps.

With a job's `baseOutputDirectory` set, Vertex AI starts every replica with (CustomJobSpec reference):

    AIP_MODEL_DIR           = <baseOutputDirectory>/model/        (a tuning trial: <base>/<trial id>/model/)
    AIP_CHECKPOINT_DIR      = <baseOutputDirectory>/checkpoints/
    AIP_TENSORBOARD_LOG_DIR = <baseOutputDirectory>/logs/
    CLOUD_ML_JOB_ID         = the CustomJob's id (the same for every replica and every restart)

and uploading the model reads the SavedModel directly from AIP_MODEL_DIR. So on Vertex the run folder *is*
the base output directory: `model/` is AIP_MODEL_DIR (the SavedModel itself, no version folder),
`checkpoints/` is AIP_CHECKPOINT_DIR (the job resumes from it), and config.json, metrics.jsonl, summary.json
sit beside them. In the job's terms that is --output = the base's parent and --run-id = the base's name:
both follow from the variables alone, so a restarted replica finds and resumes its own run. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from job.config import DEFAULT_MODEL_VERSION, DEFAULT_OUTPUT, RUN_ID
from job.errors import UsageError
from job.uri import check_output_location, gcs_url, is_gcs, parse_gcs_url

MODEL_DIR = "AIP_MODEL_DIR"
CHECKPOINT_DIR = "AIP_CHECKPOINT_DIR"
JOB_ID = "CLOUD_ML_JOB_ID"
MODEL_FOLDER = "model"  # Equals job.artifacts.SAVED_MODEL (kept apart: artifacts imports more than --help needs).
CHECKPOINTS_FOLDER = "checkpoints"


@dataclass(frozen=True)
class Placement:
    """Where a Vertex AI replica's run goes: <output>/<run_id>/ is the base output directory."""

    output: str
    run_id: str
    job_id: str  # CLOUD_ML_JOB_ID, or "" when it is not set.


def normalized(location: str) -> str:
    """One spelling per place: gs://bucket/prefix or an absolute path, without a trailing slash."""
    if is_gcs(location):
        return gcs_url(*parse_gcs_url(location))
    return str(Path(location.strip()).expanduser().absolute())


def placement(env: Mapping[str, str]) -> Placement | None:
    """The run's place from AIP_MODEL_DIR (None when it is not set: not on Vertex AI); refuses what cannot be one."""
    raw, checkpoints = env.get(MODEL_DIR, "").strip(), env.get(CHECKPOINT_DIR, "").strip()
    if not raw:
        if checkpoints:
            raise UsageError(
                f"{CHECKPOINT_DIR} is set but {MODEL_DIR} is not: Vertex AI sets both from the job's "
                f"baseOutputDirectory; set that (or unset {CHECKPOINT_DIR} and use --output)"
            )
        return None
    check_output_location(raw)
    base, _, name = normalized(raw).rpartition("/")
    output, _, run_id = base.rpartition("/")
    if name != MODEL_FOLDER:
        raise UsageError(
            f"{MODEL_DIR}={raw} does not end in /{MODEL_FOLDER}/: Vertex AI sets it to <baseOutputDirectory>/model/, "
            f"and the run folder is the base output directory; unset {MODEL_DIR} and use --output to write elsewhere"
        )
    if output in ("", "gs:/") or not RUN_ID.match(run_id):
        raise UsageError(
            f"{MODEL_DIR}={raw}: the base output directory {base or '/'} must be a folder named with letters, digits, "
            "'.', '_' or '-' inside a bucket or folder (not a bucket's root): set the job's baseOutputDirectory to "
            "gs://BUCKET/PATH"
        )
    if checkpoints and normalized(checkpoints) != f"{base}/{CHECKPOINTS_FOLDER}":
        raise UsageError(
            f"{CHECKPOINT_DIR}={checkpoints} is not {base}/{CHECKPOINTS_FOLDER}/ beside {MODEL_DIR}: the job keeps "
            "its checkpoints in its run folder and resumes from there; set both from one baseOutputDirectory"
        )
    return Placement(output, run_id, env.get(JOB_ID, "").strip())


def resolve_output(output: str | None, run_id: str, model_version: int | None) -> tuple[str, str, int | None]:
    """(output, run id, model version) from the flags, or on Vertex AI from its AIP_* variables (see above), where
    --output, another --run-id or --model-version conflict (model version None: no version folder)."""
    model_dir = os.environ.get(MODEL_DIR, "").strip()
    if output and model_dir:
        raise UsageError(
            f"both --output/JOB_OUTPUT ({output}) and AIP_MODEL_DIR ({model_dir}) are set: "
            "drop --output to write where Vertex AI asks, or unset AIP_MODEL_DIR"
        )
    place = placement(os.environ)
    if place is None:
        return output or DEFAULT_OUTPUT, run_id, DEFAULT_MODEL_VERSION if model_version is None else model_version
    where = f"{MODEL_DIR}={model_dir}"
    if run_id and run_id != place.run_id:
        raise UsageError(
            f"--run-id {run_id} differs from the run folder {where} implies ({place.output}/{place.run_id}, run id "
            f"{place.run_id}): on Vertex AI the run folder is the job's base output directory; drop --run-id"
        )
    if model_version is not None:
        raise UsageError(
            f"--model-version {model_version} is set, but on Vertex AI the SavedModel goes into {where} itself "
            "(Vertex reads saved_model.pb there, without a version folder): drop --model-version"
        )
    return place.output, place.run_id, None
