"""One frozen `TrainConfig`, built from flags/env and validated before TensorFlow is imported."""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from job.errors import DataError, UsageError
from job.uri import check_output_location, is_gcs, parse_gcs_url

# The choices of a setting, each a StrEnum member whose value is its name. The chapter's two ways to write the
# network (keras.Sequential, a subclassed keras.Model) and to train it (model.fit, a tf.GradientTape loop):
Api = StrEnum("Api", ["symbolic", "imperative"])
Loop = StrEnum("Loop", ["fit", "custom"])
Precision = StrEnum("Precision", ["auto", "float32", "mixed_bfloat16", "mixed_float16"])
Switch = StrEnum("Switch", ["auto", "on", "off"])  # --xla and --data-on-device: auto leaves it to the hardware.
StrategyKind = StrEnum("StrategyKind", ["auto", "none", "mirrored", "multiworker"])  # tf.distribute (job.distribute).
LogFormat = StrEnum("LogFormat", ["text", "json"])

DEFAULT_OUTPUT = "runs"
DEFAULT_MODEL_VERSION = 1  # TF Serving loads <model_base_path>/<version>/; a run exports one version.

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Rule:
    """A bound on one setting: the test, and the one line that names the flag and the fix when it fails."""

    accepts: Callable[[Any], bool]
    message: str  # Formatted with {flag} and {value}.


def at_least(low: int, why: str = "") -> Rule:
    return Rule(lambda value: value >= low, f"{{flag}} must be at least {low}{why}, got {{value}}")


@dataclass(frozen=True)
class Setting:
    """One `train` setting, declared once: its option, bound, resume rule and README row come from here.

    The flag is --<name with dashes> and the env var JOB_<NAME>; unset values (None, "") are not checked.
    """

    help: str | None = None  # train --help's text (typer adds the env var and the default).
    rule: Rule | None = None
    resume: bool = False  # An unfinished run continues only with the same value (job.preflight).
    resolved_later: bool = False  # The option defaults to None: job.vertex.resolve_output decides (Vertex AI's AIP_*).
    readme: str | None = None  # The meaning column of README.md's flag table; None: not listed there.
    readme_default: str | None = None  # The default column, when the value alone does not say it.
    name: str = ""  # Filled in from the field.
    default: object = None  # Filled in from the field.

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "JOB_" + self.name.upper()

    def check(self, value: object) -> None:
        """Exit 2 with one line when the value breaks this setting's rule."""
        if self.rule is not None and value not in (None, "") and not self.rule.accepts(value):
            raise UsageError(self.rule.message.format(flag=self.flag, value=value))


