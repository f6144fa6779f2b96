"""API keys: generation, hashing, lookup and the scope vocabulary.

A key looks like ``ulk_<8-hex prefix>_<43-char urlsafe secret>``. Only its sha256 is stored:
keys are random 256-bit secrets, so a fast hash is a sound one-way function here (no
dictionary to attack). The prefix is not secret; it finds the row without a scan, and the hash
is then compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db import utcnow
from service.tables import ApiKey, Tenant

KEY_PREFIX = "ulk"
_KEY_RE = re.compile(r"^ulk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")

SCOPES: tuple[str, ...] = (
    "models:read",
    "models:write",
    "deletions:write",
    "jobs:read",
    "audit:read",
    "webhooks:read",
    "webhooks:write",
    "admin",
)
ADMIN_SCOPE = "admin"

# Writing last_used_at on every request would turn every read into a write.
_LAST_USED_RESOLUTION = timedelta(seconds=60)


def generate_key() -> str:
    return f"{KEY_PREFIX}_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def key_prefix(raw: str) -> str:
    """The lookup prefix of a key. Operator-chosen admin keys need not follow our format, so
    those get a prefix derived from their hash (deterministic, so lookup still works)."""
    m = _KEY_RE.match(raw)
    if m:
        return m.group(1)
    return "h" + hash_key(raw)[:12]


def normalise_scopes(scopes: Iterable[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return sorted(set(scopes))


def has_scope(scopes: Iterable[str], scope: str) -> bool:
    granted = set(scopes)
    return ADMIN_SCOPE in granted or scope in granted


def ensure_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(
    session: Session, *, tenant_id: str, name: str, scopes: Iterable[str], raw: str | None = None
) -> tuple[ApiKey, str]:
    """Store a new key; returns the row and the plaintext (the only time it exists)."""
    raw = raw or generate_key()
    key = ApiKey(
        tenant_id=tenant_id,
        name=name,
        prefix=key_prefix(raw),
        key_hash=hash_key(raw),
        scopes=normalise_scopes(scopes),
    )
    session.add(key)
    session.flush()
    return key, raw


def authenticate(session: Session, raw: str, *, touch: bool = True) -> ApiKey | None:
    """The active key for a presented secret, or None. ``touch``: also note its use (at most once
    a minute; see :func:`use_is_stale`), a write in ``session``."""
    if not raw or len(raw) > 512:
        return None
    presented = hash_key(raw)
    candidates = session.scalars(select(ApiKey).where(ApiKey.prefix == key_prefix(raw))).all()
    found: ApiKey | None = None
    for candidate in candidates:
        # Compare every candidate so timing does not depend on which one matched.
        if hmac.compare_digest(candidate.key_hash, presented) and candidate.revoked_at is None:
            found = candidate
    if found is not None and touch and use_is_stale(found):
        found.last_used_at = utcnow()
    return found


def use_is_stale(key: ApiKey) -> bool:
    """Whether the key's ``last_used_at`` is due to be written again."""
    return key.last_used_at is None or utcnow() - key.last_used_at > _LAST_USED_RESOLUTION


def touch(session: Session, key_id: str) -> None:
    """Note a key's use now (authentication read it in a read-only transaction)."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))


def any_key_exists(session: Session) -> bool:
    return session.scalars(select(ApiKey.id).limit(1)).first() is not None
