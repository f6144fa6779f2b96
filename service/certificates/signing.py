"""The service's Ed25519 signer: signs documents (certificates, audit chain heads, receipts).

A signed document is the document with a detached signature over its RFC 8785 canonical form
(unlearn_client.verify says how to check one offline). Signing is a pure function of the
document and the key (Ed25519 signatures are deterministic), so the same document always gets
the same signature and a certificate never needs to be stored to be served again.
"""

from __future__ import annotations

from typing import Any, TypedDict

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from unlearn_client.verify import (
    ALGORITHM,
    CANONICALIZATION,
    b64url_encode,
    canonical_json,
    key_id,
    public_jwk,
)


class SignedDocument(TypedDict):
    document: dict[str, Any]
    signature: str  # base64url (unpadded) of the 64-byte Ed25519 signature
    key_id: str  # RFC 7638 thumbprint of the public key
    alg: str
    canonicalization: str


class Signer:
    """Holds the private key; hands out only signatures and the public key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def __repr__(self) -> str:  # never the key itself, not even in a traceback
        return f"Signer(key_id={self.key_id!r})"

    def sign(self, data: bytes) -> str:
        return b64url_encode(self._private_key.sign(data))

    def sign_document(self, document: dict[str, Any]) -> SignedDocument:
        """``{"document": doc, "signature", "key_id", "alg", "canonicalization"}``; the
        document must be plain JSON (finite floats, integers within ±2^53)."""
        return {
            "document": document,
            "signature": self.sign(canonical_json(document)),
            "key_id": self.key_id,
            "alg": ALGORITHM,
            "canonicalization": CANONICALIZATION,
        }

    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def published_key(self) -> dict[str, Any]:
        """What ``GET /.well-known/unlearn-signing-key`` answers."""
        return {
            "key_id": self.key_id,
            "alg": ALGORITHM,
            "canonicalization": CANONICALIZATION,
            "jwk": public_jwk(self.public_key),
            "pem": self.public_pem(),
        }
