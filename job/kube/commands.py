"""`python -m job submit|status|logs|delete`: run training as a Kubernetes Job and watch it.

    python -m job submit --api symbolic --image REGISTRY/cifar10-job:0.1.0 --bucket BUCKET --follow
    python -m job status cifar10-symbolic-fit-20261126-153000-3f9a
    python -m job logs cifar10-symbolic-fit-20261126-153000-3f9a --follow

Submit renders k8s/overlays/<overlay> (the files `kubectl apply -k` uses), sets this run's name,
labels, image and flags, and creates the Job through the official `kubernetes` client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from job.config import Api, Loop
from job.errors import UsageError

KustomizeDir = Annotated[
    Path | None,
    typer.Option(help="The repository's k8s/ folder (default: next to this package).", envvar="JOB_KUSTOMIZE_DIR"),
]
Namespace = Annotated[
    str | None, typer.Option(envvar="JOB_NAMESPACE", help="Default: the one in k8s/base/kustomization.yaml.")
]
RunId = Annotated[str, typer.Argument(help="The run id, which is the Job's name.")]
APP_SELECTOR = "app.kubernetes.io/name=cifar10-job"


def submit(
    api: Annotated[Api | None, typer.Option(help="Model style (default: the overlay's); picks the overlay.")] = None,
    loop: Annotated[Loop | None, typer.Option(help="Training loop (default: the overlay's).")] = None,
    overlay: Annotated[
        str | None, typer.Option(help="k8s/overlays/<name> (default: the --api value, else symbolic).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Default: JOB_EPOCHS in the ConfigMap.")] = None,
    image: Annotated[str | None, typer.Option(envvar="IMAGE", help="Default: images: in k8s/base.")] = None,
    bucket: Annotated[
        str | None, typer.Option(envvar="BUCKET", help="gs://BUCKET/data in, gs://BUCKET/runs out.")
    ] = None,
    namespace: Namespace = None,
    run_id: Annotated[str, typer.Option(help="Job name and run id (default: cifar10-api-loop-time-suffix).")] = "",
    kustomize_dir: KustomizeDir = None,
    follow: Annotated[bool, typer.Option(help="Stream the logs and exit with the Job's outcome.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the Job as JSON instead of creating it.")] = False,
) -> None:
    """Create a training Job from k8s/overlays/<overlay> and print where its results will appear."""
    from job.kube import cluster, render

    if epochs is not None and epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {epochs}")
    documents = render.render(render.overlay_dir(overlay or (api or Api.symbolic).value, kustomize_dir))
    train_args = ("--epochs", str(epochs)) if epochs is not None else ()
    spec = render.RunSpec(run_id, api and api.value, loop and loop.value, image, namespace, bucket, train_args)
    job = render.build_job(documents, spec)
    name = job["metadata"]["name"]
    if dry_run:
        typer.echo(json.dumps(job, indent=2))
        return
    client = cluster.connect()
    cluster.create_job(client, job)
    namespace = job["metadata"]["namespace"]
    typer.echo(f"created Job {name} in namespace {namespace}")
    typer.echo(f"results: {render.output_location(job)}")
    typer.echo(f"follow:  python -m job logs {name} --namespace {namespace} --follow")
    if follow:
        cluster.follow(client, namespace, name)


def status(
    run_id: Annotated[str | None, typer.Argument(help="A run id; omit to list every run in the namespace.")] = None,
    namespace: Namespace = None,
    kustomize_dir: KustomizeDir = None,
) -> None:
    """Show one run's Job state (or all runs'): active/succeeded/failed pods and the final condition."""
    from job.kube import cluster

    namespace = namespace or default_namespace(kustomize_dir)
    client = cluster.connect()
    jobs = (
        [cluster.read_job(client, namespace, run_id)] if run_id else cluster.list_jobs(client, namespace, APP_SELECTOR)
    )
    for job in jobs:
        state = job.get("status") or {}
        outcome = cluster.job_outcome(job) or ("Running" if state.get("active") else "Pending")
        counts = " ".join(f"{key}={state.get(key, 0)}" for key in ("active", "succeeded", "failed"))
        typer.echo(f"{job['metadata']['name']}\t{outcome}\t{counts}")


def logs(
    run_id: RunId,
    namespace: Namespace = None,
    follow: Annotated[bool, typer.Option(help="Keep streaming until the Job finishes; exit with its outcome.")] = False,
    kustomize_dir: KustomizeDir = None,
) -> None:
    """Print the logs of the run's pods (every attempt, oldest first)."""
    from job.kube import cluster

    namespace = namespace or default_namespace(kustomize_dir)
    client = cluster.connect()
    if follow:
        cluster.follow(client, namespace, run_id)
        return
    cluster.read_job(client, namespace, run_id)  # A clear "not found" before listing pods.
    for pod in cluster.list_pods(client, namespace, run_id):
        typer.echo(f"--- pod {pod['metadata']['name']} ---", err=True)
        cluster.stream_logs(client, namespace, pod["metadata"]["name"], follow=False)


def delete(run_id: RunId, namespace: Namespace = None, kustomize_dir: KustomizeDir = None) -> None:
    """Delete the run's Job and its pods (the run folder in the bucket is kept)."""
    from job.kube import cluster

    namespace = namespace or default_namespace(kustomize_dir)
    cluster.delete_job(cluster.connect(), namespace, run_id)
    typer.echo(f"deleted Job {run_id} in namespace {namespace}")


def default_namespace(kustomize_dir: Path | None) -> str:
    """The namespace the base kustomization sets (kustomize's own `namespace:` field)."""
    import yaml

    from job.kube.render import KUSTOMIZE_DIR

    path = (kustomize_dir or KUSTOMIZE_DIR) / "base" / "kustomization.yaml"
    namespace = yaml.safe_load(path.read_text()).get("namespace") if path.is_file() else None
    if not namespace:
        raise UsageError(f"no namespace: pass --namespace (none set in {path})")
    return str(namespace)


def register(app: typer.Typer) -> None:
    """Add the Kubernetes commands to the CLI."""
    for command in (submit, status, logs, delete):
        app.command()(command)
