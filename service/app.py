"""The FastAPI application: ``create_app()`` wires context, migrations, routers and middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import Depends, FastAPI

from service import __doc__ as service_doc
from service.context import build_context
from service.db import session_scope
from service.errors import install_error_handlers
from service.keys.logic import bootstrap_admin_key
from service.migrate import upgrade
from service.openapi import install_openapi
from service.ops.bodylimit import BodySizeLimitMiddleware
from service.ops.docs import install_docs
from service.ops.headers import SecurityHeadersMiddleware
from service.ops.logging import configure_logging
from service.ops.metrics import build_registry
from service.ops.middleware import ObservabilityMiddleware
from service.pagination import forbid_unknown_query
from service.settings import Settings, get_settings

API_VERSION = "1.0.0"
_log = structlog.get_logger("service.app")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    ctx = build_context(settings)
    registry, http_metrics = build_registry(ctx.session_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Idempotent: at head it does nothing; API and workers may all run it at start.
        upgrade(settings.resolved_database_url)
        with session_scope(ctx.session_factory) as session:
            if bootstrap_admin_key(session, settings) is not None:
                _log.info("admin_key_created", tenant=settings.admin_tenant)
        app.state.ctx = ctx
        from service.certificates.keystore import load_signer

        app.state.signer = signer = load_signer(settings)
        stop_signer = None
        if settings.audit_sign_interval_seconds > 0:
            # Signed chain heads make a truncated chain detectable (service/audit/checkpoints.py).
            from service.audit.checkpoints import start_head_signer_thread

            stop_signer = start_head_signer_thread(
                ctx.session_factory, signer, settings.audit_sign_interval_seconds
            )
        stop_reconciler = None
        if settings.run_reconciler_in_api:
            # Repairs lost messages and expired leases even when no separate reconciler runs.
            from service.reconciler import start_reconciler_thread

            stop_reconciler = start_reconciler_thread(ctx)
        stop_webhooks = None
        if settings.run_reconciler_in_api and settings.webhook_delivery_in_api:
            # Sends webhook deliveries (and their retries) written by this API and by the workers.
            from service.webhooks.delivery import start_delivery_thread

            stop_webhooks = start_delivery_thread(ctx)
        _log.info("api_started", database=ctx.engine.url.render_as_string(hide_password=True))
        try:
            yield
        finally:
            if stop_webhooks is not None:
                stop_webhooks()
            if stop_reconciler is not None:
                stop_reconciler()
            if stop_signer is not None:
                stop_signer()
            ctx.close()

    app = FastAPI(
        title="Unlearning as a service",
        version=API_VERSION,
        description=(service_doc or "")
        + "\n\nErrors are RFC 9457 `application/problem+json`. Auth: `Authorization: Bearer <api key>`.",
        lifespan=lifespan,
        # "an unknown method or parameter is 422": a misspelt filter must not silently match all.
        dependencies=[Depends(forbid_unknown_query)],
        # /docs and /redoc are served from local assets (install_docs below), not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics_registry = registry

    from service.audit.routes import router as audit_router
    from service.certificates.routes import router as certificates_router
    from service.datasets.routes import router as datasets_router
    from service.deletions.routes import router as deletions_router
    from service.erasures.routes import router as erasures_router
    from service.jobs.routes import router as jobs_router
    from service.jobs.routes import training_router
    from service.keys.routes import router as keys_router
    from service.ops.routes import router as ops_router
    from service.receipts.routes import router as receipts_router
    from service.references.routes import router as references_router
    from service.registry.routes import router as registry_router
    from service.webhooks.routes import router as webhooks_router

    for router in (
        ops_router,
        registry_router,
        datasets_router,
        deletions_router,
        erasures_router,
        jobs_router,
        training_router,
        references_router,
        audit_router,
        keys_router,
        certificates_router,
        receipts_router,
        webhooks_router,
    ):
        app.include_router(router)
    # The web console (static files; its data come from the routes above, with the user's key).
    from service.console.routes import router as console_router

    app.include_router(console_router)
    install_error_handlers(app)
    install_openapi(app)
    install_docs(app)
    # Added last = outermost: the size limit sees the request before anything reads it, the
    # observability middleware wraps it so even a 413 gets a request id and a log line, and the
    # headers middleware wraps them all so that every answer, a 413 or 500 too, gets nosniff.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(ObservabilityMiddleware, metrics=http_metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    return app
