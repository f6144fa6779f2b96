"""Offline verification of what the service signs: deletion certificates, signed receipts and
audit chain heads, with the service's public key and nothing else (no network, no service code).

Needs ``cryptography``: ``pip install 'unlearn-client[verify]'`` (the ``cli`` extra includes it).

    from unlearn_client.verify import verify_certificate
    document = verify_certificate(json.load(open("cert.json")), open("signing-key.pem").read())

A signed document is ``{"document": {...}, "signature": "<base64url>", "key_id": "<kid>",
"alg": "Ed25519", "canonicalization": "RFC 8785"}``. The signature is Ed25519 over the UTF-8
bytes of the document's JSON Canonicalization Scheme form (RFC 8785: sorted keys, no whitespace,
ECMAScript number formatting, minimal string escapes). ``key_id`` is the RFC 7638 JWK thumbprint
of the public key (base64url of the sha256 of ``{"crv":"Ed25519","kty":"OKP","x":"..."}``).

The one verifier: the service signs with these definitions (``service.certificates.signing``
imports the canonical form, the key id and the JWK from here) and checks its own chain heads with
it, so signer and checker cannot drift. Self-contained on purpose: the standard library and
``cryptography`` only, nothing else of the SDK (its models are taken by duck typing) and nothing
of the service, so an auditor can also copy this one file and run it alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "verifying signatures needs the cryptography package: pip install 'unlearn-client[verify]'"
    ) from exc

ALGORITHM = "Ed25519"
CANONICALIZATION = "RFC 8785"
CERTIFICATE_TYPE = "unlearn.deletion-certificate"
SIGNED_HEAD_TYPE = "unlearn.audit-head"
# Receipts (``GET .../receipt?signed=true``) are signed as they are served.
DELETION_RECEIPT_TYPE = "deletion-receipt"
ERASURE_RECEIPT_TYPE = "erasure-receipt"
DOCUMENT_TYPES = frozenset({CERTIFICATE_TYPE, SIGNED_HEAD_TYPE, DELETION_RECEIPT_TYPE, ERASURE_RECEIPT_TYPE})

# RFC 8785 numbers are IEEE doubles: a larger integer would read back as another number.
_MAX_SAFE_INTEGER = 2**53 - 1


class VerificationError(ValueError):
    """The document is malformed, was changed after signing, or was not signed by this key."""


# --- RFC 8785 canonical JSON ---------------------------------------------------------------


def _number(value: float) -> str:
    """ECMAScript's Number.prototype.toString, from Python's shortest round-trip digits."""
    if not math.isfinite(value):
        raise ValueError("RFC 8785 JSON has no NaN or Infinity")
    if value == 0:
        return "0"  # -0 too
    if value < 0:
        return "-" + _number(-value)
    text = repr(value)
    mantissa, _, exp_text = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    stripped = digits.lstrip("0")
    # value = 0.<digits> × 10^point
    point = len(whole) + int(exp_text or 0) - (len(digits) - len(stripped))
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return digits + "0" * (point - k)
    if 0 < point <= 21:
        return digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return "0." + "0" * -point + digits
    exponent = point - 1
    sign = "+" if exponent >= 0 else "-"
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{sign}{abs(exponent)}"


def _serialise(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is outside the range RFC 8785 represents exactly")
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        # Python's escapes with ensure_ascii=False are RFC 8785's: \" \\ \b \f \n \r \t, other
        # control characters as \u00xx, everything else as itself (UTF-8 encoded below).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_serialise(v) for v in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("object keys must be strings")
        # RFC 8785 orders keys by their UTF-16 code units.
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(_serialise(k) + ":" + _serialise(value[k]) for k in keys) + "}"
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 (JCS) form of a JSON value, UTF-8 encoded: the bytes that are signed."""
    return _serialise(value).encode("utf-8")


# --- keys ----------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise VerificationError("not valid base64url") from exc


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The key as a JWK (RFC 8037), with its key id."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(_raw(public_key)),
        "kid": key_id(public_key),
        "alg": "EdDSA",
        "use": "sig",
    }


