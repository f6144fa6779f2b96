"""Health, readiness and metrics (no key needed)."""

from __future__ import annotations

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, call, fetch
from unlearn_client.flow import Flow
from unlearn_client.models import Health, PublicKey, Readiness


def health(options: Options) -> Flow[Health]:
    """The process is up."""
    return (yield from fetch(options, api.HEALTH.request()))


def ready(options: Options) -> Flow[Readiness]:
    """The database, broker and storage are reachable; raises ServiceUnavailable (503) if not,
    with the failing checks in ``error.extra["checks"]``."""
    return (yield from fetch(options, api.READY.request()))


def metrics(options: Options) -> Flow[str]:
    """The Prometheus metrics, as text."""
    response = yield from call(options, api.METRICS.request().spec)
    return response.text


def signing_key(options: Options) -> Flow[PublicKey]:
    """The key that signs certificates, receipts and audit heads (JWK and PEM), to check them offline."""
    return (yield from fetch(options, api.SIGNING_KEY.request()))
