"""``keys list|create|revoke`` (admin scope)."""

from __future__ import annotations

from typing import Annotated

import typer

from unlearn_client.cli.session import JsonFlag, current

app = typer.Typer(help="API keys (needs the admin scope).", no_args_is_help=True)

KEY_COLUMNS = ["id", "name", "tenant", "prefix", "scopes", "created_at", "revoked_at", "last_used_at"]


@app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Another tenant's keys (operator only).")] = None,
    json: JsonFlag = False,
) -> None:
    """List API keys."""
    out = current.output(json)
    out.records(current.client().keys.iterate(tenant=tenant), KEY_COLUMNS)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A label for the key.")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="A scope, e.g. models:read (repeatable).")
    ],
    tenant: Annotated[str | None, typer.Option(help="The tenant (created if new); default: yours.")] = None,
    json: JsonFlag = False,
) -> None:
    """Create a key and print its secret: the only time it is shown."""
    out = current.output(json)
    created = current.client().keys.create(name, scope, tenant=tenant)
    out.record(created, ["key", *KEY_COLUMNS])
    out.note("store the key now: it is not shown again")


@app.command("revoke")
def revoke(key_id: str, json: JsonFlag = False) -> None:
    """Revoke a key."""
    out = current.output(json)
    out.record(current.client().keys.revoke(key_id), KEY_COLUMNS)
