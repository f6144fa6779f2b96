"""Deletion certificates and the public signing key (how to check them: docs/audit.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.certificates.deps import SignerDep
from service.certificates.logic import issue_certificate
from service.certificates.schemas import PublicKeyOut, SignedDocumentOut
from service.deletions.routes import Reader
from service.deps import Context, DbSession

router = APIRouter(tags=["certificates"])


@router.get(
    "/v1/deletion-requests/{request_id}/certificate",
    response_model=SignedDocumentOut,
    summary="A signed certificate of a completed deletion request (409 until it is completed)",
    responses={409: {"description": "the request is not completed (yet)"}},
)
def get_certificate(
    request_id: str, ctx: Context, db: DbSession, principal: Reader, signer: SignerDep
) -> Any:
    return issue_certificate(ctx, db, signer, principal.tenant_id, request_id)


@router.get(
    "/.well-known/unlearn-signing-key",
    response_model=PublicKeyOut,
    summary="The public key that signs certificates and audit chain heads (no authentication)",
)
def signing_key(signer: SignerDep) -> Any:
    return signer.published_key()
