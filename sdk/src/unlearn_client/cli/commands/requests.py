"""``submit``, ``retry``, ``train``, ``status``, ``wait``, ``cancel``: deletion requests, training, and their
jobs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from unlearn_client.cli.commands.inputs import json_object
from unlearn_client.cli.output import EXIT_CHECK_FAILED, Output
from unlearn_client.cli.session import JsonFlag, current
from unlearn_client.models import DeletionRequest, Job

REQUEST_FIELDS = [
    "id", "model", "status", "job_id", "method", "n_samples", "result_version", "outcome", "exact_version",
    "forget_set_purged", "retryable", "retry_until", "error", "created_at", "finished_at",
]  # fmt: skip
JOB_FIELDS = [
    "id", "model", "kind", "reason", "status", "stage", "progress", "method", "method_reason", "base_version",
    "result_version",
    "deletion_requests", "attempts", "error", "metrics.before", "metrics.after", "created_at", "finished_at",
]  # fmt: skip

ProgressFlag = Annotated[
    bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")
]
ParamsOption = Annotated[str | None, typer.Option(help="Method params (JSON or @file).")]
PolicyOption = Annotated[str | None, typer.Option(help="Acceptance-policy overrides (JSON or @file).")]
WaitFlag = Annotated[bool, typer.Option("--wait", help="Wait until the request is done.")]


def _show_progress(flag: bool | None, out: Output) -> bool:
    # Bars go to stderr, so they never mix with JSON; still, by default only people see them.
    return flag if flag is not None else (sys.stderr.isatty() and not out.as_json)


def _answer(request: DeletionRequest, wait: bool, progress: bool | None, out: Output) -> None:
    """Print the request as the service took it, or (--wait) as it ended."""
    if not wait:
        out.record(request, REQUEST_FIELDS)
        return
    out.note(
        f"request {request.id}: {request.status}" + (f", job {request.job_id}" if request.job_id else "")
    )
    _finish(current.client().deletions.wait(request, progress=_show_progress(progress, out)), out)


def _finish(outcome: Job | DeletionRequest, out: Output) -> None:
    """Print a finished job or request; exit 6 unless it succeeded (a job) or completed (a request)."""
    if isinstance(outcome, Job):
        out.record(outcome, JOB_FIELDS)
        ok = outcome.status == "succeeded"
    else:
        out.record(outcome, REQUEST_FIELDS)
        ok = outcome.status == "completed"
    if not ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


def submit(
    model: str,
    forget_set: Annotated[
        Path | None,
        typer.Argument(exists=True, dir_okay=False, help="The samples to forget (safetensors or .npz)."),
    ] = None,
    samples: Annotated[
        str | None,
        typer.Option(help='Inline samples, not a file: JSON {"inputs": [..], "labels": [..]} or @file.'),
    ] = None,
    subject: Annotated[str | None, typer.Option(help="The data subject's reference.")] = None,
    method: Annotated[
        str | None, typer.Option(help="ga, imu, npo, scrub, ... (default: chosen by what is registered).")
    ] = None,
    params: ParamsOption = None,
    policy: PolicyOption = None,
    base_version: Annotated[int | None, typer.Option(help="The version to unlearn from.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Makes a re-run of this command return the same request.")
    ] = None,
    wait: WaitFlag = False,
    progress: ProgressFlag = None,
    json: JsonFlag = False,
) -> None:
    """Ask the service to forget samples (a file, or --samples inline)."""
    out = current.output(json)
    if (forget_set is None) == (samples is None):
        raise typer.BadParameter("give a FORGET_SET file or --samples, not both")
    client = current.client()
    request = client.deletions.submit(
        model,
        forget_set,
        samples=json_object(samples, "--samples"),
        subject=subject,
        method=method,
        params=json_object(params, "--params"),
        policy=json_object(policy, "--policy"),
        base_version=base_version,
        idempotency_key=idempotency_key,
    )
    _answer(request, wait, progress, out)


def retry(
    request_id: Annotated[str, typer.Argument(help="A deletion request the acceptance policy rejected.")],
    method: Annotated[str | None, typer.Option(help="Another method (default: the request's).")] = None,
    params: ParamsOption = None,
    policy: PolicyOption = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Makes a re-run of this command queue nothing more.")
    ] = None,
    wait: WaitFlag = False,
    progress: ProgressFlag = None,
    json: JsonFlag = False,
) -> None:
    """Queue a rejected deletion request again, without uploading its samples."""
    out = current.output(json)
    client = current.client()
    request = client.deletions.retry(
        request_id,
        method=method,
        params=json_object(params, "--params"),
        policy=json_object(policy, "--policy"),
        idempotency_key=idempotency_key,
    )
    _answer(request, wait, progress, out)


def train(
    model: str,
    dataset: Annotated[str, typer.Argument(help="A registered dataset to train on.")],
    dataset_version: Annotated[str | None, typer.Option(help="Its version (default: the latest).")] = None,
    recipe: Annotated[
        str | None, typer.Option(help="How to train (JSON or @file); default: the latest version's recipe.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the job is done.")] = False,
    progress: ProgressFlag = None,
    json: JsonFlag = False,
) -> None:
    """Train a new version of a model from a registered dataset version (a job on the queue)."""
    out = current.output(json)
    client = current.client()
    job = client.jobs.train(
        model, dataset, dataset_version=dataset_version, recipe=json_object(recipe, "--recipe")
    )
    if not wait:
        out.record(job, JOB_FIELDS)
        return
    out.note(f"job {job.id}: {job.status}")
    _finish(client.jobs.wait(job, progress=_show_progress(progress, out)), out)


def status(
    id: Annotated[str, typer.Argument(help="A deletion request id (del_...) or a job id (job_...).")],
    json: JsonFlag = False,
) -> None:
    """Show a deletion request or a job."""
    out = current.output(json)
    client = current.client()
    if id.startswith("del_"):
        out.record(client.deletions.get(id), REQUEST_FIELDS)
    else:
        out.record(client.jobs.get(id), JOB_FIELDS)


def wait(
    id: Annotated[str, typer.Argument(help="A job id, or a deletion request id (del_...).")],
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    progress: ProgressFlag = None,
    json: JsonFlag = False,
) -> None:
    """Follow a job or a deletion request to its end (exit 6 if it did not succeed)."""
    out = current.output(json)
    job = current.client().wait(id, progress=_show_progress(progress, out), timeout=timeout)
    _finish(job, out)


def cancel(job_id: str, json: JsonFlag = False) -> None:
    """Cancel a job (409 if it already finished)."""
    out = current.output(json)
    out.record(current.client().jobs.cancel(job_id), JOB_FIELDS)
