"""Bodies of the certificate and signing-key endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class SignedDocumentOut(BaseModel):
    """A document with a detached Ed25519 signature over its RFC 8785 canonical JSON."""

    document: dict[str, Any]
    signature: str = Field(description="base64url (unpadded) Ed25519 signature")
    key_id: str = Field(description="RFC 7638 thumbprint of the signing key")
    alg: str = "Ed25519"
    canonicalization: str = "RFC 8785"


class PublicKeyOut(BaseModel):
    key_id: str
    alg: str
    canonicalization: str
    jwk: dict[str, str]
    pem: str
