"""`python -m job submit|sweep|status|logs|delete`: run training as Kubernetes Jobs and watch them.

    python -m job submit --api symbolic --image REGISTRY/cifar10-job:0.1.0 --bucket BUCKET --follow
    python -m job status cifar10-symbolic-fit-20261126-153000-3f9a
    python -m job logs cifar10-symbolic-fit-20261126-153000-3f9a --follow --tail 20
    python -m job submit --workers 2      # k8s/overlays/multiworker: an Indexed Job plus its headless Service
    python -m job sweep --learning-rate 0.1,0.05,0.01 --batch-size 200,100 --dry-run

Submit renders k8s/overlays/<overlay> (the files `kubectl apply -k` uses), sets this run's name,
labels, image and flags, and creates the Job through the official `kubernetes` client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
LoopOption = Annotated[Loop | None, typer.Option(help="Training loop (default: the overlay's).")]
Epochs = Annotated[int | None, typer.Option(help="Default: JOB_EPOCHS in the ConfigMap.")]
Image = Annotated[str | None, typer.Option(envvar="IMAGE", help="Default: images: in k8s/base.")]
Bucket = Annotated[
    str | None, typer.Option(envvar="BUCKET", help="BUCKET or gs://BUCKET[/PREFIX]: reads ROOT/data, writes ROOT/runs.")
]
PendingTimeout = Annotated[
    float,
    typer.Option(
        min=0,
        help="With --follow: end (exit 69, naming why) after this many seconds without a running pod; 0 waits forever.",
    ),
]
APP_SELECTOR = "app.kubernetes.io/name=cifar10-job"
# GKE adding a GPU node from zero (create the VM, install the driver) and pulling the TensorFlow GPU image
# (about 3 GB compressed) usually take several minutes each; 15 minutes leaves room for both. Queued
# clusters (Kueue, quotas) can hold a run longer: pass a larger value, or 0 to wait without limit.
PENDING_TIMEOUT_SECONDS = 900.0
SWEEP_PARALLELISM = 4  # Default pods (GPUs) at once for a sweep: min(grid size, this).


def submit(
    api: Annotated[Api | None, typer.Option(help="Model style (default: the overlay's); picks the overlay.")] = None,
    loop: LoopOption = None,
    overlay: Annotated[
        str | None,
        typer.Option(help="k8s/overlays/<name> (default: multiworker with --workers 2+, else the --api value)."),
    ] = None,
    epochs: Epochs = None,
    image: Image = None,
    bucket: Bucket = None,
    namespace: Namespace = None,
    run_id: Annotated[str, typer.Option(help="Job name and run id (default: cifar10-api-loop-time-suffix).")] = "",
    kustomize_dir: KustomizeDir = None,
    follow: Annotated[bool, typer.Option(help="Stream the logs and exit with the Job's outcome.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="2 or more: that many GPU pods under MultiWorkerMirroredStrategy, one Indexed Job."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print the Job (multi-worker: a List with its Service) instead of creating it.")
    ] = False,
    pending_timeout: PendingTimeout = PENDING_TIMEOUT_SECONDS,
) -> None:
    """Create a training Job from k8s/overlays/<overlay> and print where its results will appear."""
    from job.kube import cluster, indexed, render
    from job.kube import follow as following

    default_overlay = "multiworker" if (workers or 1) > 1 else (api or Api.symbolic).value
    documents = render.render(render.overlay_dir(overlay or default_overlay, kustomize_dir))
    job = render.build_job(documents, render.RunSpec(run_id, api, loop, image, namespace, bucket, epochs))
    objects = indexed.make_multiworker(job, documents, workers)
    if dry_run:
        typer.echo(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": [job, *objects]} if objects else job, indent=2)
        )
        return
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    client = cluster.connect()
    cluster.create_run(client, job, objects)
    for document in [job, *objects]:
        typer.echo(f"created {document['kind']} {name} in namespace {namespace}")
    typer.echo(f"results: {render.output_location(job)}")
    typer.echo(f"tensorboard: tensorboard --logdir {render.output_location(job)}")
    typer.echo(f"follow:  python -m job logs {name} --namespace {namespace} --follow")
    if follow:
        following.follow(client, namespace, name, pending_timeout)


def sweep(
    learning_rate: Annotated[str | None, typer.Option(help="Comma-separated values, e.g. 0.1,0.05,0.01.")] = None,
    batch_size: Annotated[str | None, typer.Option(help="Comma-separated values, e.g. 200,100.")] = None,
    momentum: Annotated[str | None, typer.Option(help="Comma-separated values, e.g. 0.9,0.8.")] = None,
    api: Annotated[Api | None, typer.Option(help="Model style (default: the overlay's).")] = None,
    loop: LoopOption = None,
    epochs: Epochs = None,
    parallelism: Annotated[
        int | None, typer.Option(help=f"Points trained at once (default: min(grid size, {SWEEP_PARALLELISM})).")
    ] = None,
    image: Image = None,
    bucket: Bucket = None,
    namespace: Namespace = None,
    run_id: Annotated[str, typer.Option(help="The sweep's name; point i is the run <name>-<i>.")] = "",
    kustomize_dir: KustomizeDir = None,
    dry_run: Annotated[bool, typer.Option(help="Print the Job as JSON instead of creating it.")] = False,
) -> None:
    """Train every point of a grid (the cartesian product of the lists) as one Indexed Job, one run per point."""
    from job import sweep as sweeps
    from job.kube import cluster, indexed, render

    given = {"learning_rate": learning_rate, "batch_size": batch_size, "momentum": momentum}
    grid = sweeps.expand_grid({field: sweeps.parse_values(field, text) for field, text in given.items() if text})
    spec = render.RunSpec(run_id, api, loop, image, namespace, bucket, epochs, name_prefix="cifar10-sweep")
    job = render.build_job(render.render(render.overlay_dir("sweep", kustomize_dir)), spec)
    indexed.make_sweep(job, grid, SWEEP_PARALLELISM if parallelism is None else parallelism)
    if dry_run:
        typer.echo(json.dumps(job, indent=2))
        return
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    cluster.create_run(cluster.connect(), job, [])
    runs = [f"{render.output_location(job)}-{index}" for index in range(len(grid))]
    typer.echo(f"created Job {name} in namespace {namespace}: {len(grid)} points, {job['spec']['parallelism']} at once")
    typer.echo(f"results: {runs[0]} ... {runs[-1]}" if len(runs) > 1 else f"results: {runs[0]}")
    typer.echo(f"compare: python -m job compare {' '.join(runs)}")


def status(
    run_id: Annotated[str | None, typer.Argument(help="A run id; omit to list every run in the namespace.")] = None,
    namespace: Namespace = None,
    kustomize_dir: KustomizeDir = None,
) -> None:
    """Show each run's state, active/succeeded/failed pods, and under it each pod and what keeps it from running."""
    from job.kube import cluster, diagnose

    client, namespace = connect(namespace, kustomize_dir)
    if run_id:
        jobs = [cluster.read_job(client, namespace, run_id)]
    else:
        jobs = cluster.list_objects(client, "Job", namespace, "listing Jobs", APP_SELECTOR)
    if not jobs:
        typer.echo(f"no runs in namespace {namespace}", err=True)
        return
    pods, events = cluster.list_pods(client, namespace, run_id), cluster.list_events(client, namespace)
    for job in jobs:
        name, counts = job["metadata"]["name"], job.get("status") or {}
        own = [pod for pod in pods if diagnose.pod_job(pod) == name]
        numbers = " ".join(f"{key}={counts.get(key, 0)}" for key in ("active", "succeeded", "failed"))
        typer.echo(f"{name}\t{diagnose.run_state(job, own)}\t{numbers}")
        for line in diagnose.describe(job, own, events):
            typer.echo(f"  {line}")


