"""The webhook event catalogue, and the events an audit event announces.

Every state change of jobs, deletion requests, erasures and versions appends an audit event in
its own transaction (service/audit/logic.py), so the audit log is the one place that sees them
all. Deriving webhook events from it, in that same transaction, means a delivery exists exactly
when the change it announces was committed.

Bodies are thin: ids, names, versions, statuses and errors, never sample or subject digests (a
webhook leaves the service for a URL on the internet); a receiver fetches details from the API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.jobs.states import RequestStatus
from service.tables import AuditEvent, Dataset, DeletionRequest, Erasure


class EventType(StrEnum):
    JOB_STARTED = "job.started"
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    DELETION_REQUESTED = "deletion.requested"
    DELETION_COMPLETED = "deletion.completed"
    DELETION_FAILED = "deletion.failed"
    DELETION_CANCELLED = "deletion.cancelled"
    ERASURE_REQUESTED = "erasure.requested"
    ERASURE_COMPLETED = "erasure.completed"
    ERASURE_FAILED = "erasure.failed"  # a model's request of the erasure failed or was cancelled
    VERSION_CREATED = "version.created"  # uploaded, published by a job, or rolled back to
    VERSION_RETIRED = "version.retired"


EVENT_TYPES: tuple[str, ...] = tuple(EventType)


@dataclass(frozen=True)
class Announcement:
    type: EventType
    model: str | None  # the model it concerns; None: tenant-wide (an erasure spans models)
    data: dict[str, Any]


def _pick(payload: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: payload[name] for name in names if name in payload}


def _request_ids(event: AuditEvent) -> list[str]:
    ids = event.payload.get("deletion_requests") or []
    return [str(i) for i in ids]


def _erasure_ids(session: Session, request_ids: list[str]) -> list[str]:
    if not request_ids:
        return []
    return sorted(
        e
        for e in session.scalars(
            select(DeletionRequest.erasure_id)
            .where(DeletionRequest.id.in_(request_ids), DeletionRequest.erasure_id.is_not(None))
            .distinct()
        )
        if e is not None
    )


def _dataset_names(session: Session, erasure_ids: Iterable[str]) -> dict[str, str]:
    return dict(
        session.execute(
            select(Erasure.id, Dataset.name)
            .join(Dataset, Dataset.id == Erasure.dataset_id)
            .where(Erasure.id.in_(list(erasure_ids)))
        ).all()
    )


def _statuses(session: Session, erasure_id: str) -> list[tuple[str, str]]:
    # Columns, not ORM objects: the job's UPDATEs bypassed the session's identity map. The audit
    # chain's head lock (taken before this runs) serialises the tenant's transactions, so the
    # requests other models' jobs ended are seen as committed: an erasure's end is seen once.
    return [
        (r[0], r[1])
        for r in session.execute(
            select(DeletionRequest.id, DeletionRequest.status).where(DeletionRequest.erasure_id == erasure_id)
        ).all()
    ]


def _erasure_outcomes(session: Session, event: AuditEvent, ended: set[str]) -> list[Announcement]:
    """erasure.completed for erasures whose last request this event ended; erasure.failed for
    those whose first failed or cancelled request it ended."""
    erasure_ids = _erasure_ids(session, sorted(ended))
    names = _dataset_names(session, erasure_ids)
    out: list[Announcement] = []
    bad = (RequestStatus.FAILED, RequestStatus.CANCELLED)
    for erasure_id in erasure_ids:
        statuses = _statuses(session, erasure_id)
        data = {
            "erasure_id": erasure_id,
            "dataset": names.get(erasure_id),
            "deletion_requests": sorted(i for i, _ in statuses),
        }
        if all(s == RequestStatus.COMPLETED for _, s in statuses):
            out.append(Announcement(EventType.ERASURE_COMPLETED, None, data))
        elif any(s in bad for i, s in statuses if i in ended) and not any(
            s in bad for i, s in statuses if i not in ended
        ):
            out.append(Announcement(EventType.ERASURE_FAILED, None, data))
    return out


def _job_ended(status: str) -> Callable[[Session, AuditEvent], list[Announcement]]:
    request_event = {
        "succeeded": EventType.DELETION_COMPLETED,
        "failed": EventType.DELETION_FAILED,
        "cancelled": EventType.DELETION_CANCELLED,
    }[status]

    def derive(session: Session, event: AuditEvent) -> list[Announcement]:
        p = event.payload
        job = {
            "job_id": event.object_id,
            "model": event.model,
            "status": status,
            **_pick(p, "kind", "reason", "method", "base_version", "result_version", "n_samples", "attempts"),
            **_pick(p, "error"),
            "deletion_requests": _request_ids(event),
        }
        out = [Announcement(EventType(f"job.{status}"), event.model, job)]
        if status == "succeeded" and p.get("result_version") is not None:
            version = {
                "model": event.model,
                "version": p["result_version"],
                "parent_version": p.get("base_version"),
                "job_id": event.object_id,
                **_pick(p, "sha256"),
            }
            out.append(Announcement(EventType.VERSION_CREATED, event.model, version))
        for request_id in _request_ids(event):
            data = {"deletion_request_id": request_id, "model": event.model, "job_id": event.object_id}
            data.update(_pick(p, "result_version") if status == "succeeded" else _pick(p, "error"))
            out.append(Announcement(request_event, event.model, data))
        out.extend(_erasure_outcomes(session, event, set(_request_ids(event))))
        return out

    return derive


def _job_started(_session: Session, event: AuditEvent) -> list[Announcement]:
    data = {"job_id": event.object_id, "model": event.model, "status": "running"}
    data.update(_pick(event.payload, "attempt", "base_version"))
    return [Announcement(EventType.JOB_STARTED, event.model, data)]


def _deletion_requested(_session: Session, event: AuditEvent) -> list[Announcement]:
    data = {"deletion_request_id": event.object_id, "model": event.model}
    data.update(_pick(event.payload, "job_id", "method", "n_samples", "erasure_id"))
    return [Announcement(EventType.DELETION_REQUESTED, event.model, data)]


def _deletion_already_erased(session: Session, event: AuditEvent) -> list[Announcement]:
    # Asked and done at once: the model no longer holds the samples.
    p = event.payload
    base = {"deletion_request_id": event.object_id, "model": event.model, **_pick(p, "erasure_id")}
    done = {**base, "result_version": p.get("version"), "outcome": "already_erased"}
    return [
        Announcement(EventType.DELETION_REQUESTED, event.model, base),
        Announcement(EventType.DELETION_COMPLETED, event.model, done),
    ]


def _erasure_requested(session: Session, event: AuditEvent) -> list[Announcement]:
    p = event.payload
    data = {
        "erasure_id": event.object_id,
        **_pick(p, "dataset", "n_samples", "dataset_version", "outcome", "result_dataset_version"),
        "deletion_requests": _request_ids(event),
    }
    out = [Announcement(EventType.ERASURE_REQUESTED, None, data)]
    requests = _request_ids(event)
    statuses = (
        session.scalars(select(DeletionRequest.status).where(DeletionRequest.id.in_(requests))).all()
        if requests
        else []
    )
    # No model held the samples (the data set was erased at once), they were erased before, or
    # every model's request completed at once as a no-op.
    if all(s == RequestStatus.COMPLETED for s in statuses):
        out.append(Announcement(EventType.ERASURE_COMPLETED, None, data))
    return out


def _version_created(_session: Session, event: AuditEvent) -> list[Announcement]:
    p = event.payload
    data = {"model": event.model, **_pick(p, "version", "sha256", "parent_version")}
    if "to_version" in p:  # a rollback: a new latest version with an older one's bytes
        data["rolled_back_to"] = p["to_version"]
    return [Announcement(EventType.VERSION_CREATED, event.model, data)]


def _version_retired(_session: Session, event: AuditEvent) -> list[Announcement]:
    p = event.payload
    versions = p.get("versions") if "versions" in p else [p.get("version")]
    data = {"model": event.model, "versions": versions, **_pick(p, "reason", "job_id")}
    return [Announcement(EventType.VERSION_RETIRED, event.model, data)]


# audit action -> the webhook events it announces. Actions not listed announce nothing.
DERIVATIONS: dict[str, Callable[[Session, AuditEvent], list[Announcement]]] = {
    "job.started": _job_started,
    "job.succeeded": _job_ended("succeeded"),
    "job.failed": _job_ended("failed"),
    "job.cancelled": _job_ended("cancelled"),
    "deletion.requested": _deletion_requested,
    "deletion.already_erased": _deletion_already_erased,
    "erasure.requested": _erasure_requested,
    "version.created": _version_created,
    "version.rolled_back": _version_created,
    "version.retired": _version_retired,
    "versions.retired": _version_retired,
}


def announcements(session: Session, event: AuditEvent) -> list[Announcement]:
    derive = DERIVATIONS.get(event.action)
    return derive(session, event) if derive is not None else []


def body(announcement: Announcement, event: AuditEvent) -> dict[str, Any]:
    """The JSON a receiver gets (the Standard Webhooks payload shape)."""
    return {
        "type": str(announcement.type),
        "timestamp": event.ts.isoformat().replace("+00:00", "Z"),
        "data": announcement.data,
    }
