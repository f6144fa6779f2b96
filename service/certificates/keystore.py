"""Where the signing key comes from: a setting in production, a file made on first start otherwise.

``UNLEARN_SIGNING_KEY`` (the PEM text of an Ed25519 private key, PKCS#8) or
``UNLEARN_SIGNING_KEY_FILE`` (a path to one) configure it. Without either, the embedded mode
makes one on first start in ``{data_dir}/signing-key.pem`` (mode 0600) and keeps using it; every
process of a deployment on several hosts must be given the same key instead, or each would sign
with its own.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.certificates.signing import Signer
from service.settings import Settings

KEY_FILE = "signing-key.pem"

_log = structlog.get_logger("service.certificates.keystore")


def _parse(pem: bytes, origin: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{origin}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{origin}: the signing key must be an Ed25519 key")
    return key


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _create_once(path: Path) -> None:
    """Write a new key to ``path`` unless one is there; of processes starting together, one wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file 0600; the complete file is then linked into place, which fails if
    # another process got there first, so nobody ever reads a half-written key.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signing-key-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(_pem(Ed25519PrivateKey.generate()))
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def load_signer(settings: Settings) -> Signer:
    if settings.signing_key is not None:
        return Signer(_parse(settings.signing_key.get_secret_value().encode(), "UNLEARN_SIGNING_KEY"))
    if settings.signing_key_file is not None:
        path = settings.signing_key_file
        return Signer(_parse(path.read_bytes(), f"UNLEARN_SIGNING_KEY_FILE ({path})"))
    path = settings.data_dir / KEY_FILE
    if not path.exists():
        _create_once(path)
        _log.info("signing_key_created", path=str(path))
    if not settings.resolved_database_url.startswith("sqlite"):
        _log.warning(
            "signing_key_not_configured",
            detail=f"signing with {path}; give every API process the same key with "
            "UNLEARN_SIGNING_KEY or UNLEARN_SIGNING_KEY_FILE",
        )
    return Signer(_parse(path.read_bytes(), str(path)))
