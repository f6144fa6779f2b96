"""Keyed digests: what leaves the database instead of a raw sample digest or subject id.

A plain sha256 of a training sample lets anyone who holds the sample test whether it was in a
deletion request (membership). Outside the database the service shows HMAC-SHA256 digests under
a per-tenant key instead: equal samples still give equal digests within a tenant, so requests,
audit events and certificates can be matched, but nobody without the service's secret can test a
sample. The per-tenant key is derived from one service secret (``UNLEARN_SECRET_KEY``; in the
embedded mode a random one is made on first start in ``{data_dir}/secret-key``, mode 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from service.settings import Settings

SECRET_FILE = "secret-key"


def load_service_secret(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.get_secret_value().encode()
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: of two processes starting at once, one writes and the other reads its secret.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
    secret = path.read_text().strip()
    if not secret:
        raise RuntimeError(f"{path} is empty; delete it to make a new service secret")
    return secret.encode()


def tenant_key(service_secret: bytes, tenant_id: str) -> bytes:
    return hmac.new(service_secret, b"tenant-digest-key\0" + tenant_id.encode(), hashlib.sha256).digest()


def keyed_digest(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def keyed_digests(key: bytes, values: list[str]) -> list[str]:
    return [keyed_digest(key, v) for v in values]
