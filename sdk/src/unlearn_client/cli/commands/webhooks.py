"""``webhooks list|create|get|delete|deliveries|delivery|retry``: callback URLs and what was sent."""

from __future__ import annotations

import itertools
from typing import Annotated

import typer

from unlearn_client.cli.session import JsonFlag, current

app = typer.Typer(help="Webhooks: events POSTed to your URLs, and their deliveries.", no_args_is_help=True)

WEBHOOK_FIELDS = ["id", "url", "events", "model", "description", "created_at"]
DELIVERY_FIELDS = [
    "id", "webhook_id", "event", "status", "attempts", "last_status_code", "last_error", "next_attempt_at",
    "last_attempt_at", "delivered_at", "created_at",
]  # fmt: skip
Limit = Annotated[int | None, typer.Option(help="Show at most this many.")]


@app.command("list")
def list_webhooks(limit: Limit = None, json: JsonFlag = False) -> None:
    """List your tenant's webhooks (never their secrets)."""
    out = current.output(json)
    out.records(itertools.islice(current.client().webhooks.iterate(), limit), WEBHOOK_FIELDS)


@app.command("create")
def create(
    url: Annotated[str, typer.Argument(help="The http(s) URL events are POSTed to.")],
    event: Annotated[
        list[str], typer.Option("--event", "-e", help="An event, e.g. job.succeeded (repeatable).")
    ],
    model: Annotated[
        str | None, typer.Option(help="Only this model's events (default: the tenant's).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    json: JsonFlag = False,
) -> None:
    """Register a webhook and print its signing secret: the only time it is shown."""
    out = current.output(json)
    created = current.client().webhooks.create(url, event, model=model, description=description)
    out.record(created, ["secret", *WEBHOOK_FIELDS])
    out.note("store the secret now: it is not shown again")


@app.command("get")
def get(webhook_id: str, json: JsonFlag = False) -> None:
    """Show a webhook."""
    out = current.output(json)
    out.record(current.client().webhooks.get(webhook_id), WEBHOOK_FIELDS)


@app.command("delete")
def delete(webhook_id: str, json: JsonFlag = False) -> None:
    """Delete a webhook and its deliveries (pending ones are not sent)."""
    out = current.output(json)
    current.client().webhooks.delete(webhook_id)
    out.record({"id": webhook_id, "deleted": True})


@app.command("deliveries")
def deliveries(
    webhook_id: str,
    status: Annotated[str | None, typer.Option(help="pending, failed, delivered or dead.")] = None,
    limit: Limit = None,
    json: JsonFlag = False,
) -> None:
    """List a webhook's deliveries, newest first."""
    out = current.output(json)
    found = current.client().webhooks.iterate_deliveries(webhook_id, status=status)
    columns = ["id", "event", "status", "attempts", "last_status_code", "created_at", "delivered_at"]
    out.records(itertools.islice(found, limit), columns)


@app.command("delivery")
def delivery(webhook_id: str, delivery_id: str, json: JsonFlag = False) -> None:
    """Show a delivery, with the payload it sends."""
    out = current.output(json)
    out.record(current.client().webhooks.get_delivery(webhook_id, delivery_id), [*DELIVERY_FIELDS, "payload"])


@app.command("retry")
def retry(webhook_id: str, delivery_id: str, json: JsonFlag = False) -> None:
    """Send a dead delivery again (409 if it is not dead)."""
    out = current.output(json)
    out.record(current.client().webhooks.retry_delivery(webhook_id, delivery_id), DELIVERY_FIELDS)