def logs(
    run_id: RunId,
    namespace: Namespace = None,
    follow: Annotated[bool, typer.Option(help="Keep streaming until the Job finishes; exit with its outcome.")] = False,
    tail: Annotated[int | None, typer.Option(min=0, help="Only the last N lines of each pod's log.")] = None,
    previous: Annotated[
        bool, typer.Option(help="The log of each pod's previous container (one restarted in place, CrashLoopBackOff).")
    ] = False,
    pending_timeout: PendingTimeout = PENDING_TIMEOUT_SECONDS,
    kustomize_dir: KustomizeDir = None,
) -> None:
    """Print the logs of all the run's pods (every attempt, oldest first); `[pod] ` before each line of parallel pods."""
    from job.kube import cluster, diagnose
    from job.kube import follow as following
    from job.kube.logs import LogPrinter

    if previous and follow:
        raise UsageError("--previous prints a container that has ended, which cannot be followed: drop --follow")
    client, namespace = connect(namespace, kustomize_dir)
    if follow:
        following.follow(client, namespace, run_id, pending_timeout, tail)
        return
    job = cluster.read_job(client, namespace, run_id)  # A clear "not found" before listing pods.
    printer = LogPrinter(client, namespace, prefixed=diagnose.runs_in_parallel(job))
    pods = cluster.list_pods(client, namespace, run_id)
    if not pods:
        printer.note(f"Job {run_id} has no pods (yet): python -m job status {run_id} says why")
    for pod in pods:
        if not printer.prefixed:
            printer.note(f"--- pod {pod['metadata']['name']} ---")
        printer.copy(pod["metadata"]["name"], follow=False, tail=tail, previous=previous)


