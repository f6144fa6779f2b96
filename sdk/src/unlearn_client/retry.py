"""When to retry a request, and after how long.

Transient failures are retried with exponential backoff and full jitter (so many clients that
failed together do not come back together), honouring ``Retry-After``. What may be retried
depends on whether the failed attempt could have reached the server:

- a connection that was never made (connect error or timeout, no free connection), a 429 or a
  503 (the server says it did not act): any request;
- anything else transient (a connection broken mid-exchange, a read timeout, 502, 504): only a
  request that is safe to replay (GET, HEAD, DELETE, or a POST whose Idempotency-Key the server
  honours) — another POST could act twice.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

# Failures that happen before a byte of the request is sent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The server refused before acting on the request.
_NOT_ACTED = frozenset({429, 503})
# A gateway's answer: the request may or may not have reached the service.
_MAYBE_ACTED = frozenset({502, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # tries in all, the first included; 1 disables retries
    backoff: float = 0.5  # the ceiling of the first wait, doubled for each later one
    max_backoff: float = 30.0
    # A longer Retry-After is not waited out: the error is raised and the caller decides.
    max_retry_after: float = 120.0

    def backoff_delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (0 for the first)."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**retry))

    def after_error(self, exc: httpx.TransportError, retry: int, *, replay_safe: bool) -> float | None:
        """The wait before retrying after a transport error, or None to give up."""
        if retry + 1 >= self.attempts:
            return None
        if isinstance(exc, _NOT_SENT) or replay_safe:
            return self.backoff_delay(retry)
        return None

    def after_response(self, response: httpx.Response, retry: int, *, replay_safe: bool) -> float | None:
        """The wait before retrying after an error answer, or None to give up (and raise it)."""
        status = response.status_code
        if retry + 1 >= self.attempts:
            return None
        if status not in _NOT_ACTED and not (status in _MAYBE_ACTED and replay_safe):
            return None
        announced = retry_after(response.headers.get("retry-after"))
        if announced is None:
            return self.backoff_delay(retry)
        return announced if announced <= self.max_retry_after else None


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
