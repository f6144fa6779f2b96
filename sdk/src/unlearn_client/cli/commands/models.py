"""``models list|create|get|update``."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any

import typer

from unlearn_client.cli.commands.inputs import json_object
from unlearn_client.cli.session import JsonFlag, current

app = typer.Typer(help="Registered models.", no_args_is_help=True)

MODEL_FIELDS = [
    "name", "task", "architecture", "latest_version", "description", "tags", "exactness", "created_at",
]  # fmt: skip


@app.command("list")
def list_models(
    limit: Annotated[int | None, typer.Option(help="Show at most this many.")] = None,
    json: JsonFlag = False,
) -> None:
    """List the models of your tenant."""
    out = current.output(json)
    models = itertools.islice(current.client().models.iterate(), limit)
    out.records(models, ["name", "task", "architecture.name", "latest_version", "created_at"])


def _architecture(value: str, config: str | None) -> dict[str, Any]:
    """A JSON file, inline JSON, or a registered name with --config."""
    path = Path(value)
    if path.is_file() or value.lstrip().startswith("{"):
        parsed = json_object(f"@{value}" if path.is_file() else value, "--architecture")
        assert parsed is not None
        return parsed
    return {"name": value, "config": json_object(config, "--config") or {}}


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Unique within your tenant; used in URLs.")],
    architecture: Annotated[
        str,
        typer.Option(
            "--architecture", "-a", help="A JSON file, inline JSON {name, config}, or a name such as mlp."
        ),
    ],
    config: Annotated[str | None, typer.Option(help="The architecture's config (JSON or @file).")] = None,
    task: Annotated[str, typer.Option(help="classification or causal-lm.")] = "classification",
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable).")] = None,
    json: JsonFlag = False,
) -> None:
    """Register a model."""
    out = current.output(json)
    model = current.client().models.create(
        name, _architecture(architecture, config), task=task, description=description, tags=tag
    )
    out.record(model, MODEL_FIELDS)


@app.command("get")
def get(name: str, json: JsonFlag = False) -> None:
    """Show a model."""
    out = current.output(json)
    out.record(current.client().models.get(name), MODEL_FIELDS)


@app.command("update")
def update(
    name: str,
    after_erasures: Annotated[
        int | None, typer.Option(help="Eventual exactness: retrain exactly after this many erasures.")
    ] = None,
    after_hours: Annotated[
        float | None, typer.Option(help="Eventual exactness: ... or this many hours after the first one.")
    ] = None,
    no_exactness: Annotated[
        bool, typer.Option("--no-exactness", help="Turn eventual exactness off.")
    ] = False,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    json: JsonFlag = False,
) -> None:
    """Change a model's settings: eventual exactness, description (what is not given stays)."""
    out = current.output(json)
    exactness: dict[str, Any] | None = None
    if no_exactness:
        if after_erasures is not None or after_hours is not None:
            raise typer.BadParameter("--no-exactness with --after-erasures / --after-hours")
        exactness = {}
    elif after_erasures is not None or after_hours is not None:
        exactness = {
            k: v
            for k, v in {"after_erasures": after_erasures, "after_hours": after_hours}.items()
            if v is not None
        }
    if exactness is None and description is None:
        raise typer.BadParameter(
            "nothing to change: give --after-erasures, --after-hours, --no-exactness or --description"
        )
    model = current.client().models.update(name, exactness=exactness, description=description)
    out.record(model, MODEL_FIELDS)
