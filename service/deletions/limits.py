"""What one tenant may ask of the shared workers: bounded method params and a bounded backlog."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.errors import Problem, unprocessable
from service.jobs.states import RequestStatus
from service.settings import Settings
from service.tables import DeletionRequest

# How long a client told "too many queued samples" should wait before trying again.
BACKLOG_RETRY_AFTER_SECONDS = 30


def check_param_bounds(settings: Settings, params: dict[str, Any]) -> None:
    """Numeric params above the operator's bounds (``UNLEARN_METHOD_PARAM_BOUNDS``) → 422."""
    for name, bound in settings.method_param_bounds.items():
        value = params.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > bound:
            raise unprocessable(
                f"params.{name}={value} exceeds this service's bound {bound:g}",
                error="ParamsError",
                bound=bound,
            )


def check_backlog(session: Session, settings: Settings, tenant_id: str, n_new: int) -> None:
    """A tenant's queued and running samples stay within ``tenant_max_queued_samples`` → else 429."""
    pending = session.scalar(
        select(func.coalesce(func.sum(DeletionRequest.n_samples), 0)).where(
            DeletionRequest.tenant_id == tenant_id,
            DeletionRequest.status.in_((RequestStatus.QUEUED, RequestStatus.RUNNING)),
        )
    )
    limit = settings.tenant_max_queued_samples
    if int(pending or 0) + n_new > limit:
        raise Problem(
            429,
            "Too Many Requests",
            f"this tenant has {int(pending or 0)} samples waiting to be forgotten; {n_new} more would pass "
            f"its limit of {limit}",
            headers={"Retry-After": str(BACKLOG_RETRY_AFTER_SECONDS)},
            limit=limit,
        )
