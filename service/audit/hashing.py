"""How an audit event is hashed: the recipe an auditor re-implements (docs/audit.md).

hash = sha256(prev_hash ‖ canonical JSON of {seq, ts, tenant_id, actor, action, model, object_id,
payload}), canonical JSON being sorted keys, no whitespace, ASCII with \\u escapes. The first
event of a chain has prev_hash = 64 zeros. The recipe did not change when the single global chain
became one chain per tenant: tenant_id is hashed, so an event cannot move to another chain.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

from service.tables import AuditEvent

GENESIS_HASH = "0" * 64


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def _finite(value: Any) -> Any:
    # JSON has no NaN/Infinity; a metric that diverged is recorded as null so the stored payload
    # (and so the hash) stays representable on every backend.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def normalise_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload exactly as it will read back from the database (plain JSON types only)."""
    return json.loads(json.dumps(_finite(payload), default=_json_default, allow_nan=False))


def format_ts(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(
    *,
    prev_hash: str,
    seq: int,
    ts: datetime,
    tenant_id: str | None,
    actor: str,
    action: str,
    model: str | None,
    object_id: str | None,
    payload: dict[str, Any],
) -> str:
    body = canonical_json(
        {
            "seq": seq,
            "ts": format_ts(ts),
            "tenant_id": tenant_id,
            "actor": actor,
            "action": action,
            "model": model,
            "object_id": object_id,
            "payload": payload,
        }
    )
    return hashlib.sha256((prev_hash + body).encode("ascii")).hexdigest()


def hash_of(event: AuditEvent, prev_hash: str) -> str:
    return event_hash(
        prev_hash=prev_hash,
        seq=event.seq,
        ts=event.ts,
        tenant_id=event.tenant_id,
        actor=event.actor,
        action=event.action,
        model=event.model,
        object_id=event.object_id,
        payload=event.payload,
    )
