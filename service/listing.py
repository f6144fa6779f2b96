"""Lists of a tenant's per-model objects (jobs, deletion requests): ``?model=&status=&limit=&cursor=``.

Both lists filter and page the same way, newest first: the query parameters are declared once
(``ModelListQuery``) and the query is built once (``page_model_rows``), so the two endpoints cannot
drift apart in validation, ordering or error answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from service.errors import not_found, unprocessable
from service.pagination import DEFAULT_LIMIT, Cursor, Limit, paginate
from service.registry.logic import get_model
from service.tables import DeletionRequest, Erasure, Job, Model

Row = TypeVar("Row", Job, DeletionRequest)
Owned = TypeVar("Owned", Job, DeletionRequest, Erasure)


@dataclass(frozen=True)
class ModelListQuery:
    model: str | None = None
    status: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def _model_list_query(
    model: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> ModelListQuery:
    return ModelListQuery(model=model, status=status, limit=limit, cursor=cursor)


ModelListParams = Annotated[ModelListQuery, Depends(_model_list_query)]


def page_model_rows(
    db: Session,
    entity: type[Row],
    tenant_id: str,
    query: ModelListQuery,
    *,
    statuses: tuple[str, ...],
    where: Sequence[ColumnElement[bool]] = (),
) -> tuple[list[Row], dict[str, str], str | None]:
    """One page of the tenant's ``entity`` rows, newest first, and the names of their models.

    Returns (rows, model id → model name for every row, next cursor). An unknown status → 422
    (checked first), a model the tenant does not have → 404.
    """
    stmt = select(entity).where(entity.tenant_id == tenant_id, *where)
    if query.status is not None:
        if query.status not in statuses:
            raise unprocessable(f"status must be one of {', '.join(statuses)}")
        stmt = stmt.where(entity.status == query.status)
    names: dict[str, str] = {}
    if query.model is not None:
        m = get_model(db, tenant_id, query.model)
        stmt = stmt.where(entity.model_id == m.id)
        names[m.id] = m.name
    rows, next_cursor = paginate(
        db,
        stmt,
        order_by=[entity.created_at, entity.id],
        limit=query.limit,
        cursor=query.cursor,
        descending=True,
    )
    # One query for the names of all models on the page, not one per row.
    missing = {r.model_id for r in rows} - set(names)
    if missing:
        names.update(dict(db.execute(select(Model.id, Model.name).where(Model.id.in_(missing))).all()))
    return rows, names, next_cursor


def get_owned(
    db: Session, entity: type[Owned], tenant_id: str, ident: str, kind: str, *, owner: type[Any] = Model
) -> tuple[Owned, str]:
    """One of the tenant's ``entity`` rows by id, with the name of the model (or dataset) that owns
    it; another tenant's row is a 404, as a missing one."""
    fk = getattr(entity, "dataset_id" if owner is not Model else "model_id")
    row = db.execute(
        select(entity, owner.name)
        .join(owner, owner.id == fk)
        .where(entity.id == ident, entity.tenant_id == tenant_id)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        raise not_found(kind, ident)
    return row[0], row[1]
