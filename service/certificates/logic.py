"""Issuing a certificate: gather the facts of a completed request from what is stored (the
request, its job's metrics, the model versions, the audit event), build and sign the document."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit.logic import chain_of
from service.certificates.certificate import (
    AuditEventFacts,
    CertificateFacts,
    ModelVersionFacts,
    build_certificate,
)
from service.certificates.signing import SignedDocument, Signer
from service.context import ServiceContext
from service.errors import conflict
from service.jobs.states import JobStatus, RequestStatus
from service.listing import get_owned
from service.tables import AuditEvent, DeletionRequest, Job, ModelVersion

SUCCEEDED_ACTION = "job.succeeded"


def _uncertifiable(request_id: str, what: str) -> Exception:
    # The request says completed but a record it rests on is gone: nothing can be certified.
    return conflict(f"deletion request {request_id} cannot be certified: {what}", request_id=request_id)


def certificate_facts(session: Session, tenant_id: str, request_id: str) -> CertificateFacts:
    req, model_name = get_owned(session, DeletionRequest, tenant_id, request_id, "deletion request")
    if req.status != RequestStatus.COMPLETED:
        raise conflict(
            f"deletion request {request_id} is {req.status}: a certificate is issued once it is completed",
            request_id=request_id,
            request_status=req.status,
        )
    job = session.get(Job, req.job_id) if req.job_id else None
    base_no, result_no = (job.base_version, job.result_version) if job is not None else (None, None)
    if job is None or job.status != JobStatus.SUCCEEDED or base_no is None or result_no is None:
        raise _uncertifiable(request_id, "its job did not succeed")
    versions = {
        v.version: v
        for v in session.scalars(
            select(ModelVersion).where(
                ModelVersion.model_id == req.model_id,
                ModelVersion.version.in_([base_no, result_no]),
            )
        )
    }
    base, result = versions.get(base_no), versions.get(result_no)
    if base is None or result is None:
        raise _uncertifiable(request_id, "a model version of its job is missing")
    chain = chain_of(tenant_id)
    event = session.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.chain == chain,
            AuditEvent.action == SUCCEEDED_ACTION,
            AuditEvent.object_id == job.id,
        )
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).first()
    if event is None:
        raise _uncertifiable(request_id, f"the {SUCCEEDED_ACTION} audit event of job {job.id} is missing")
    metrics = dict(job.metrics or {})
    policy = metrics.pop("policy", None) or {}
    return CertificateFacts(
        request_id=req.id,
        tenant_id=tenant_id,
        model=model_name,
        subject=req.subject,
        sample_digests=list(req.sample_digests or []),
        completed_at=req.finished_at or event.ts,
        job_id=job.id,
        method=job.method,
        params=dict(job.params or {}),
        base=ModelVersionFacts(base.version, base.sha256),
        result=ModelVersionFacts(result.version, result.sha256),
        audit=AuditEventFacts(chain=chain, seq=event.seq, hash=event.hash, action=event.action),
        metrics=metrics,
        policy=policy,
    )


def issue_certificate(
    ctx: ServiceContext, session: Session, signer: Signer, tenant_id: str, request_id: str
) -> SignedDocument:
    facts = certificate_facts(session, tenant_id, request_id)
    return signer.sign_document(build_certificate(facts, ctx.tenant_key(tenant_id)))
