"""Eventual exactness: retrain exactly after N erasures or after T hours.

A model may ask (``exactness`` = ``{"after_erasures": N, "after_hours": T}``) that the approximate
versions its erasures produced be replaced, in time, by a version retrained without every erased
sample on the current dataset version, with the recorded recipe. The training job measures how
far the approximate version was from the exact one (service/jobs/training.py ``compare``), so the
model's history shows it, and each request's answer shows both stages.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.context import ServiceContext
from service.datasets.records import get_version_by_id
from service.db import session_scope, utcnow
from service.jobs.states import JobKind, JobStatus, RequestStatus, TrainReason
from service.registry import lineage
from service.tables import DeletionRequest, Job, Model, ModelVersion

# A request run with this method was retrained without its samples: exact already, so it neither
# counts toward an exact retrain nor is exactly erased again by one.
EXACT_METHOD = "retrain"


class ExactnessPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after_erasures: int | None = Field(None, ge=1, le=100_000)
    after_hours: float | None = Field(None, gt=0, le=24 * 365)


def maybe_schedule(
    session: Session, ctx: ServiceContext, model: Model, actor: str, *, by_time: bool = False
) -> bool:
    """Queue an exact retrain of ``model`` if its policy says it is due (in the caller's
    transaction); True if one was queued. ``by_time``: the reconciler's periodic check."""
    if not model.exactness or model.latest_version is None:
        return False
    policy = ExactnessPolicy.model_validate(model.exactness)
    busy = session.scalar(
        select(Job.id).where(
            Job.model_id == model.id,
            Job.kind == JobKind.TRAIN,
            Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
        )
    )
    if busy is not None:
        return False
    pending = session.execute(
        select(
            func.count(func.distinct(DeletionRequest.job_id)), func.min(DeletionRequest.finished_at)
        ).where(
            DeletionRequest.model_id == model.id,
            DeletionRequest.status == RequestStatus.COMPLETED,
            DeletionRequest.job_id.is_not(None),
            DeletionRequest.exact_version.is_(None),
            DeletionRequest.method != EXACT_METHOD,
        )
    ).one()
    n_jobs, oldest = int(pending[0] or 0), pending[1]
    if n_jobs == 0:
        return False
    due = policy.after_erasures is not None and n_jobs >= policy.after_erasures
    if policy.after_hours is not None and oldest is not None:
        due = due or utcnow() - oldest >= timedelta(hours=policy.after_hours)
    if not due:
        return False
    latest = session.scalars(
        select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.version == model.latest_version
        )
    ).one()
    if latest.dataset_version_id is None or latest.recipe is None:
        return False  # nothing to retrain from: the version names no training data or recipe
    dataset, dv = get_version_by_id(session, latest.dataset_version_id)
    link = lineage.TrainingLink(dv.id, dataset.name, dv.version, latest.recipe)
    from service.jobs.training import create_training_job

    create_training_job(session, ctx, model, link, dict(latest.recipe), TrainReason.EXACTNESS, actor)
    return True


def schedule_due(ctx: ServiceContext) -> int:
    """The reconciler's pass: queue the exact retrains that time has made due."""
    queued = 0
    with session_scope(ctx.session_factory) as s:
        models = list(s.scalars(select(Model).where(Model.exactness.is_not(None))))
    for model in models:
        with session_scope(ctx.session_factory) as s:
            row = s.get(Model, model.id)
            if row is not None and maybe_schedule(s, ctx, row, "system:reconciler", by_time=True):
                queued += 1
    return queued


def stages(req: DeletionRequest) -> list[dict[str, Any]]:
    """What a request's answer shows: approximately forgotten in vN, exactly erased in vM."""
    out: list[dict[str, Any]] = []
    if req.status == RequestStatus.COMPLETED and req.result_version is not None:
        stage = "exact" if req.method == EXACT_METHOD else "approximate"
        out.append({"stage": stage, "version": req.result_version})
    if req.exact_version is not None:
        out.append({"stage": "exact", "version": req.exact_version})
    return out
