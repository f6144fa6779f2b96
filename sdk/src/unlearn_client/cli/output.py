"""What the CLI prints: JSON on stdout with ``--json`` (errors too, as problem+json), tables and
key/value lists for people otherwise (errors on stderr)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from unlearn_client.errors import (
    DigestMismatch,
    ProblemError,
    TransportFailure,
    UnlearnError,
    WaitTimeout,
)

# Exit codes, stable for scripts (typer itself exits 2 on a usage error).
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_DIGEST_MISMATCH = 4
EXIT_TIMEOUT = 5
# The call worked but the answer is a failure: a job that did not succeed, a broken audit chain.
EXIT_CHECK_FAILED = 6

Record = BaseModel | Mapping[str, Any]


def _plain(record: Record) -> dict[str, Any]:
    return record.model_dump(mode="json") if isinstance(record, BaseModel) else dict(record)


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def record(self, record: Record, fields: Sequence[str] | None = None) -> None:
        """One object: all of it as JSON, or the chosen fields as a key/value list."""
        data = _plain(record)
        if self.as_json:
            print_json(data)
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for name in fields or list(data):
            table.add_row(name, _cell(_lookup(data, name)))
        Console().print(table)

    def records(self, records: Iterable[Record], columns: Sequence[str]) -> None:
        """A list: a JSON array, or a table of the chosen columns."""
        rows = [_plain(r) for r in records]
        if self.as_json:
            print_json(rows)
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns)
        for row in rows:
            table.add_row(*(_cell(_lookup(row, c)) for c in columns))
        Console().print(table)

    def problem(self, document: Mapping[str, Any]) -> None:
        """An error as problem+json on stdout (--json), else one line on stderr."""
        report_problem(dict(document), self.as_json)

    def note(self, text: str) -> None:
        """A line for people (stderr): never mixed into JSON output."""
        if not self.as_json:
            sys.stderr.write(text + "\n")


def error_document(exc: BaseException) -> dict[str, Any]:
    """The error as problem+json: the server's own document for an API error."""
    if isinstance(exc, ProblemError):
        return exc.problem
    titles = {
        TransportFailure: "Service unreachable",
        DigestMismatch: "Digest mismatch",
        WaitTimeout: "Timed out",
    }
    title = next((t for cls, t in titles.items() if isinstance(exc, cls)), "Client error")
    return {"type": "about:blank", "title": title, "detail": str(exc)}


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, ProblemError):
        return EXIT_API_ERROR
    if isinstance(exc, TransportFailure):
        return EXIT_UNREACHABLE
    if isinstance(exc, DigestMismatch):
        return EXIT_DIGEST_MISMATCH
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT
    return EXIT_USAGE if not isinstance(exc, UnlearnError) else EXIT_API_ERROR


def report_error(exc: BaseException, as_json: bool) -> int:
    """Print the error (JSON on stdout, or a line on stderr) and return the exit code."""
    report_problem(error_document(exc), as_json)
    return exit_code(exc)


def report_problem(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(document)
    else:
        status = f"{document['status']} " if "status" in document else ""
        detail = f": {document['detail']}" if document.get("detail") else ""
        sys.stderr.write(f"error: {status}{document['title']}{detail}\n")
        errors = document.get("errors")
        for item in errors[:10] if isinstance(errors, list) else []:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []))
                sys.stderr.write(f"  {where}: {item.get('msg', '')}\n")
