"""``versions list|upload|download`` (and ``download``, the same at the top)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from unlearn_client.cli.session import JsonFlag, current

app = typer.Typer(help="A model's versions and their checkpoints.", no_args_is_help=True)

VERSION_COLUMNS = [
    "version", "sha256", "size_bytes", "parent_version", "created_by_job", "status", "created_at"
]  # fmt: skip


@app.command("list")
def list_versions(model: str, json: JsonFlag = False) -> None:
    """List a model's versions, oldest first."""
    out = current.output(json)
    out.records(current.client().versions.iterate(model), VERSION_COLUMNS)


@app.command("upload")
def upload(
    model: str,
    checkpoint: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="safetensors file.")],
    eval_set: Annotated[
        Path | None,
        typer.Option("--eval-set", exists=True, dir_okay=False, help="Holdout set (safetensors or .npz)."),
    ] = None,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    json: JsonFlag = False,
) -> None:
    """Upload a checkpoint as the model's next version."""
    out = current.output(json)
    version = current.client().versions.upload(model, checkpoint, eval_set, description=description)
    out.record(version, [*VERSION_COLUMNS, "eval_set.n_samples"])


def download(
    model: str,
    version: Annotated[str, typer.Argument(help="A number, or latest.")] = "latest",
    # A str, not a Path: a trailing "/" (a folder to create) must survive.
    output: Annotated[
        str, typer.Option("--output", "-o", help="A file, or a folder (existing, or ending in /).")
    ] = ".",
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")
    ] = None,
    json: JsonFlag = False,
) -> None:
    """Download a version's checkpoint; its sha256 is checked, a broken transfer resumes."""
    out = current.output(json)
    show = progress if progress is not None else (sys.stderr.isatty() and not out.as_json)
    ref: int | str = int(version) if version.isdigit() else version
    done = current.client().download(model, ref, output, progress=show)
    out.record(
        {
            "path": str(done.path),
            "version": done.version,
            "sha256": done.sha256,
            "size_bytes": done.size_bytes,
            "verified": True,  # download() raises DigestMismatch otherwise
            "resumed": done.resumed,
        }
    )


app.command("download")(download)
