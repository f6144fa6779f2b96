"""``jobs list`` and ``requests list``: what is queued, running and done."""

from __future__ import annotations

import itertools
from typing import Annotated

import typer

from unlearn_client.cli.session import JsonFlag, current

jobs = typer.Typer(
    help="Unlearning and training jobs (see also: train, status, wait, cancel).", no_args_is_help=True
)
requests = typer.Typer(help="Deletion requests (see also: submit, status, wait).", no_args_is_help=True)

ModelFilter = Annotated[str | None, typer.Option(help="Only this model's.")]
StatusFilter = Annotated[str | None, typer.Option(help="Only those in this status.")]
Limit = Annotated[int | None, typer.Option(help="Show at most this many.")]


@jobs.command("list")
def list_jobs(
    model: ModelFilter = None, status: StatusFilter = None, limit: Limit = None, json: JsonFlag = False
) -> None:
    """List jobs, newest first."""
    out = current.output(json)
    found = current.client().jobs.iterate(model=model, status=status)
    columns = [
        "id",
        "model",
        "kind",
        "status",
        "stage",
        "progress",
        "n_requests",
        "result_version",
        "created_at",
    ]
    out.records(itertools.islice(found, limit), columns)


@requests.command("list")
def list_requests(
    model: ModelFilter = None,
    status: StatusFilter = None,
    subject: Annotated[str | None, typer.Option(help="Only this data subject's.")] = None,
    limit: Limit = None,
    json: JsonFlag = False,
) -> None:
    """List deletion requests, newest first."""
    out = current.output(json)
    found = current.client().deletions.iterate(model=model, status=status, subject=subject)
    columns = ["id", "model", "status", "job_id", "n_samples", "result_version", "created_at"]
    out.records(itertools.islice(found, limit), columns)
