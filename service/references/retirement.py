"""Reference sets that hold erased samples: retired when the erasure publishes, then deleted.

A reference set is derived data of the dataset version it was trained on: every sample of that
version is IN for ⌊K/2⌋ of its models, so once an erasure removes samples from the data, every
set trained on a version that held them still holds them. Such a set is retired in the
transaction that publishes the erasure (its job's ``metrics.retired``: when, why, by which job
and erasure; an audit event ``references.retired``), and its checkpoints and membership blob are
deleted from storage after that commit (``metrics.retired.blobs_deleted_at``, an audit event
``references.deleted``); the reconciler deletes them for a set whose after-commit delete failed.

Order: a set is kept while its own model's erasure has not published yet (the dataset version
that model's latest version links still holds the samples, by its index, whatever its status),
because that model's deletion job tests its forget samples against the set (LiRA needs the
samples' IN/OUT references). The job's own publish retires it, once the test has run. A later
job on the model finds no usable set and says so; a new set is built from the current data with
``POST /v1/models/{name}/references``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.context import ServiceContext
from service.datasets import index
from service.datasets.states import VersionStatus as DatasetVersionStatus
from service.db import session_scope, utcnow
from service.jobs.states import JobKind, JobStatus
from service.tables import DatasetVersion, Job, Model, ModelVersion
from service.unit_of_work import call_after_commit

log = structlog.get_logger("service.references.retirement")

REASON_ERASURE = "erasure"
PURGE_ACTOR = "system:references"


def set_keys(metrics: dict[str, Any]) -> set[str]:
    """Every storage key a set's metrics name: its checkpoints and its membership blob."""
    keys = {str(k) for k in metrics.get("checkpoints") or []}
    if metrics.get("membership_key"):
        keys.add(str(metrics["membership_key"]))
    return keys


def retired_info(job: Job) -> dict[str, Any] | None:
    """The set's ``metrics.retired`` (None while it is usable)."""
    retired = (job.metrics or {}).get("retired")
    return dict(retired) if retired else None


def retire_sets_holding(
    session: Session,
    ctx: ServiceContext,
    *,
    dataset_id: str,
    sample_ids: Sequence[str],
    actor: str,
    job_id: str | None = None,
    erasure_ids: Sequence[str] = (),
) -> list[str]:
    """Retire every usable reference set (of any model of the dataset's tenant) trained on a
    version of ``dataset_id`` that held ``sample_ids``, unless its model's own erasure of them
    is still to publish; in the caller's transaction, with the blobs deleted after its commit.
    Returns the ids of the sets (references jobs) retired."""
    if not sample_ids:
        return []
    candidates = list(
        session.scalars(
            select(Job)
            .join(DatasetVersion, Job.dataset_version_id == DatasetVersion.id)
            .where(
                Job.kind == JobKind.REFERENCES,
                Job.status == JobStatus.SUCCEEDED,
                DatasetVersion.dataset_id == dataset_id,
            )
            .order_by(Job.id)
            # Two publishing jobs (of two models) retire a shared candidate once (PostgreSQL;
            # SQLite's write lock orders them anyway).
            .with_for_update(of=Job)
            .execution_options(populate_existing=True)
        )
    )
    now = utcnow()
    retired: list[str] = []
    for job in candidates:
        if retired_info(job) is not None or job.dataset_version_id is None:
            continue
        if not _holds(session, job.dataset_version_id, sample_ids):
            continue
        model = session.get(Model, job.model_id)
        assert model is not None
        if _still_to_forget(session, model, dataset_id, sample_ids):
            continue  # its own deletion job tests against this set first, and retires it
        metrics = dict(job.metrics or {})
        version = session.scalar(
            select(DatasetVersion.version).where(DatasetVersion.id == job.dataset_version_id)
        )
        info = {
            "at": now.isoformat(),
            "reason": REASON_ERASURE,
            "job_id": job_id,
            "erasure_ids": sorted(set(erasure_ids)),
            "dataset_version": version,
            "detail": (
                f"trained on dataset version {version}, which held samples erased since"
                + (f" (job {job_id})" if job_id else "")
                + "; build a new set from the current data with POST "
                f"/v1/models/{model.name}/references"
            ),
        }
        job.metrics = {**metrics, "retired": info}
        append_event(
            session,
            actor=actor,
            action="references.retired",
            tenant_id=job.tenant_id,
            model=model.name,
            object_id=job.id,
            payload={
                "reason": REASON_ERASURE,
                "job_id": job_id,
                "erasure_ids": info["erasure_ids"],
                "dataset_version_id": job.dataset_version_id,
                "dataset_version": version,
                "k": metrics.get("k"),
                "n_blobs": len(set_keys(metrics)),
            },
        )
        retired.append(job.id)
    if retired:
        session.flush()
        ids = list(retired)

        def purge() -> None:
            purge_retired_sets(ctx, ids)

        call_after_commit(session, purge)
        log.info("reference_sets_retired", sets=retired, job_id=job_id)
    return retired


