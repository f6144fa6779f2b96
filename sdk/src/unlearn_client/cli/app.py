"""The ``unlearn-client`` command: the API from a shell, on the SDK.

Only the SDK, typer and rich are imported (no torch): remote commands start in a blink.
"""

from __future__ import annotations

from typing import Annotated

import typer

from unlearn_client.cli.commands import (
    account,
    audit,
    keys,
    lists,
    models,
    requests,
    signatures,
    versions,
    webhooks,
)
from unlearn_client.cli.session import current

app = typer.Typer(
    name="unlearn-client",
    help="Client of the unlearning service: models, versions, deletions, jobs, audit, keys, webhooks.",
    no_args_is_help=True,
    add_completion=False,
    # Errors are printed by the entry point (as JSON with --json), not as tracebacks.
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    url: Annotated[str | None, typer.Option(help="Service URL (else UNLEARN_URL, else login).")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="API key (else UNLEARN_API_KEY, else login).")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON (errors too, as problem+json).")] = False,
) -> None:
    current.url, current.api_key, current.as_json = url, api_key, json


app.command()(account.login)
app.command()(account.logout)
app.command()(account.health)
app.add_typer(models.app, name="models")
app.add_typer(versions.app, name="versions")
app.command()(requests.submit)
app.command()(requests.retry)
app.command()(requests.train)
app.command()(requests.status)
app.command()(requests.wait)
app.command()(requests.cancel)
app.command()(versions.download)
app.add_typer(lists.requests, name="requests")
app.add_typer(lists.jobs, name="jobs")
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.add_typer(webhooks.app, name="webhooks")
app.command("public-key")(signatures.public_key)
app.command()(signatures.certificate)
app.command()(signatures.receipt)
app.command("verify-certificate")(signatures.verify_certificate)
