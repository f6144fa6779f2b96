"""``audit list|verify``."""

from __future__ import annotations

import itertools
from typing import Annotated

import typer

from unlearn_client.cli.output import EXIT_CHECK_FAILED
from unlearn_client.cli.session import JsonFlag, current

app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@app.command("list")
def list_events(
    model: Annotated[str | None, typer.Option(help="Only this model's events.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. job.succeeded.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time: events at or after it.")] = None,
    limit: Annotated[int | None, typer.Option(help="Show at most this many.")] = None,
    json: JsonFlag = False,
) -> None:
    """List audit events, oldest first."""
    out = current.output(json)
    events = current.client().audit.iterate(model=model, action=action, since=since)
    out.records(
        itertools.islice(events, limit), ["seq", "ts", "actor", "action", "model", "object_id", "hash"]
    )


@app.command("verify")
def verify(json: JsonFlag = False) -> None:
    """Have the server recompute the hash chain (exit 6 if it is broken)."""
    out = current.output(json)
    result = current.client().audit.verify()
    out.record(result)
    if not result.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)
