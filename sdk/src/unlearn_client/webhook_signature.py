"""Checking a webhook delivery on the receiving side (Standard Webhooks signatures; standard
library only).

    from unlearn_client.webhook_signature import WebhookSignatureError, verify_webhook

    try:
        verify_webhook(secret, request.headers, raw_body)   # the whsec_... shown at creation
    except WebhookSignatureError:
        return 400

Each attempt carries ``webhook-id`` (the delivery id, the same on every attempt: drop
duplicates), ``webhook-timestamp`` (seconds since the epoch) and ``webhook-signature``:
``v1,`` + base64 of HMAC-SHA256 under the secret's bytes of ``f"{id}.{timestamp}.{body}"``;
several space-separated signatures may be listed (a secret rotation), and one match is enough.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookSignatureError(ValueError):
    """The delivery is not signed with the secret, or its timestamp is too far from now."""


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,...`` signature of one attempt."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise WebhookSignatureError("the secret is not whsec_ + base64") from exc
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> str:
    """Check a delivery's signature (on the raw body, before parsing it) and that it is recent
    (an old request replayed fails); returns its ``webhook-id``. Raises WebhookSignatureError."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = int(lower["webhook-timestamp"])
        presented = lower["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise WebhookSignatureError("missing or malformed webhook-id / -timestamp / -signature") from exc
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        raise WebhookSignatureError("the timestamp is too far from now (a replay?)")
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in presented):
        raise WebhookSignatureError("no signature matches")
    return msg_id
