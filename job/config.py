"""One frozen `TrainConfig`, built from flags/env and validated before TensorFlow is imported."""

from __future__ import annotations

import math
import os
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from pathlib import Path

from job.errors import DataError, UsageError
from job.storage import check_output_location, is_gcs, parse_gcs_url


class Api(StrEnum):
    """The chapter's two ways to write the same network."""

    symbolic = "symbolic"  # keras.Sequential
    imperative = "imperative"  # a subclassed keras.Model


class Loop(StrEnum):
    """The chapter's two ways to train it."""

    fit = "fit"  # model.fit
    custom = "custom"  # a tf.GradientTape loop


class Precision(StrEnum):
    auto = "auto"
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"
    mixed_float16 = "mixed_float16"


class Xla(StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


class StrategyKind(StrEnum):
    """tf.distribute strategy (job.distribute)."""

    auto = "auto"
    none = "none"
    mirrored = "mirrored"
    multiworker = "multiworker"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


# The chapter's hyper-parameters; every default below reproduces it.
DEFAULT_EPOCHS = 5
DEFAULT_BATCH_SIZE = 200  # 50,000 // 200 = 250 steps per epoch.
DEFAULT_LEARNING_RATE = 0.1  # SGD; stable only because the model scales pixels to [0, 1].
DEFAULT_MOMENTUM = 0.9
DEFAULT_VALIDATION_SIZE = 500  # validation = test[:500], test = test[500:].
DEFAULT_SEED = 42  # Fixed, so a retried pod reshuffles exactly as the first attempt did.
DEFAULT_OUTPUT = "runs"
DEFAULT_MODEL_VERSION = 1  # TF Serving loads <model_base_path>/<version>/; a run exports one version.

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class TrainConfig:
    api: Api = Api.symbolic
    loop: Loop = Loop.fit
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    momentum: float = DEFAULT_MOMENTUM
    seed: int = DEFAULT_SEED
    validation_size: int = DEFAULT_VALIDATION_SIZE
    data: str | None = None  # None: the Keras download and cache.
    output: str = DEFAULT_OUTPUT
    run_id: str = ""
    overwrite: bool = False
    require_gpu: bool = False
    precision: Precision = Precision.auto
    xla: Xla = Xla.auto
    log_format: LogFormat = LogFormat.text
    checkpoint_every_steps: int = 0  # 0: checkpoint at the end of every epoch only.
    strategy: StrategyKind = StrategyKind.auto
    steps_per_execution: int = 0  # 0: auto (job.stepping); a speed setting only, results do not depend on it.
    model_version: int | None = DEFAULT_MODEL_VERSION  # None: the SavedModel is model/ itself (Vertex AI).

    def to_json(self) -> dict[str, object]:
        """Plain JSON values, enums as their names."""
        return {key: value.value if isinstance(value, Enum) else value for key, value in asdict(self).items()}


def resolve_output(
    output: str | None, run_id: str = "", model_version: int | None = None
) -> tuple[str, str, int | None]:
    """(output, run id, model version) from the flags, or on Vertex AI from its AIP_* variables (job.vertex).

    On Vertex the run folder is the job's base output directory and the SavedModel goes into AIP_MODEL_DIR
    itself (model version None: no version folder), so --output, another --run-id or --model-version conflict.
    Elsewhere the SavedModel goes to model/<version>/, TF Serving's layout (default version 1).
    """
    from job import vertex

    model_dir = os.environ.get(vertex.MODEL_DIR, "").strip()
    if output and model_dir:
        raise UsageError(
            f"both --output/JOB_OUTPUT ({output}) and AIP_MODEL_DIR ({model_dir}) are set: "
            "drop --output to write where Vertex AI asks, or unset AIP_MODEL_DIR"
        )
    place = vertex.placement(os.environ)
    if place is None:
        return output or DEFAULT_OUTPUT, run_id, DEFAULT_MODEL_VERSION if model_version is None else model_version
    where = f"{vertex.MODEL_DIR}={model_dir}"
    if run_id and run_id != place.run_id:
        raise UsageError(
            f"--run-id {run_id} differs from the run folder {where} implies ({place.base}, run id {place.run_id}): "
            "on Vertex AI the run folder is the job's base output directory; drop --run-id"
        )
    if model_version is not None:
        raise UsageError(
            f"--model-version {model_version} is set, but on Vertex AI the SavedModel goes into {where} itself "
            "(Vertex reads saved_model.pb there, without a version folder): drop --model-version"
        )
    return place.output, place.run_id, None


def default_run_id(api: Api, loop: Loop) -> str:
    """api-loop-UTC time-random suffix, e.g. symbolic-fit-20261126T153000Z-3f9a."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{api.value}-{loop.value}-{stamp}-{secrets.token_hex(2)}"


def validate(config: TrainConfig) -> TrainConfig:
    """Reject bad values with one line naming the flag and the fix; fill in the run id."""
    if config.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {config.batch_size}")
    if not math.isfinite(config.learning_rate) or config.learning_rate <= 0:
        raise UsageError(f"--learning-rate must be a positive finite number, got {config.learning_rate}")
    if not math.isfinite(config.momentum) or not 0 <= config.momentum < 1:
        raise UsageError(f"--momentum must be in [0, 1), got {config.momentum}")
    if config.validation_size < 1:
        raise UsageError(f"--validation-size must be at least 1, got {config.validation_size}")
    if config.checkpoint_every_steps < 0:
        raise UsageError(
            f"--checkpoint-every-steps must be 0 (epoch ends only) or more, got {config.checkpoint_every_steps}"
        )
    if config.checkpoint_every_steps and config.loop == Loop.fit:
        # fit resumes at epoch boundaries (job.train), so a mid-epoch checkpoint could only be ignored or, worse,
        # resumed as if its epoch had ended: refuse it rather than let a user count on it.
        raise UsageError(
            f"--checkpoint-every-steps/JOB_CHECKPOINT_EVERY_STEPS {config.checkpoint_every_steps} needs --loop custom: "
            "fit checkpoints at the end of every epoch only; drop it (0) or train with --loop custom"
        )
    if config.steps_per_execution < 0:
        raise UsageError(f"--steps-per-execution must be 0 (auto) or more, got {config.steps_per_execution}")
    if config.run_id and (not RUN_ID.match(config.run_id) or ".." in config.run_id):
        raise UsageError(
            f"--run-id {config.run_id!r} is not a valid run id: use letters, digits, '.', '_' and '-' "
            "(no '/', no '..', at most 100 characters)"
        )
    if config.model_version is not None and config.model_version < 1:
        raise UsageError(
            f"--model-version must be at least 1 (TF Serving's version folders), got {config.model_version}"
        )
    check_output_location(config.output)
    if config.data is not None:
        check_data_location(config.data)
    run_id = config.run_id or default_run_id(config.api, config.loop)
    return TrainConfig(**{**config.__dict__, "run_id": run_id})


def check_data_location(data: str) -> None:
    """Fail fast on a local data path that does not exist (gs:// is checked when downloaded)."""
    if is_gcs(data):
        parse_gcs_url(data)
        return
    if not Path(data).expanduser().exists():
        raise DataError(
            f"data source {data} does not exist: pass the cifar-10-python.tar.gz file, "
            "its extracted cifar-10-batches-py folder, or an .npz with x_train/y_train/x_test/y_test"
        )
