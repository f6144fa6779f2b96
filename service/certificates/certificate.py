"""The deletion certificate: a pure function from stored facts to the document that is signed.

Pure (no database, no clock, no key beyond the digest key it is given), so the same request
always yields the same certificate, and another signed document (a receipt) can be built and
signed the same way. What is certified, and what is not disclosed:

* the subject and every sample digest appear only keyed: HMAC-SHA256 under the tenant's digest
  key (service.privacy), the same values the API shows for the request, so nobody holding a
  certificate can test whether a given sample or person was in it; the raw sha256 digests stay
  in the database;
* the base and result model versions with their checkpoint sha256, the method and params, the
  verification metrics and the acceptance-policy verdict, and the chain seq and hash of the
  ``job.succeeded`` audit event that recorded the deletion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from unlearn_client.verify import CERTIFICATE_TYPE

from service.audit.hashing import format_ts, normalise_payload
from service.privacy import keyed_digest, keyed_digests

VERSION = 1
DIGEST_SCHEME = {
    "alg": "HMAC-SHA256",
    "key": "the tenant's digest key",
    "subject": "HMAC of the subject reference as UTF-8",
    "samples": "HMAC of each sample's lowercase hex sha256 digest as ASCII, in request order",
}


@dataclass(frozen=True)
class ModelVersionFacts:
    version: int
    sha256: str


@dataclass(frozen=True)
class AuditEventFacts:
    chain: str
    seq: int
    hash: str
    action: str


@dataclass(frozen=True)
class CertificateFacts:
    """What the database holds about a completed request (raw: keyed by build_certificate)."""

    request_id: str
    tenant_id: str
    model: str
    subject: str | None
    sample_digests: list[str]
    completed_at: datetime
    job_id: str
    method: str
    params: dict[str, Any]
    base: ModelVersionFacts
    result: ModelVersionFacts
    audit: AuditEventFacts
    metrics: dict[str, Any] = field(default_factory=dict)  # the job's metrics, without the verdict
    policy: dict[str, Any] = field(default_factory=dict)  # the acceptance-policy verdict


def _version(v: ModelVersionFacts) -> dict[str, Any]:
    return {"version": v.version, "sha256": v.sha256}


def build_certificate(facts: CertificateFacts, digest_key: bytes) -> dict[str, Any]:
    """The certificate document (plain JSON, ready for ``Signer.sign_document``)."""
    document = {
        "type": CERTIFICATE_TYPE,
        "version": VERSION,
        "request_id": facts.request_id,
        "tenant_id": facts.tenant_id,
        "model": facts.model,
        "completed_at": format_ts(facts.completed_at),
        "subject_digest": None if facts.subject is None else keyed_digest(digest_key, facts.subject),
        "samples": {
            "count": len(facts.sample_digests),
            "digests": keyed_digests(digest_key, list(facts.sample_digests)),
        },
        "digest_scheme": DIGEST_SCHEME,
        "job_id": facts.job_id,
        "method": facts.method,
        "params": facts.params,
        "base_version": _version(facts.base),
        "result_version": _version(facts.result),
        "metrics": facts.metrics,
        "policy": facts.policy,
        "audit_event": {
            "chain": facts.audit.chain,
            "seq": facts.audit.seq,
            "hash": facts.audit.hash,
            "action": facts.audit.action,
        },
    }
    # Stored metrics are JSON already; this only guarantees it (no NaN, no tuples) for signing.
    return normalise_payload(document)
