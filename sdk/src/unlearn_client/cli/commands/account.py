"""``login``, ``logout``, ``health``: where the service is, with which key, and whether it is up."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from unlearn_client.cli import config
from unlearn_client.cli.session import JsonFlag, current
from unlearn_client.client import Client
from unlearn_client.errors import Forbidden


def login(
    url: Annotated[str, typer.Option(prompt="Service URL", help="e.g. http://127.0.0.1:8000")],
    api_key: Annotated[
        str, typer.Option("--api-key", prompt="API key", hide_input=True, help="Asked if not given.")
    ],
    check: Annotated[bool, typer.Option("--check/--no-check", help="Try the key on the service.")] = True,
    json: JsonFlag = False,
) -> None:
    """Store the service URL and API key (mode 0600) for the next commands."""
    out = current.output(json)
    if check:
        # Any authenticated read tells a valid key from a rejected one (401); a key without the
        # scope for this one (403) is still a valid key.
        with Client(url, api_key) as client, contextlib.suppress(Forbidden):
            client.models.list(limit=1)
    path = config.save(config.Credentials(url.rstrip("/"), api_key))
    out.record({"url": url.rstrip("/"), "config": str(path), "checked": check})


def logout(json: JsonFlag = False) -> None:
    """Forget the stored URL and key."""
    out = current.output(json)
    out.record({"config": str(config.config_path()), "removed": config.remove()})


def health(json: JsonFlag = False) -> None:
    """Whether the service is up and its dependencies reachable (exit 1 if not ready)."""
    out = current.output(json)
    client = current.client()
    client.health()
    out.record(client.ready())
