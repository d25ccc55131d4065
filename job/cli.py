"""The command line: `python -m job train|runs|...`. Nothing here imports TensorFlow.

python -m job train --api symbolic --loop fit --epochs 5 --output runs
python -m job train --api imperative --loop custom --data cifar-10-python.tar.gz
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer

from job import errors, predict, progress, runs, stopping, visualize
from job.config import SETTINGS, LogFormat, TrainConfig, validate
from job.faults import output_faults
from job.kube import commands as kube_commands
from job.sweep import sweep_point
from job.vertex import resolve_output

if TYPE_CHECKING:
    from job.preflight import Prepared

app = typer.Typer(
    help="Train the Keras CIFAR-10 chapter's classifier as a batch job (locally, in Docker or on Kubernetes).",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(requested: bool) -> None:
    if requested:
        from job import provenance

        typer.echo(f"cifar10-job {provenance.version()} (commit {provenance.git_commit() or provenance.UNKNOWN})")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def show_help_without_command(
    context: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and source commit, then exit."
        ),
    ] = False,
) -> None:
    """Print the overview when no command is given (and keep `train` a subcommand)."""
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())


def train(**options: Any) -> None:
    """Train one model style with one loop and write a run folder (config, metrics, model, summary)."""
    stopping.install()  # First: a stop request from here on is honoured at the next safe point.
    output, run_id, version = resolve_output(options["output"], options["run_id"], options["model_version"])
    requested = TrainConfig(**{**options, "output": output, "run_id": run_id, "model_version": version})
    # In a sweep's Indexed Job each pod trains one grid point into its own run: <sweep name>-<index>.
    point = sweep_point(os.environ, sweep_name=run_id or None)
    config = validate(dataclasses.replace(requested, **point) if point else requested)
    from job.preflight import finished_point, output_places, preflight

    with output_faults(output_places(config)):  # A full, read-only or vanished output: exit 4, one line.
        done = finished_point(config) if point else None  # A resubmitted sweep skips the points it trained.
        if done is not None:
            typer.echo(done)
            return
        prepared = preflight(config)  # Output, existing run, data and splits: checked before TensorFlow loads.
        try:
            stopping.raise_if_requested("before training started")
            import_trainer()(config, prepared)
        except errors.OutputError as error:
            if not prepared.writer.store.is_copy(prepared.writer.staging):
                raise
            # Nothing is lost when the bucket fails midway: say where the local copy is.
            raise errors.OutputError(f"{error} (the run's local copy is kept in {prepared.writer.staging})") from None
        finally:
            if prepared.lease is not None:
                prepared.lease.release()


def import_trainer() -> Callable[[TrainConfig, Prepared], object]:
    """job.train.run: TensorFlow and Keras are imported from here on, never for --help or bad input.

    Keras imports matplotlib when it loads, for an image gallery this job never calls: about 0.5 s of the time to
    the first step. matplotlib is kept out while they load; the run's pictures import it when they are drawn,
    after training (job.plots). The import's 440,000 long-lived objects set off five full garbage collections
    (0.3 s, nothing collected): the collector is off meanwhile, and gc.freeze keeps later ones off them too.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Quiets TensorFlow's Python-side logging.
    keep_out = "matplotlib" not in sys.modules
    if keep_out:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]  # `import matplotlib` raises ImportError.
    gc.disable()
    try:
        from job.train import run
    finally:
        gc.freeze()
        gc.enable()
        if keep_out and sys.modules.get("matplotlib", ...) is None:
            del sys.modules["matplotlib"]
    return run


def train_options() -> inspect.Signature:
    """`train`'s typer options, one per setting declared in job.config, in declaration order."""
    types = get_type_hints(TrainConfig)
    options = []
    for name, declared in SETTINGS.items():
        kind, default = (types[name] | None, None) if declared.resolved_later else (types[name], declared.default)
        option = typer.Option(default, envvar=declared.env, help=declared.help)
        options.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind))
    return inspect.Signature(options)


train.__signature__ = train_options()  # type: ignore[attr-defined]
app.command()(train)


def one_line(message: str) -> str:
    """Library messages sometimes span lines (tarfile lists every method it tried); logs want one."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def json_lines_requested(argv: list[str]) -> bool:
    """`train --log-format json` (or JOB_LOG_FORMAT=json), read before typer parses: its error lines are JSON
    too, including a usage error typer reports before `train` runs."""
    if not argv or argv[0] != "train":
        return False
    declared = SETTINGS["log_format"]
    value = os.environ.get(declared.env, "")
    for index, arg in enumerate(argv):
        if arg == declared.flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(declared.flag + "="):
            value = arg.split("=", 1)[1]
    return value == LogFormat.json.value


def fail(line: str, exit_code: int) -> int:
    """Print the one error line (JSON with severity under --log-format json) and return its exit code.

    An interruption (75) is WARNING: the run saved its state and the Job retries it without counting it.
    """
    severity = progress.WARNING if exit_code == errors.EXIT_INTERRUPTED else progress.ERROR
    progress.stderr_line(line, severity, exit_code=exit_code)
    return exit_code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and map every failure to the exit-code contract with one line on stderr."""
    progress.use_json_lines(json_lines_requested(sys.argv[1:] if argv is None else argv))
    try:
        result = app(args=argv, prog_name="python -m job", standalone_mode=False)
    except typer.TyperException as error:  # Typer's own usage errors: unknown flag, bad choice, bad number.
        context = getattr(error, "ctx", None)
        command = context.command_path if context is not None else "python -m job"
        return fail(f"error: {error.format_message()} (see {command} --help)", errors.EXIT_USAGE)
    except typer.Abort:
        return fail("error: aborted", errors.EXIT_INTERRUPTED)
    except KeyboardInterrupt:  # A second Ctrl-C (job.stopping): stopped without saving the current position.
        return fail(
            "error: interrupted twice: stopped at once; rerun the same command to resume from the last checkpoint",
            errors.EXIT_INTERRUPTED,
        )
    except errors.JobError as error:
        return fail(f"error: {one_line(str(error))}", error.exit_code)
    return result if isinstance(result, int) else errors.EXIT_OK


# Command groups that live in their own modules (each imports its heavy libraries lazily).
predict.register(app)
runs.register(app)
kube_commands.register(app)
visualize.register(app)
