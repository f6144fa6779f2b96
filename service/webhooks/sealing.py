"""Signing secrets at rest: sealed with AES-256-GCM under a key derived from the service secret.

A webhook's secret cannot be stored as a hash like an API key: every delivery needs the secret
itself to compute its HMAC. Stored as is, a copy of the database (a backup, a read-only replica,
an SQL injection elsewhere) would let anyone sign forged events that receivers trust. Sealed, the
database alone is not enough: the key lives with the service secret (UNLEARN_SECRET_KEY or
{data_dir}/secret-key), never in the database. The webhook id is the associated data, so a
sealed secret copied onto another row does not open. Losing the service secret makes the sealed
secrets unusable: those webhooks must be registered again (deliveries then fail, visibly).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"
_NONCE_BYTES = 12


class UnsealError(Exception):
    """The sealed secret does not open with this service secret (changed, or the row was edited)."""


def sealing_key(service_secret: bytes) -> bytes:
    # Derived, not the service secret itself: each use of that secret gets a key of its own.
    return hmac.new(service_secret, b"webhook-secret-sealing-key", hashlib.sha256).digest()


def seal(service_secret: bytes, webhook_id: str, secret: str) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(sealing_key(service_secret)).encrypt(nonce, secret.encode(), webhook_id.encode())
    return f"{_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def unseal(service_secret: bytes, webhook_id: str, sealed: str) -> str:
    version, _, blob = sealed.partition(".")
    if version != _VERSION:
        raise UnsealError(f"unknown sealing version {version!r}")
    try:
        raw = base64.urlsafe_b64decode(blob)
        opened = AESGCM(sealing_key(service_secret)).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], webhook_id.encode()
        )
    except (InvalidTag, ValueError) as exc:
        raise UnsealError("the signing secret does not open with this service secret") from exc
    return opened.decode()