def setting(default: Any, **declared: Any) -> Any:
    """A TrainConfig field with its default and how it is set and checked (see Setting)."""
    return field(default=default, metadata={"setting": Setting(**declared)})


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting; each default reproduces the chapter."""

    api: Api = setting(
        Api.symbolic,
        resume=True,
        help="Model style: keras.Sequential or a subclassed keras.Model.",
        readme="`symbolic` (Sequential) or `imperative` (subclassed Model)",
    )
    loop: Loop = setting(
        Loop.fit,
        resume=True,
        help="Training loop: model.fit or a GradientTape loop.",
        readme="`fit` (`model.fit`) or `custom` (GradientTape loop)",
    )
    epochs: int = setting(5, rule=at_least(1), readme="passes over the training images; a resumed run may add more")
    batch_size: int = setting(
        200,
        rule=at_least(1),
        resume=True,
        help="Global batch size.",
        readme="global batch; 50,000 // 200 = 250 steps per epoch",
    )
    learning_rate: float = setting(
        0.1,  # Stable only because the model scales pixels to [0, 1].
        rule=Rule(
            lambda rate: math.isfinite(rate) and rate > 0, "{flag} must be a positive finite number, got {value}"
        ),
        resume=True,
        help="SGD learning rate.",
        readme="SGD, as in the chapter",
    )
    momentum: float = setting(
        0.9,
        rule=Rule(
            lambda momentum: math.isfinite(momentum) and 0 <= momentum < 1, "{flag} must be in [0, 1), got {value}"
        ),
        resume=True,
        help="SGD momentum.",
        readme="SGD, as in the chapter",
    )
    seed: int = setting(
        42,  # Fixed, so a retried pod reshuffles exactly as the first attempt did.
        resume=True,
        help="Seeds weights and shuffling.",
        readme="weights and the per-epoch shuffle; fixed so a retried pod repeats the same run",
    )
    validation_size: int = setting(
        500,
        rule=at_least(1),
        resume=True,
        help="Validation = test[:N], test = test[N:].",
        readme="validation = `test[:500]`, test = `test[500:]`",
    )
    data: str | None = setting(
        None,  # The Keras download and cache.
        help="cifar-10-python.tar.gz, its extracted folder, an .npz, or gs://... (default: Keras download).",
        readme="`cifar-10-python.tar.gz`, its extracted `cifar-10-batches-py/` folder, an `.npz` with "
        "`x_train y_train x_test y_test`, or any of these on `gs://`",
        readme_default="Keras download",
    )
    output: str = setting(
        DEFAULT_OUTPUT,
        resolved_later=True,
        help=f"Local folder or gs://BUCKET/PREFIX (default: {DEFAULT_OUTPUT}, or $AIP_MODEL_DIR on Vertex AI).",
        readme="local folder or `gs://BUCKET[/PREFIX][/]`",
        readme_default="`runs` (on Vertex AI: from `$AIP_MODEL_DIR`, below)",
    )
    run_id: str = setting(
        "",  # Filled in by validate().
        rule=Rule(
            lambda run_id: bool(RUN_ID.match(run_id)) and ".." not in run_id,  # One safe path segment.
            "{flag} {value!r} is not a valid run id: use letters, digits, '.', '_' and '-' "
            "(no '/', no '..', at most 100 characters)",
        ),
        help="Run folder name (default: api-loop-UTC time-suffix); reuse it to resume.",
        readme="the run folder's name; **rerunning with the same id resumes** an unfinished run",
        readme_default="`api-loop-UTCtime-xxxx`",
    )
    label: str = setting(
        "",  # A note, not a training setting: a resume may change it, and config.json keeps the latest.
        rule=Rule(
            lambda label: len(label) <= 200 and label.isprintable(),
            "{flag} must be at most 200 printable characters (no newlines, tabs or other control characters), "
            "got {value!r:.60}",
        ),
        help="Free text kept in config.json and shown by `runs list` (at most 200 characters).",
        readme="free text kept in config.json and shown by `runs list`, e.g. what the run tries; a resumed run may "
        "change it",
        readme_default="none",
    )
    overwrite: bool = setting(
        False, help="Replace a finished run with the same id.", readme="replace a *finished* run with the same id"
    )
    require_gpu: bool = setting(
        False,
        help="Fail (exit 6: environment not ready) if no GPU is visible.",
        readme="exit 6 at once when no NVIDIA GPU is visible, instead of training on CPU for hours "
        "(a Job tries a new pod)",
    )
    precision: Precision = setting(
        Precision.auto,
        help="auto: float16 on GPU, bfloat16 on CPUs with it.",
        readme="`float32`, `mixed_bfloat16`, `mixed_float16`; auto = float16 on NVIDIA GPUs with compute capability "
        "≥ 7, bfloat16 on CPUs with AVX-512 BF16/AMX, else float32. The softmax always runs in float32",
    )
    xla: Switch = setting(
        Switch.auto,
        help="XLA compilation (auto: on for GPU only).",
        readme="XLA compilation; auto = on for GPUs, off on CPU (measured 0.44× here)",
    )
    log_format: LogFormat = setting(
        LogFormat.text,
        help="Progress lines as text or JSON.",
        readme="`json`: every line, stdout and stderr (errors too), one JSON object with `severity` and `message`, "
        "the fields Cloud Logging classifies by",
    )
    checkpoint_every_steps: int = setting(
        0,  # Checkpoint at the end of every epoch only.
        rule=Rule(lambda steps: steps >= 0, "{flag} must be 0 (epoch ends only) or more, got {value}"),
        help="Also checkpoint every N steps (0: epoch ends only).",
        readme="custom loop only: also checkpoint every N steps (resumes mid-epoch); `fit` resumes at epoch ends and "
        "refuses a non-zero value (exit 2). The custom-loop overlay's ConfigMap sets 100",
    )
    strategy: StrategyKind = setting(
        StrategyKind.auto,
        help="tf.distribute: auto = multiworker with TF_CONFIG or an Indexed Job, mirrored with >1 GPU.",
    )
    steps_per_execution: int = setting(
        0,  # Auto (job.stepping); a speed setting only, results do not depend on it.
        rule=Rule(lambda steps: steps >= 0, "{flag} must be 0 (auto) or more, got {value}"),
        help="Training steps per call into TensorFlow (0: auto = 10, aligned to logs and checkpoints).",
        readme="training steps per call into TensorFlow, in both loops; speed only, the numbers trained are the same "
        "(tested). `fit` lowers it to a divisor of the epoch and of the 100-step log; the custom loop ends a call "
        "on every logged or checkpointed step. A stop signal is seen within N steps",
        readme_default="0 (auto = 10)",
    )
    data_on_device: Switch = setting(
        Switch.auto,  # A speed setting only: the same batches and numbers either way, so a resume may change it.
        help="Keep the uint8 training set on the accelerator and gather batches there (auto: on with one GPU).",
        readme="keep the uint8 training set (150 MB) on the accelerator and gather each batch there instead of in "
        "tf.data on the host; auto = on with a GPU and no tf.distribute strategy, off on CPU; `on` under a strategy "
        "exits 2. Speed only, the numbers trained are the same (tested); a resumed run may change it",
    )
    model_version: int | None = setting(
        DEFAULT_MODEL_VERSION,  # None: the SavedModel is model/ itself (Vertex AI).
        resolved_later=True,
        rule=at_least(1, " (TF Serving's version folders)"),
        help="Export the SavedModel to model/N/, TF Serving's layout (default 1; on Vertex AI: AIP_MODEL_DIR).",
        readme="the SavedModel goes to `model/N/`, TF Serving's `<model_base_path>/<version>/` "
        "(on Vertex AI: into `$AIP_MODEL_DIR` itself)",
    )

    def to_json(self) -> dict[str, object]:
        """Plain JSON values, enums as their names."""
        return {key: value.value if isinstance(value, Enum) else value for key, value in asdict(self).items()}


SETTINGS = {
    declared.name: replace(declared.metadata["setting"], name=declared.name, default=declared.default)
    for declared in fields(TrainConfig)
}


def new_run_id(*names: str, stamp: str = "%Y%m%dT%H%M%SZ") -> str:
    """names-UTC time-random suffix, e.g. symbolic-fit-20261126T153000Z-3f9a: unique and sortable (a Job's name
    is also its run id, job.kube.render: there the stamp is lowercase, 20261126-153000)."""
    return "-".join([*names, datetime.now(UTC).strftime(stamp), secrets.token_hex(2)])


def validate(config: TrainConfig) -> TrainConfig:
    """Reject bad values (a missing local --data too) with one line naming the flag and the fix; fill in the run id."""
    for name, declared in SETTINGS.items():
        declared.check(getattr(config, name))
    if config.checkpoint_every_steps and config.loop == Loop.fit:
        # fit resumes at epoch boundaries (job.train), so a mid-epoch checkpoint could only be ignored or, worse,
        # resumed as if its epoch had ended: refuse it rather than let a user count on it.
        raise UsageError(
            f"--checkpoint-every-steps/JOB_CHECKPOINT_EVERY_STEPS {config.checkpoint_every_steps} needs --loop custom: "
            "fit checkpoints at the end of every epoch only; drop it (0) or train with --loop custom"
        )
    check_output_location(config.output)
    if config.data is not None and is_gcs(config.data):
        parse_gcs_url(config.data)  # Only the URL: the object is checked when downloaded.
    elif config.data is not None and not Path(config.data).expanduser().exists():
        raise DataError(
            f"data source {config.data} does not exist: pass the cifar-10-python.tar.gz file, "
            "its extracted cifar-10-batches-py folder, or an .npz with x_train/y_train/x_test/y_test"
        )
    return replace(config, run_id=config.run_id or new_run_id(config.api.value, config.loop.value))
