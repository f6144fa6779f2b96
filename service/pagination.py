"""Keyset pagination: ``?limit=&cursor=`` → ``{"items": [...], "next_cursor": str | null}``.

The cursor is opaque to clients (urlsafe base64 of JSON holding the sort key of the last item),
so pages stay stable while rows are inserted, and no OFFSET scan grows with the page number.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query, Request
from pydantic import BaseModel
from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.types import TypeDecorator

from service.errors import unprocessable

T = TypeVar("T")
Row = TypeVar("Row")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size, 1..{MAX_LIMIT}")]
Cursor = Annotated[str | None, Query(max_length=2000, description="next_cursor of the previous page")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"dt"}:
        parsed = datetime.fromisoformat(value["dt"])
        # As the columns store them: aware, in UTC (a far offset at year 1 overflows here, not in SQL).
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    return value


_INT64 = (-(2**63), 2**63 - 1)


def _fits(column: InstrumentedAttribute[Any], value: Any) -> bool:
    """Whether a cursor value can be compared with ``column``: a client-made cursor may hold
    null, a wrong type, an integer beyond the database's or a NUL byte, which the database
    would answer with an error (a 500) or, for null, with a silently empty page."""
    sql_type = column.type
    # A TypeDecorator (UTCDateTime) says "object"; the type it stores as says what compares.
    python_type = (sql_type.impl_instance if isinstance(sql_type, TypeDecorator) else sql_type).python_type
    if python_type is int:
        return type(value) is int and _INT64[0] <= value <= _INT64[1]
    if python_type is str:
        return isinstance(value, str) and "\x00" not in value
    if python_type is datetime:
        return isinstance(value, datetime)
    return False


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([_encode_value(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, columns: Sequence[InstrumentedAttribute[Any]]) -> list[Any]:
    """The sort key a cursor holds, each value checked against its column's type (422 if not)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(columns):
            raise ValueError("wrong shape")
        decoded = [_decode_value(v) for v in values]
        if not all(_fits(c, v) for c, v in zip(columns, decoded, strict=True)):
            raise ValueError("wrong value types")
        return decoded
    # ValueError covers bad base64 and JSON (and UnicodeDecodeError); TypeError a non-string
    # "dt"; OverflowError a datetime out of range; RecursionError deeply nested JSON.
    except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error) as exc:
        raise unprocessable("invalid cursor: pass next_cursor from a previous page unchanged") from exc


def paginate(
    session: Session,
    stmt: Select[Any],
    *,
    order_by: Sequence[InstrumentedAttribute[Any]],
    limit: int,
    cursor: str | None,
    descending: bool = False,
    key: Callable[[Any], Sequence[Any]] | None = None,
) -> tuple[list[Any], str | None]:
    """Run ``stmt`` (selecting one ORM entity) one page at a time, ordered by ``order_by``
    (a unique combination of columns). Returns the rows and the cursor of the next page."""
    cols = list(order_by)
    if cursor is not None:
        after = decode_cursor(cursor, cols)
        if len(cols) == 1:
            cond = cols[0] < after[0] if descending else cols[0] > after[0]
        else:
            cond = tuple_(*cols) < tuple_(*after) if descending else tuple_(*cols) > tuple_(*after)
        stmt = stmt.where(cond)
    stmt = stmt.order_by(*[c.desc() if descending else c.asc() for c in cols]).limit(limit + 1)
    rows = list(session.scalars(stmt).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        values = key(last) if key else [getattr(last, c.key) for c in cols]
        next_cursor = encode_cursor(values)
    return rows, next_cursor


def page_of(
    session: Session,
    stmt: Select[Any],
    out: Callable[[Any], Any],
    *,
    order_by: Sequence[InstrumentedAttribute[Any]],
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of ``stmt`` (see :func:`paginate`) as the answer ``Page`` describes, each row
    passed through ``out``."""
    rows, next_cursor = paginate(session, stmt, order_by=order_by, limit=limit, cursor=cursor)
    return {"items": [out(row) for row in rows], "next_cursor": next_cursor}


def _allowed_query_names(dependant: Any, names: set[str]) -> None:
    for field in dependant.query_params:
        annotation = getattr(field.field_info, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for fname, finfo in annotation.model_fields.items():
                names.add(finfo.alias or fname)
        names.add(field.alias)
    for sub in dependant.dependencies:
        _allowed_query_names(sub, names)


_ALLOWED_ATTR = "_unlearn_allowed_query"


def forbid_unknown_query(request: Request) -> None:
    """An unknown query parameter is a client mistake (a typo filters nothing): answer 422."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    # Cached on the route object itself (an id()-keyed cache could outlive a route in tests).
    allowed: frozenset[str] | None = getattr(route, _ALLOWED_ATTR, None)
    if allowed is None:
        names: set[str] = set()
        _allowed_query_names(dependant, names)
        allowed = frozenset(names)
        setattr(route, _ALLOWED_ATTR, allowed)
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        raise unprocessable(
            f"unknown query parameter(s): {', '.join(unknown)}",
            allowed=sorted(allowed),
            errors=[
                {"loc": ["query", name], "msg": "unknown query parameter", "type": "extra_forbidden"}
                for name in unknown
            ],
        )
