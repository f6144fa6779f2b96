"""Health, readiness and metrics endpoints (no authentication)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import Response

from service.context import ServiceContext
from service.deps import Context
from service.errors import Problem

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def check_database(ctx: ServiceContext) -> None:
    with ctx.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def check_broker(ctx: ServiceContext) -> None:
    settings = ctx.settings
    if settings.is_embedded_broker:
        folder = settings.broker_dir
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise RuntimeError(f"embedded broker folder {folder} is missing or not writable")
        return
    import kombu

    with kombu.Connection(
        settings.resolved_broker_url,
        connect_timeout=2,
        transport_options={"socket_timeout": 2, "socket_connect_timeout": 2, "max_retries": 1},
    ) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)


def check_storage(ctx: ServiceContext) -> None:
    store = ctx.storage
    if not store.fs.exists(store.root) and store.is_local:
        raise RuntimeError(f"artifact directory {store.root} is missing")


@router.get(
    "/readyz",
    summary="The database, the broker and the artifact store are reachable",
    responses={503: {"description": "a dependency is not reachable"}},
)
def readyz(ctx: Context) -> dict[str, Any]:
    checks: dict[str, str] = {}
    failed = False
    for name, check in (("database", check_database), ("broker", check_broker), ("storage", check_storage)):
        try:
            check(ctx)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:500]
            failed = True
    if failed:
        raise Problem(503, "Service Unavailable", "a dependency is not reachable", checks=checks)
    return {"status": "ok", "checks": checks}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
