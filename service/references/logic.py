"""Queueing a reference set, and finding a model's newest one."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.context import ServiceContext
from service.datasets.records import get_version_by_id
from service.datasets.states import VersionStatus as DatasetVersionStatus
from service.deps import Principal
from service.errors import conflict, unprocessable
from service.jobs.states import JobKind, JobStatus
from service.outbox import enqueue_job
from service.references.schemas import ReferencesIn
from service.registry.logic import get_model, get_version
from service.tables import Job

# Storage kind of the reference checkpoints and membership blobs (safetensors).
STORAGE_KIND = "references"


def submit(
    ctx: ServiceContext, db: Session, principal: Principal, model_name: str, body: ReferencesIn
) -> Job:
    """A queued references job for the model's latest version (409 when the service has reference
    models off or an erasure replaced the data the version was trained on, 422 when the version
    names no training data and recipe or K is past the limit)."""
    settings = ctx.settings
    if settings.reference_models == 0:
        raise conflict("reference models are off on this service (UNLEARN_REFERENCE_MODELS=0)")
    k = body.k if body.k is not None else settings.reference_models
    if k > settings.reference_models_max:
        raise unprocessable(f"k={k} exceeds this service's limit of {settings.reference_models_max}")
    model = get_model(db, principal.tenant_id, model_name, for_update=True)
    if model.latest_version is None:
        raise unprocessable(f"model {model_name} has no version")
    latest = get_version(db, model, str(model.latest_version))
    if latest.dataset_version_id is None or latest.recipe is None:
        raise unprocessable(
            f"version {latest.version} of model {model_name} names no registered training data and "
            "recipe: reference models are trained from them"
        )
    dataset, data = get_version_by_id(db, latest.dataset_version_id)
    if data.status != DatasetVersionStatus.READY:
        raise conflict(
            f"version {data.version} of dataset {dataset.name}, which version {latest.version} of model "
            f"{model_name} was trained on, was replaced by an erasure: a set trained on it would hold "
            "erased samples; build the set once the model's deletion job has published",
            dataset_version_status=data.status,
        )
    n = data.n_samples
    if n > settings.training_max_samples:
        raise unprocessable(
            f"the training set has {n} samples; this service trains on at most "
            f"{settings.training_max_samples}"
        )
    job = Job(
        tenant_id=model.tenant_id,
        model_id=model.id,
        kind=JobKind.REFERENCES,
        method="references",
        params={"k": k, "seed": body.seed, "recipe": latest.recipe},
        policy={},
        seed=body.seed,
        status=JobStatus.QUEUED,
        n_requests=0,
        n_samples=0,
        attempts=0,
        max_attempts=settings.job_max_attempts,
        dataset_version_id=latest.dataset_version_id,
        reason="requested",
        method_reason=f"{k} reference models for per-example membership tests",
    )
    db.add(job)
    db.flush()
    enqueue_job(db, job.id)
    append_event(
        db,
        actor=principal.actor,
        action="references.requested",
        tenant_id=model.tenant_id,
        model=model.name,
        object_id=job.id,
        payload={"k": k, "seed": body.seed, "version": latest.version, "n_samples": n},
    )
    return job


def latest_set(session: Session, model_id: str) -> Job | None:
    """The model's newest usable reference set: its newest finished references job (its metrics
    name the stored set) that no erasure retired (``service.references.retirement``)."""
    for job in _finished_sets(session, model_id):
        if not (job.metrics or {}).get("retired"):
            return job
    return None


def newest_set(session: Session, model_id: str) -> Job | None:
    """The model's newest finished references job, retired or not (to say why none is usable)."""
    return next(iter(_finished_sets(session, model_id)), None)


def _finished_sets(session: Session, model_id: str) -> list[Job]:
    return list(
        session.scalars(
            select(Job)
            .where(
                Job.model_id == model_id,
                Job.kind == JobKind.REFERENCES,
                Job.status == JobStatus.SUCCEEDED,
            )
            .order_by(Job.finished_at.desc(), Job.id.desc())
        )
    )
