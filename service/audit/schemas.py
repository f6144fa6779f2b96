"""Audit log bodies (API.md "Audit")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditEventOut(BaseModel):
    seq: int = Field(description="position in the tenant's own chain (1, 2, ...)")
    ts: datetime
    # Extension: part of the hashed content, so an auditor can recompute every hash.
    tenant_id: str | None = None
    actor: str
    action: str
    model: str | None
    object_id: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class SignedHeadOut(BaseModel):
    seq: int
    hash: str
    signed_at: str
    key_id: str


class ChainVerification(BaseModel):
    chain: str = Field(description="the chain verified: the caller's tenant id ('system': no tenant)")
    ok: bool
    length: int
    head_hash: str
    first_bad_seq: int | None
    reason: str | None = None
    signed_head: SignedHeadOut | None = Field(
        None, description="the last signed head of the chain, which the chain must still reach"
    )


class ChainOut(ChainVerification):
    tenant: str | None = Field(None, description="the tenant's name; null for the system chain")
