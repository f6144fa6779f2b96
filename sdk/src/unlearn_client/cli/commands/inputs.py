"""Reading JSON arguments: inline JSON, or ``@path`` for a file holding it (as curl does)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def json_argument(value: str | None, name: str) -> Any:
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {value[1:]}: {exc}", param_hint=name) from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=name) from exc


def json_object(value: str | None, name: str) -> dict[str, Any] | None:
    parsed = json_argument(value, name)
    if parsed is not None and not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=name)
    return parsed
