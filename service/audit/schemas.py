"""Audit log bodies (API.md "Audit")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEventOut(BaseModel):
    seq: int
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


class ChainVerification(BaseModel):
    ok: bool
    length: int
    head_hash: str
    first_bad_seq: int | None
    reason: str | None = None