def _holds(session: Session, dataset_version_id: str, sample_ids: Sequence[str]) -> bool:
    """Whether the version held any of the samples, by its sample index (whatever its status: a
    retired version keeps its index). A purged version's index is gone: it counts as holding them."""
    status = session.scalar(select(DatasetVersion.status).where(DatasetVersion.id == dataset_version_id))
    if status == DatasetVersionStatus.PURGED:
        return True
    return bool(index.positions(session, dataset_version_id, list(sample_ids)))


def _still_to_forget(session: Session, model: Model, dataset_id: str, sample_ids: Sequence[str]) -> bool:
    """Whether the model's latest version is still trained on the samples: its own erasure job
    has not published (queued, running, or to be retried), and will test against its set.

    Read from the index of the dataset version the latest version links, whatever that version's
    status: since lineages are per model, a model may keep linking a retired version (its own
    lineage's, or one the dataset replaced), and once its erasure of the samples published the
    link lacks them. A purged link (no index; no by-reference job can read it) does not count."""
    if model.latest_version is None:
        return False
    link = session.scalar(
        select(ModelVersion.dataset_version_id).where(
            ModelVersion.model_id == model.id, ModelVersion.version == model.latest_version
        )
    )
    if link is None:
        return False
    linked = session.execute(
        select(DatasetVersion.dataset_id, DatasetVersion.status).where(DatasetVersion.id == link)
    ).one_or_none()
    if linked is None or linked[0] != dataset_id or linked[1] == DatasetVersionStatus.PURGED:
        return False
    return bool(index.positions(session, link, list(sample_ids)))


def purge_retired_sets(ctx: ServiceContext, set_ids: Sequence[str] | None = None) -> int:
    """Delete the blobs of retired sets (those named, or every one not yet deleted) and record
    it. A blob another usable set lists (content-addressed: the same bytes) is kept. The set was
    retired in a committed transaction, so its blobs go first and the record follows: a failure
    in between leaves a set the next pass deletes again. Returns how many sets were purged."""
    doomed: dict[str, set[str]] = {}
    kept: set[str] = set()
    with session_scope(ctx.session_factory) as s:
        finished = (Job.kind == JobKind.REFERENCES) & (Job.status == JobStatus.SUCCEEDED)
        rows = s.execute(select(Job.id, Job.metrics).where(finished)).all()
        for job_id, metrics in rows:
            metrics = metrics or {}
            retired = metrics.get("retired")
            if not retired:
                kept |= set_keys(metrics)
            elif not retired.get("blobs_deleted_at") and (set_ids is None or job_id in set_ids):
                doomed[job_id] = set_keys(metrics)
    if not doomed:
        return 0
    deleted: dict[str, int] = {}
    for job_id, keys in doomed.items():
        deleted[job_id] = 0
        for key in sorted(keys - kept):
            ctx.storage.delete(key)
            deleted[job_id] += 1
    now = utcnow()
    with session_scope(ctx.session_factory) as s:
        for job in s.scalars(select(Job).where(Job.id.in_(list(doomed))).with_for_update()):
            metrics = dict(job.metrics or {})
            retired = dict(metrics.get("retired") or {})
            if retired.get("blobs_deleted_at"):
                continue
            retired["blobs_deleted_at"] = now.isoformat()
            job.metrics = {**metrics, "retired": retired}
            model = s.get(Model, job.model_id)
            append_event(
                s,
                actor=PURGE_ACTOR,
                action="references.deleted",
                tenant_id=job.tenant_id,
                model=model.name if model is not None else None,
                object_id=job.id,
                payload={
                    "n_blobs": len(doomed[job.id]),
                    "n_deleted": deleted[job.id],
                    "n_shared_kept": len(doomed[job.id]) - deleted[job.id],
                },
            )
    log.info("reference_sets_deleted", sets=sorted(doomed), blobs=sum(deleted.values()))
    return len(doomed)
