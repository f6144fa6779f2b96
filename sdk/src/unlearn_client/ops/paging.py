"""Every item of a paginated list, page after page (``?cursor=`` = the previous ``next_cursor``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from unlearn_client.flow import Emit, EmittingFlow, Flow
from unlearn_client.models import Page

X = TypeVar("X")


def every_item(page_at: Callable[[str | None], Flow[Page[X]]]) -> EmittingFlow[X, None]:
    """Emit the items of ``page_at(None)``, then of the pages after it, until ``next_cursor`` is null."""
    cursor: str | None = None
    while True:
        page = yield from page_at(cursor)
        for item in page.items:
            yield Emit(item)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
