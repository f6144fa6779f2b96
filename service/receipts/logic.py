"""Receipts: what a deletion request or an erasure did, as one JSON document that can be signed.

A receipt lists the model versions before and after (with their checkpoint hashes), the training
set versions before and after (with their data digests), the sample digests (keyed per tenant,
service/privacy.py), the method and why it was chosen, the verification metrics and the policy
verdict, how exact the forgetting is, the versions retired, and the audit events that record it
all (chain, seq, hash), so an auditor can check each claim against the chain.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit.hashing import format_ts
from service.context import ServiceContext
from service.db import utcnow
from service.erasures.logic import erasure_out
from service.jobs.exactness import EXACT_METHOD, stages
from service.listing import get_owned
from service.privacy import keyed_digest, keyed_digests
from service.tables import (
    AuditEvent,
    Dataset,
    DatasetVersion,
    DeletionRequest,
    Erasure,
    Job,
    ModelVersion,
)

RECEIPT_VERSION = 1


def _model_version(session: Session, model_id: str, number: int | None) -> dict[str, Any] | None:
    if number is None:
        return None
    v = session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.version == number)
    ).one_or_none()
    if v is None:
        return None
    return {
        "version": v.version,
        "sha256": v.sha256,
        "status": v.status,
        "training_data": _dataset_version(session, v.dataset_version_id),
    }


def _dataset_version(session: Session, dataset_version_id: str | None) -> dict[str, Any] | None:
    if dataset_version_id is None:
        return None
    row = session.execute(
        select(Dataset.name, DatasetVersion)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .where(DatasetVersion.id == dataset_version_id)
    ).one()
    dv: DatasetVersion = row[1]
    return {
        "dataset": row[0],
        "version": dv.version,
        "data_sha256": dv.data_sha256,
        "n_samples": dv.n_samples,
    }


def _audit(session: Session, tenant_id: str, object_ids: list[str]) -> list[dict[str, Any]]:
    events = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.tenant_id == tenant_id, AuditEvent.object_id.in_(object_ids))
        .order_by(AuditEvent.seq)
    )
    return [
        {"chain": e.chain, "seq": e.seq, "hash": e.hash, "action": e.action, "ts": format_ts(e.ts)}
        for e in events
    ]


VERIFICATION_KEYS = ("before", "after", "param_l2_change", "mia_two_sided", "flags", "lira", "eval_split")


def deletion_receipt(
    session: Session, ctx: ServiceContext, tenant_id: str, request_id: str
) -> dict[str, Any]:
    req, model_name = get_owned(session, DeletionRequest, tenant_id, request_id, "deletion request")
    job = session.get(Job, req.job_id) if req.job_id else None
    key = ctx.tenant_key(tenant_id)
    metrics = (job.metrics or {}) if job else {}
    base = job.base_version if job else req.result_version
    objects = [req.id, *([job.id] if job else []), *([req.erasure_id] if req.erasure_id else [])]
    retired = [
        v
        for e in _audit_payloads(session, tenant_id, job.id if job else None, "job.succeeded")
        for v in e.get("retired_versions", [])
    ]
    return {
        "type": "deletion-receipt",
        "receipt_version": RECEIPT_VERSION,
        "issued_at": format_ts(utcnow()),
        "request": {
            "id": req.id,
            "status": req.status,
            "outcome": req.outcome,
            "erasure_id": req.erasure_id,
            "created_at": format_ts(req.created_at),
            "finished_at": format_ts(req.finished_at) if req.finished_at else None,
        },
        "model": model_name,
        "subject_digest": keyed_digest(key, req.subject) if req.subject is not None else None,
        "digests": "HMAC-SHA256 of each sample's sha256 under the tenant's key",
        "sample_digests": keyed_digests(key, list(req.sample_digests or [])),
        "n_samples": req.n_samples,
        "method": req.method,
        "method_reason": job.method_reason if job else None,
        "params": req.params,
        "model_versions": {
            "before": _model_version(session, req.model_id, base),
            "after": _model_version(session, req.model_id, req.result_version),
        },
        # What the policy graded: the population MIA read both ways, its flags, the per-example
        # (LiRA) test where reference models exist, and the eval split it was measured on.
        "verification": {k: metrics[k] for k in VERIFICATION_KEYS if k in metrics},
        "policy": metrics.get("policy"),
        # Reference models trained on the erased samples hold them too: retired, blobs deleted.
        "references_retired": metrics.get("references_retired", []),
        # Approximate unlearning moves the model toward one retrained without the samples;
        # retraining (method "retrain") is exact, and so is a request an exact retrain of the
        # model covered since (eventual exactness): the stage is where the request stands now,
        # ``stages`` each version that forgot it (as the request's own answer shows).
        "exactness": {
            "stage": (
                "exact"
                if req.method == EXACT_METHOD or req.exact_version is not None
                else ("none" if req.outcome else "approximate")
            ),
            "stages": stages(req),
        },
        "retired_versions": retired,
        "audit": _audit(session, tenant_id, objects),
    }


def _audit_payloads(
    session: Session, tenant_id: str, object_id: str | None, action: str
) -> list[dict[str, Any]]:
    if object_id is None:
        return []
    return [
        e.payload
        for e in session.scalars(
            select(AuditEvent).where(
                AuditEvent.tenant_id == tenant_id,
                AuditEvent.object_id == object_id,
                AuditEvent.action == action,
            )
        )
    ]


def erasure_receipt(session: Session, ctx: ServiceContext, tenant_id: str, erasure_id: str) -> dict[str, Any]:
    erasure, dataset_name = get_owned(session, Erasure, tenant_id, erasure_id, "erasure", owner=Dataset)
    out = erasure_out(session, ctx, erasure, dataset_name)
    before = session.scalars(
        select(DatasetVersion).where(
            DatasetVersion.dataset_id == erasure.dataset_id, DatasetVersion.version == erasure.dataset_version
        )
    ).one()
    after_number = out.result_dataset_version
    after = (
        session.scalars(
            select(DatasetVersion).where(
                DatasetVersion.dataset_id == erasure.dataset_id, DatasetVersion.version == after_number
            )
        ).one_or_none()
        if after_number is not None
        else None
    )
    # Versions other than the latest that held the samples, linked by models (lineages per model).
    requested = _audit_payloads(session, tenant_id, erasure.id, "erasure.requested")
    lineage_numbers = sorted({int(v) for p in requested for v in p.get("lineage_versions") or []})
    lineage = [
        {"version": v.version, "data_sha256": v.data_sha256, "n_samples": v.n_samples}
        for v in session.scalars(
            select(DatasetVersion)
            .where(
                DatasetVersion.dataset_id == erasure.dataset_id, DatasetVersion.version.in_(lineage_numbers)
            )
            .order_by(DatasetVersion.version)
        )
    ]
    return {
        "type": "erasure-receipt",
        "receipt_version": RECEIPT_VERSION,
        "issued_at": format_ts(utcnow()),
        "erasure": {"id": erasure.id, "status": out.status, "outcome": erasure.outcome},
        "subject_digest": out.subject_digest,
        "n_samples": out.n_samples,
        "training_data": {
            "dataset": dataset_name,
            "before": {
                "version": before.version,
                "data_sha256": before.data_sha256,
                "n_samples": before.n_samples,
            },
            "after": {
                "version": after.version,
                "data_sha256": after.data_sha256,
                "n_samples": after.n_samples,
            }
            if after is not None
            else None,
            "lineage": lineage,
        },
        "models": [deletion_receipt(session, ctx, tenant_id, r.id) for r in out.deletion_requests],
        "audit": _audit(session, tenant_id, [erasure.id]),
    }
