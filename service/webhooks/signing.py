"""Standard Webhooks signatures (https://www.standardwebhooks.com), the sending side.

A secret is ``whsec_`` + base64 of 32 random bytes; the HMAC key is those bytes. Each attempt
carries three headers::

    webhook-id:        the delivery id (the same on every attempt: receivers drop duplicates)
    webhook-timestamp: the attempt's time, integer seconds since the epoch
    webhook-signature: "v1," + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))

The timestamp is signed, so a receiver that refuses timestamps far from its clock (5 minutes is
usual) cannot be replayed an old request. The signature header may list several space-separated
signatures (during a secret rotation); a receiver accepts the request if any one matches.

The signature itself and the receiver-side check live once, in the SDK
(:mod:`unlearn_client.webhook_signature`: ``sign``, ``verify_webhook``), which receivers install
without the service; the service signs with that same function (docs/webhooks.md shows the check
standalone).
"""

from __future__ import annotations

import base64
import secrets
import time

from unlearn_client.webhook_signature import SECRET_PREFIX, sign

SECRET_BYTES = 32


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }
