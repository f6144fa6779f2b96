"""Python SDK of the unlearning-as-a-service REST API (``Client``, ``AsyncClient``).

Depends on httpx and pydantic only; the ``cli`` extra adds the ``unlearn-client`` command.
"""

from unlearn_client import models
from unlearn_client.client import AsyncClient, Client
from unlearn_client.errors import (
    BadRequest,
    Conflict,
    ContentTooLarge,
    DigestMismatch,
    Forbidden,
    Gone,
    NotFound,
    ProblemError,
    RangeNotSatisfiable,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    TransportFailure,
    Unauthorized,
    UnlearnError,
    Unprocessable,
    UnsupportedMediaType,
    WaitTimeout,
)
from unlearn_client.models import *  # noqa: F403  (the typed answers, listed in models.__all__)
from unlearn_client.ops.download import Downloaded
from unlearn_client.retry import RetryPolicy

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ContentTooLarge",
    "DigestMismatch",
    "Downloaded",
    "Forbidden",
    "Gone",
    "NotFound",
    "ProblemError",
    "RangeNotSatisfiable",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "TooManyRequests",
    "TransportFailure",
    "Unauthorized",
    "UnlearnError",
    "Unprocessable",
    "UnsupportedMediaType",
    "WaitTimeout",
]
__all__ += models.__all__