def key_id(public_key: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint: names the key in every signed document."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(_raw(public_key))}
    return b64url_encode(hashlib.sha256(canonical_json(members)).digest())


def load_public_key(source: Any) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM (str or bytes), a JWK, the service's well-known answer
    (``{"jwk": ..., "pem": ...}``) or its JSON text, or a key object."""
    if isinstance(source, Ed25519PublicKey):
        return source
    if hasattr(source, "model_dump"):  # the SDK's PublicKey (client.signing_key())
        source = source.model_dump(mode="json")
    if isinstance(source, bytes):
        source = source.decode("utf-8", errors="replace")
    if isinstance(source, str):
        text = source.strip()
        if text.startswith("-----BEGIN"):
            try:
                key = serialization.load_pem_public_key(text.encode())
            except ValueError as exc:
                raise VerificationError(f"not a PEM public key: {exc}") from exc
            if not isinstance(key, Ed25519PublicKey):
                raise VerificationError("the PEM key is not an Ed25519 public key")
            return key
        try:
            source = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VerificationError("the public key is neither PEM nor JSON (a JWK)") from exc
    if isinstance(source, dict):
        if isinstance(source.get("jwk"), dict):
            return load_public_key(source["jwk"])
        if "kty" not in source and isinstance(source.get("pem"), str):
            return load_public_key(source["pem"])
        x = source.get("x")
        if source.get("kty") != "OKP" or source.get("crv") != "Ed25519" or not isinstance(x, str):
            raise VerificationError("the JWK is not an Ed25519 key (kty OKP, crv Ed25519, x)")
        raw = b64url_decode(x)
        if len(raw) != 32:
            raise VerificationError("the JWK's x is not a 32-byte Ed25519 key")
        return Ed25519PublicKey.from_public_bytes(raw)
    raise VerificationError(f"cannot read a public key from {type(source).__name__}")


# --- verification --------------------------------------------------------------------------


def _envelope(signed: Any) -> Any:
    """The SDK's SignedDocument as the JSON it was read from (members it does not have left out)."""
    if not hasattr(signed, "model_dump"):
        return signed
    envelope = signed.model_dump(mode="json")
    return {k: v for k, v in envelope.items() if not (k in ("alg", "canonicalization") and v is None)}


def verify_document(signed: Any, public_key: Any, *, expected_type: str | None = None) -> dict[str, Any]:
    """Check a signed document against a public key; returns the document.

    Raises VerificationError when the envelope is malformed, names another key, its signature
    does not match the document's canonical form (any field changed), or the type is not the
    expected one.
    """
    signed = _envelope(signed)
    if not isinstance(signed, dict):
        raise VerificationError("a signed document is a JSON object")
    document, signature, kid = signed.get("document"), signed.get("signature"), signed.get("key_id")
    if not isinstance(document, dict) or not isinstance(signature, str) or not isinstance(kid, str):
        raise VerificationError("a signed document has 'document' (object), 'signature' and 'key_id'")
    if signed.get("alg", ALGORITHM) != ALGORITHM:
        raise VerificationError(f"unsupported algorithm {signed.get('alg')!r}; expected {ALGORITHM}")
    if signed.get("canonicalization", CANONICALIZATION) != CANONICALIZATION:
        raise VerificationError(f"unsupported canonicalization {signed.get('canonicalization')!r}")
    key = load_public_key(public_key)
    expected_kid = key_id(key)
    if kid != expected_kid:
        raise VerificationError(f"signed with key {kid}, not with the given key {expected_kid}")
    try:
        payload = canonical_json(document)
    except ValueError as exc:
        raise VerificationError(f"the document is not canonical JSON: {exc}") from exc
    try:
        key.verify(b64url_decode(signature), payload)
    except InvalidSignature as exc:
        raise VerificationError("the signature does not match the document (changed or forged)") from exc
    if expected_type is not None and document.get("type") != expected_type:
        raise VerificationError(f"the document is a {document.get('type')!r}, not a {expected_type!r}")
    return document


def verify_certificate(signed: Any, public_key: Any) -> dict[str, Any]:
    """Check a deletion certificate (``GET /v1/deletion-requests/{id}/certificate``) offline
    with the service's published key (``GET /.well-known/unlearn-signing-key``); returns it."""
    return verify_document(signed, public_key, expected_type=CERTIFICATE_TYPE)


def verify_receipt(signed: Any, public_key: Any) -> dict[str, Any]:
    """Check a signed receipt (``GET /v1/deletion-requests/{id}/receipt?signed=true`` or
    ``GET /v1/erasures/{id}/receipt?signed=true``) offline; returns it."""
    document = verify_document(signed, public_key)
    if document.get("type") not in (DELETION_RECEIPT_TYPE, ERASURE_RECEIPT_TYPE):
        raise VerificationError(f"the document is a {document.get('type')!r}, not a receipt")
    return document


def verify_signed_head(signed: Any, public_key: Any) -> dict[str, Any]:
    """Check a signed audit chain head (``GET /v1/audit/checkpoints``); returns it. An auditor
    who keeps these can later show that a chain still reaches them (nothing was truncated)."""
    return verify_document(signed, public_key, expected_type=SIGNED_HEAD_TYPE)
