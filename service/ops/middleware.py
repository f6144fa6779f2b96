"""Request id, JSON access log and HTTP metrics, as one pure ASGI middleware."""

from __future__ import annotations

import json
import re
import time
import uuid

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PROBLEM_JSON
from service.ops.metrics import HttpMetrics

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_log = structlog.get_logger("service.access")

_INTERNAL_ERROR_BODY = json.dumps(
    {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "an unexpected error occurred",
    }
).encode()


def _internal_error_start() -> Message:
    return {
        "type": "http.response.start",
        "status": 500,
        "headers": [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(_INTERNAL_ERROR_BODY)).encode()),
        ],
    }


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), ""
        )
        # Accept a caller's id (it ties our lines to theirs) only if it is harmless in a log line.
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except ClientDisconnect:
                # The client left mid-body (the error handlers answer this themselves; this is for
                # a disconnect raised outside a route): no one to answer, nothing wrong here.
                _log.info("client_disconnected", path=scope["path"])
            except Exception as exc:
                # Answered here rather than by Starlette's outermost handler so that the 500 carries
                # the request id, and its log line too. The client learns nothing of the internals.
                _log.error("unhandled_error", path=scope["path"], exc_info=exc)
                if response_started:
                    raise
                await send_with_id(_internal_error_start())
                await send_with_id({"type": "http.response.body", "body": _INTERNAL_ERROR_BODY})
            finally:
                elapsed = time.perf_counter() - started
                route = scope.get("route")
                # The template, not the path: /v1/models/{name} is one series, not one per model.
                template = getattr(route, "path", None) or "<unmatched>"
                self.metrics.observe(scope["method"], template, status, elapsed)
                principal = scope.get("state", {}).get("principal")
                _log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    route=template,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    key_id=getattr(principal, "key_id", None),
                    client=(scope.get("client") or ("", 0))[0],
                )
