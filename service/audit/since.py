"""``?since=`` of ``GET /v1/audit``: an ISO 8601 date-time, nothing else.

Pydantic reads a bare number as a Unix time, so ``since=0.5`` meant 1970 and matched every event:
a client that sent seconds where a date was meant got no error, only a wrong answer. Numbers are
refused (422); a date-time without an offset is UTC, as the events' own ``ts`` are.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

# [0-9], not \\d: Python's \\d also matches other scripts' digits, which the parser then refuses.
DATE_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?$"
)
EXAMPLE = "2026-01-31T00:00:00Z"


def _iso_only(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or re.fullmatch(DATE_TIME_PATTERN, value) is None:
        raise ValueError(f"must be an ISO 8601 date-time such as {EXAMPLE} (not a number)")
    return value


def _in_utc(value: datetime) -> datetime:
    try:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:  # year 1 at +14:00, or year 9999 at -14:00: before or after any event
        raise ValueError("the date-time is out of range in UTC") from None


IsoDateTime = Annotated[
    datetime,
    BeforeValidator(_iso_only),
    AfterValidator(_in_utc),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": DATE_TIME_PATTERN}),
]

Since = Annotated[
    IsoDateTime | None,
    Query(
        description="ISO 8601 date-time (e.g. 2026-01-31T00:00:00Z; no offset means UTC): events at or "
        "after it. A number is refused.",
    ),
]