def delete(run_id: RunId, namespace: Namespace = None, kustomize_dir: KustomizeDir = None) -> None:
    """Delete the run's Job and its pods, and a multi-worker run's Service (the run folder in the bucket is kept)."""
    from job.kube import cluster

    client, namespace = connect(namespace, kustomize_dir)
    cluster.delete_job(client, namespace, run_id)
    typer.echo(f"deleted Job {run_id} in namespace {namespace}")
    for deleted in cluster.delete_companions(client, namespace, run_id):
        typer.echo(f"deleted {deleted} in namespace {namespace}")


def setup(
    namespace: Namespace = None,
    kustomize_dir: KustomizeDir = None,
    dry_run: Annotated[bool, typer.Option(help="Print what would be applied instead.")] = False,
) -> None:
    """Once per cluster: the namespace, the pods' ServiceAccount and the shared NetworkPolicy, and nothing else.

    Applying an overlay (`kubectl apply -k`) would also start a training run.
    """
    from job.kube import cluster, render

    documents = render.render(render.overlay_dir("symbolic", kustomize_dir))
    objects = [document for document in documents if document["kind"] in ("ServiceAccount", "NetworkPolicy")]
    for document in objects:
        if namespace:
            document["metadata"]["namespace"] = namespace
        identity = document["metadata"].get("annotations", {}).get(cluster.WORKLOAD_IDENTITY, "")
        if cluster.PLACEHOLDER_PROJECT in identity:
            raise UsageError(
                f"the ServiceAccount would act as the placeholder {identity}: set your Google service account "
                "in k8s/base/kustomization.yaml (patches:) first"
            )
    target = namespace or objects[0]["metadata"]["namespace"]
    if dry_run:
        typer.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
        return
    client = cluster.connect()
    typer.echo(f"namespace {target}: {cluster.ensure_namespace(client, target)}")
    for document in objects:
        outcome = cluster.apply_object(client, document)
        typer.echo(f"{document['kind']} {document['metadata']['name']}: {outcome} in namespace {target}")


def connect(namespace: str | None, kustomize_dir: Path | None) -> tuple[Any, str]:
    """An API client, and --namespace or else the namespace the base kustomization sets (its `namespace:` field)."""
    import yaml

    from job.kube import cluster
    from job.kube.render import KUSTOMIZE_DIR

    path = (kustomize_dir or KUSTOMIZE_DIR) / "base" / "kustomization.yaml"
    namespace = namespace or (yaml.safe_load(path.read_text()).get("namespace") if path.is_file() else None)
    if not namespace:
        raise UsageError(f"no namespace: pass --namespace (none set in {path})")
    return cluster.connect(), str(namespace)


def register(app: typer.Typer) -> None:
    """Add the Kubernetes commands to the CLI."""
    for command in (setup, submit, sweep, status, logs, delete):
        app.command()(command)
