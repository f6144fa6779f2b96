"""The audit chain, and what the service signs."""

from __future__ import annotations

from typing import Any

from unlearn_client.models.base import ApiModel


class AuditEvent(ApiModel):
    """One link of the hash chain (``AuditEventOut``)."""

    seq: int
    # Kept as the exact string the server hashed, so an auditor can recompute the hash.
    ts: str
    tenant_id: str | None = None
    actor: str
    action: str
    model: str | None = None
    object_id: str | None = None
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class SignedHead(ApiModel):
    """A chain head the service signed: the chain must still reach it (``SignedHeadOut``)."""

    seq: int
    hash: str
    signed_at: str
    key_id: str


class ChainVerification(ApiModel):
    """The answer of ``GET /v1/audit/verify``: the caller's tenant's chain."""

    # The chain verified: the tenant's id ("system" for events of no tenant).
    chain: str | None = None
    ok: bool
    length: int
    head_hash: str
    first_bad_seq: int | None = None
    reason: str | None = None
    signed_head: SignedHead | None = None


class ChainStatus(ChainVerification):
    """One chain in the operator's view (``ChainOut``): its verification and its tenant."""

    tenant: str | None = None


class SignedDocument(ApiModel):
    """A document with the service's detached Ed25519 signature over its JCS form (RFC 8785):
    certificates, signed receipts, signed audit heads. Check it offline with ``signing_key()``."""

    document: dict[str, Any]
    signature: str  # base64url, unpadded
    key_id: str  # RFC 7638 thumbprint of the signing key
    alg: str | None = None
    canonicalization: str | None = None


class PublicKey(ApiModel):
    """The service's signing key (``/.well-known/unlearn-signing-key``)."""

    key_id: str
    alg: str
    canonicalization: str
    jwk: dict[str, Any]
    pem: str
