"""Looking up a tenant's rows for an answer: the one row a query selects or a 404, and version
references ("latest" or a number) of models and data sets."""

from __future__ import annotations

from typing import Literal, Protocol, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from service.errors import not_found, unprocessable

T = TypeVar("T")
VersionRef = int | Literal["latest"]


def one_or_404(session: Session, stmt: Select[T], kind: str, ident: str, *, lock: bool = False) -> T:
    """The one row ``stmt`` selects, or a 404 for ``kind`` ``ident``. With ``lock``, the row is
    locked (FOR UPDATE) and refreshed too: the session may hold it from before (expire_on_commit
    is off)."""
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    found = session.scalars(stmt).one_or_none()
    if found is None:
        raise not_found(kind, ident)
    return found


def parse_version_ref(ref: str | int) -> VersionRef:
    if isinstance(ref, int):
        return ref
    if ref == "latest":
        return "latest"
    # ASCII digits only: str.isdigit() also accepts "¹" (int() refuses it: a 500) and "٣" (read as 3).
    if ref.isascii() and ref.isdigit() and len(ref) < 10:
        return int(ref)
    raise unprocessable(f"version must be a positive integer or 'latest', got {ref!r}")


class Versioned(Protocol):
    """A model or a data set: named, with numbered versions."""

    @property
    def name(self) -> str: ...
    @property
    def latest_version(self) -> int | None: ...


def version_number(owner: Versioned, ref: VersionRef | str, kind: str) -> int:
    """The number ``ref`` stands for among ``owner``'s versions; "latest" with none yet is a 404."""
    parsed = parse_version_ref(ref) if isinstance(ref, str) else ref
    if parsed != "latest":
        return parsed
    if owner.latest_version is None:
        raise not_found("version", f"latest of {kind} {owner.name} (no version uploaded yet)")
    return owner.latest_version
