"""Retiring model versions, rolling back, and deleting the blobs of retired versions.

A version that still carries erased data is retired when the erasing job publishes: its
downloads answer 410 Gone, and its blob is deleted after a grace period (data: at once by
default; checkpoints: 7 days, so an owner can still recover from a failed deploy by rolling back
to a version retired *by the owner*). An owner may retire a version explicitly, and roll back
to an earlier version that is still ready, or was retired by the owner and whose blob is still
kept. Rolling back to a version retired by an erasure is refused: it would bring the data back.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.audit.logic import append_event
from service.db import db_time, session_scope, utcnow
from service.errors import Problem, conflict
from service.registry.logic import get_model, get_version, publish_version
from service.storage import ArtifactStore
from service.tables import Model, ModelVersion

log = structlog.get_logger("service.registry.retirement")


class VersionStatus(StrEnum):
    READY = "ready"
    RETIRED = "retired"


class RetiredReason(StrEnum):
    ERASURE = "erasure"  # it still holds data that was erased since
    OWNER = "owner"  # the owner retired it


def gone(model: str, version: ModelVersion) -> Problem:
    return Problem(
        410,
        "Gone",
        f"version {version.version} of model {model} was retired ({version.retired_reason}) at "
        f"{version.retired_at:%Y-%m-%dT%H:%M:%SZ}; its checkpoint is no longer served",
        retired_reason=version.retired_reason,
    )


def retire_superseded(session: Session, model: Model, up_to: int, *, actor: str, job_id: str) -> list[int]:
    """Retire every ready version of ``model`` up to ``up_to``: they were trained on, or still
    carry the influence of, data a job just erased. In the caller's transaction."""
    now = utcnow()
    numbers = list(
        session.scalars(
            select(ModelVersion.version).where(
                ModelVersion.model_id == model.id,
                ModelVersion.version <= up_to,
                ModelVersion.status == VersionStatus.READY,
            )
        )
    )
    if not numbers:
        return []
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.model_id == model.id, ModelVersion.version.in_(numbers))
        .values(status=VersionStatus.RETIRED, retired_at=now, retired_reason=RetiredReason.ERASURE)
        .execution_options(synchronize_session=False)
    )
    append_event(
        session,
        actor=actor,
        action="versions.retired",
        tenant_id=model.tenant_id,
        model=model.name,
        object_id=job_id,
        payload={"versions": numbers, "reason": str(RetiredReason.ERASURE), "job_id": job_id},
    )
    return numbers


def retire_by_owner(session: Session, tenant_id: str, model_name: str, ref: str, actor: str) -> ModelVersion:
    model = get_model(session, tenant_id, model_name, for_update=True)
    version = get_version(session, model, ref)
    if version.version == model.latest_version:
        raise conflict(
            f"version {version.version} is the model's latest: roll back to another version first",
            latest_version=model.latest_version,
        )
    if version.status == VersionStatus.RETIRED:
        return version  # idempotent
    version.status = VersionStatus.RETIRED
    version.retired_at = utcnow()
    version.retired_reason = RetiredReason.OWNER
    session.flush()
    append_event(
        session,
        actor=actor,
        action="version.retired",
        tenant_id=tenant_id,
        model=model.name,
        object_id=version.id,
        payload={"version": version.version, "reason": str(RetiredReason.OWNER)},
    )
    return version


def rollback(session: Session, tenant_id: str, model_name: str, to: int, actor: str) -> ModelVersion:
    """A new latest version with the bytes of version ``to`` (never one that held erased data)."""
    model = get_model(session, tenant_id, model_name, for_update=True)
    if model.lock_job_id is not None:
        raise conflict(f"a job of model {model_name} is running; roll back when it has ended")
    target = get_version(session, model, to)
    if target.version == model.latest_version:
        raise conflict(f"version {to} already is the model's latest")
    if target.retired_reason == RetiredReason.ERASURE:
        raise conflict(
            f"version {to} was retired because data it holds was erased since; rolling back to it "
            "would bring that data back",
            retired_reason=target.retired_reason,
        )
    if target.blob_deleted_at is not None:
        raise Problem(410, "Gone", f"the checkpoint of version {to} was deleted after its grace period")
    version = publish_version(
        session,
        model,
        sha256=target.sha256,
        size_bytes=target.size_bytes,
        storage_key=target.storage_key,
        parent_version=target.version,
        eval_set_sha256=target.eval_set_sha256,
        eval_set_key=target.eval_set_key,
        eval_set_samples=target.eval_set_samples,
        metrics=None,
        description=f"rollback to version {target.version}",
        dataset_version_id=target.dataset_version_id,
        recipe=target.recipe,
    )
    append_event(
        session,
        actor=actor,
        action="version.rolled_back",
        tenant_id=tenant_id,
        model=model.name,
        object_id=version.id,
        payload={"version": version.version, "to_version": target.version, "sha256": target.sha256},
    )
    return version


def delete_expired_blobs(
    sessions: sessionmaker[Session], storage: ArtifactStore, erasure_grace_s: float, owner_grace_s: float
) -> int:
    """Delete the checkpoints of versions retired longer ago than their grace period (unless a
    ready version shares the content-addressed blob, as a rollback's copy does)."""
    now = utcnow()
    doomed: list[str] = []
    with session_scope(sessions) as s:
        due = list(
            s.scalars(
                select(ModelVersion)
                .where(
                    ModelVersion.status == VersionStatus.RETIRED,
                    ModelVersion.blob_deleted_at.is_(None),
                    (
                        (ModelVersion.retired_reason == RetiredReason.ERASURE)
                        & (ModelVersion.retired_at <= db_time(now - timedelta(seconds=erasure_grace_s)))
                    )
                    | (
                        (ModelVersion.retired_reason == RetiredReason.OWNER)
                        & (ModelVersion.retired_at <= db_time(now - timedelta(seconds=owner_grace_s)))
                    ),
                )
                .limit(500)
            )
        )
        for version in due:
            version.blob_deleted_at = now
            shared = s.scalar(
                select(ModelVersion.id)
                .where(
                    ModelVersion.storage_key == version.storage_key,
                    ModelVersion.status == VersionStatus.READY,
                )
                .limit(1)
            )
            if shared is None:
                doomed.append(version.storage_key)
            model = s.get(Model, version.model_id)
            append_event(
                s,
                actor="system:reconciler",
                action="version.blob_deleted",
                tenant_id=model.tenant_id if model else None,
                model=model.name if model else None,
                object_id=version.id,
                payload={"version": version.version, "sha256": version.sha256, "shared": shared is not None},
            )
    # After the commit: a blob is never gone while a row still says it is kept.
    for key in doomed:
        storage.delete(key)
    if doomed:
        log.info("retired_blobs_deleted", count=len(doomed))
    return len(doomed)
