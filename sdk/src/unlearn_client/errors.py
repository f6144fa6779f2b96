"""Errors the SDK raises: every error answer of the API becomes a typed :class:`ProblemError`.

The service answers errors as RFC 9457 ``application/problem+json`` (``type``, ``title``,
``status``, ``detail`` and extension members such as ``errors`` or ``job_status``). The
exception keeps all of it, so a caller can branch on the class (``except NotFound``) and still
read what the server said.
"""

from __future__ import annotations

import json
from typing import Any

import httpx


class UnlearnError(Exception):
    """Base class of every error this package raises."""


class TransportFailure(UnlearnError):
    """The server could not be reached, or the connection broke, and retrying did not help."""

    def __init__(self, message: str, *, method: str, url: str) -> None:
        super().__init__(f"{method} {url}: {message}")
        self.method = method
        self.url = url


class DigestMismatch(UnlearnError):
    """A downloaded file's sha256 differs from the one the server announced (ETag/Repr-Digest)."""

    def __init__(self, expected: str, actual: str, url: str) -> None:
        super().__init__(f"{url}: sha256 {actual} does not match the announced {expected}")
        self.expected = expected
        self.actual = actual
        self.url = url


class WaitTimeout(UnlearnError):
    """``wait()`` gave up before the job ended; ``job`` is the last state seen (if any)."""

    def __init__(self, job_id: str, seconds: float, job: Any = None) -> None:
        super().__init__(f"job {job_id} did not finish within {seconds:g}s")
        self.job_id = job_id
        self.job = job


class ProblemError(UnlearnError):
    """An error answer of the API (status >= 400), with its problem+json members."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type: str = "about:blank",  # the RFC 9457 member is called "type"
        extra: dict[str, Any] | None = None,
        method: str = "",
        url: str = "",
        request_id: str | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.extra: dict[str, Any] = extra or {}
        self.method = method
        self.url = url
        self.request_id = request_id
        self.headers = headers or httpx.Headers()

    @property
    def problem(self) -> dict[str, Any]:
        """The problem document as the server sent it (what ``--json`` prints)."""
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            body["detail"] = self.detail
        return {**body, **self.extra}


class BadRequest(ProblemError):
    """400"""


class Unauthorized(ProblemError):
    """401: no key, or an unknown or revoked one."""


class Forbidden(ProblemError):
    """403: the key lacks the scope."""


class NotFound(ProblemError):
    """404: no such object (or another tenant's)."""


class Conflict(ProblemError):
    """409: e.g. a model name that exists, or cancelling a finished job."""


class Gone(ProblemError):
    """410: e.g. the checkpoint of a version retired because it still holds erased data."""


class ContentTooLarge(ProblemError):
    """413: the body exceeds the server's limit."""


class UnsupportedMediaType(ProblemError):
    """415"""


class RangeNotSatisfiable(ProblemError):
    """416"""


class Unprocessable(ProblemError):
    """422: the input does not validate (``extra["errors"]`` lists where, when given)."""


class TooManyRequests(ProblemError):
    """429: rate limited, and retries (honouring Retry-After) ran out."""


class ServerError(ProblemError):
    """5xx"""


class ServiceUnavailable(ServerError):
    """503: e.g. ``/readyz`` when the database or the broker is down."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: ContentTooLarge,
    415: UnsupportedMediaType,
    416: RangeNotSatisfiable,
    422: Unprocessable,
    429: TooManyRequests,
    503: ServiceUnavailable,
}

_STANDARD = {"type", "title", "status", "detail"}


def error_class(status: int) -> type[ProblemError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ProblemError


def problem_from_response(response: httpx.Response) -> ProblemError:
    """The exception for an error answer. A body that is not problem+json (a proxy's HTML page)
    still gives a ProblemError, titled by the status, with the start of the text as detail."""
    status = response.status_code
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("title"), str):
        title: str = body["title"]
        detail = body.get("detail")
        kind = body.get("type")
        extra = {k: v for k, v in body.items() if k not in _STANDARD}
    else:
        title = response.reason_phrase or "Error"
        text = response.text.strip() if response.content else ""
        detail = text[:500] or None
        kind, extra = None, {}
    request = response.request
    return error_class(status)(
        status,
        title,
        detail if isinstance(detail, str) else None,
        type=kind if isinstance(kind, str) else "about:blank",
        extra=extra,
        method=request.method,
        url=str(request.url),
        request_id=response.headers.get("x-request-id"),
        headers=response.headers,
    )
