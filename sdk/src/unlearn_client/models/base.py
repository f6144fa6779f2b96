"""The base of every answer, and pages of lists."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Page(ApiModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``cursor`` for the next one (None: the end)."""

    items: list[T]
    next_cursor: str | None = None
