"""Receipt endpoints: ``?signed=true`` wraps the receipt with the service's Ed25519 signature."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from service.certificates.deps import SignerDep
from service.deletions.routes import Reader
from service.deps import Context, DbSession
from service.receipts import logic

router = APIRouter(tags=["receipts"])

Signed = Annotated[bool, Query(description="wrap the receipt in a detached Ed25519 signature (JCS)")]


@router.get("/v1/deletion-requests/{request_id}/receipt", summary="What a deletion request did, as a receipt")
def deletion_receipt(
    request_id: str, ctx: Context, db: DbSession, principal: Reader, signer: SignerDep, signed: Signed = False
) -> Any:
    receipt = logic.deletion_receipt(db, ctx, principal.tenant_id, request_id)
    return signer.sign_document(receipt) if signed else receipt


@router.get(
    "/v1/erasures/{erasure_id}/receipt", summary="What an erasure did, across every model, as a receipt"
)
def erasure_receipt(
    erasure_id: str, ctx: Context, db: DbSession, principal: Reader, signer: SignerDep, signed: Signed = False
) -> Any:
    receipt = logic.erasure_receipt(db, ctx, principal.tenant_id, erasure_id)
    return signer.sign_document(receipt) if signed else receipt
