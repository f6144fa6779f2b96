"""The success transaction of a job: the new version, its requests completed, one audit event.

Fenced: the checkpoint is written first (content-addressed, so idempotent), then one transaction
flips the job to succeeded only if this worker still owns it, the model lock is still its own and
the model's latest version is still the job's base version. Otherwise publishing would fork the
model's history, and nothing is written.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.context import ServiceContext
from service.db import utcnow
from service.jobs import lifecycle
from service.jobs.errors import LostLease
from service.jobs.exactness import maybe_schedule
from service.jobs.inputs import JobInputs
from service.jobs.lifecycle import Claim
from service.jobs.states import JobStatus, RequestStatus
from service.jobs.training_data import erase_from_training_set
from service.privacy import keyed_digests
from service.references.retirement import retire_sets_holding
from service.registry.logic import publish_version
from service.registry.retirement import retire_superseded
from service.storage import StoredObject
from service.tables import DatasetVersion, DeletionRequest, Job, Model
from service.unit_of_work import purge_after_commit


def publish_result(
    s: Session,
    ctx: ServiceContext,
    claim: Claim,
    worker_id: str,
    inputs: JobInputs,
    stored: StoredObject,
    metrics: dict[str, Any],
    key: bytes,
) -> int:
    """Publish in the caller's transaction; returns the new version number (LostLease if fenced)."""
    now = utcnow()
    res = s.execute(
        update(Job)
        .where(Job.id == claim.job_id, Job.lease_owner == worker_id, Job.status == JobStatus.RUNNING)
        .values(
            status=JobStatus.SUCCEEDED,
            stage="done",
            progress=1.0,
            finished_at=now,
            metrics=metrics,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    if lifecycle.rowcount(res) != 1:
        raise LostLease("the job is no longer owned by this worker")
    model_row = s.scalars(
        select(Model)
        .where(Model.id == claim.model_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if model_row.lock_job_id != claim.job_id or model_row.latest_version != claim.base_version:
        raise LostLease(
            f"model lock or base moved (lock={model_row.lock_job_id}, latest={model_row.latest_version})"
        )
    actor = f"worker:{worker_id}"
    link = inputs.base.dataset_version_id
    if link is not None and inputs.sample_ids:
        link = erase_from_training_set(s, ctx, link, inputs.sample_ids, actor)
    version = publish_version(
        s,
        model_row,
        sha256=stored.sha256,
        size_bytes=stored.size,
        storage_key=stored.key,
        parent_version=claim.base_version,
        created_by_job=claim.job_id,
        eval_set_sha256=inputs.base.eval_set_sha256,
        eval_set_key=inputs.base.eval_set_key,
        eval_set_samples=inputs.base.eval_set_samples,
        metrics=metrics,
        description=f"unlearned {len(inputs.digests)} samples with {claim.method} (job {claim.job_id})",
        dataset_version_id=link,
        recipe=inputs.base.recipe,
    )
    # Every earlier version still carries the erased samples' influence.
    assert claim.base_version is not None, "an unlearning job always has a base version"
    retired = retire_superseded(s, model_row, claim.base_version, actor=actor, job_id=claim.job_id)
    # Reference sets trained on the erased samples hold them too. This job's own LiRA test ran
    # against its model's set before this transaction; the blobs go after the commit.
    sets_retired = _retire_reference_sets(s, ctx, claim, inputs, link, actor)
    if sets_retired:
        metrics = {**metrics, "references_retired": sets_retired}
    s.execute(
        update(Job)
        .where(Job.id == claim.job_id)
        .values(result_version=version.version, metrics=metrics)
        .execution_options(synchronize_session=False)
    )
    s.execute(
        update(DeletionRequest)
        .where(DeletionRequest.job_id == claim.job_id)
        .values(
            status=RequestStatus.COMPLETED,
            result_version=version.version,
            finished_at=now,
            updated_at=now,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    lifecycle.release_model_lock(s, claim.model_id, claim.job_id)
    append_event(
        s,
        actor=actor,
        action="job.succeeded",
        tenant_id=claim.tenant_id,
        model=claim.model_name,
        object_id=claim.job_id,
        payload={
            "base_version": claim.base_version,
            "result_version": version.version,
            "sha256": stored.sha256,
            "method": claim.method,
            "n_samples": len(inputs.digests),
            "deletion_requests": inputs.request_ids,
            "sample_digests": keyed_digests(key, inputs.digests),
            "metrics": metrics,
            "retired_versions": retired,
            "references_retired": sets_retired,
            "dataset_version_id": link,
        },
    )
    lifecycle.enqueue_next_job(s, claim.model_id, exclude=claim.job_id)
    # Count this erasure toward the model's eventual exactness (an exact retrain when due).
    maybe_schedule(s, ctx, model_row, actor)
    purge_after_commit(s, inputs.request_ids)
    return version.version


def _retire_reference_sets(
    s: Session, ctx: ServiceContext, claim: Claim, inputs: JobInputs, link: str | None, actor: str
) -> list[str]:
    """Retire the reference sets that hold the samples this job erased from its training data."""
    if link is None or not inputs.sample_ids:
        return []
    dataset_id = s.scalar(select(DatasetVersion.dataset_id).where(DatasetVersion.id == link))
    assert dataset_id is not None
    erasure_ids = [
        e
        for e in s.scalars(
            select(DeletionRequest.erasure_id).where(DeletionRequest.job_id == claim.job_id).distinct()
        )
        if e is not None
    ]
    return retire_sets_holding(
        s,
        ctx,
        dataset_id=dataset_id,
        sample_ids=inputs.sample_ids,
        actor=actor,
        job_id=claim.job_id,
        erasure_ids=erasure_ids,
    )
