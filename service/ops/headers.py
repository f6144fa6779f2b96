"""Response headers every answer gets: ``X-Content-Type-Options: nosniff`` everywhere, and
``Cache-Control: no-store`` on JSON answers that set no cache policy of their own.

API answers are per caller (tenant, key) and change with every write; a shared or browser cache
must not keep them. Checkpoint downloads set their own Cache-Control and keep it.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_JSON_TYPES = ("application/json", "application/problem+json")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", []))}
                headers = MutableHeaders(raw=message["headers"])
                headers["X-Content-Type-Options"] = "nosniff"
                media_type = headers.get("content-type", "").split(";")[0].strip().lower()
                if media_type in _JSON_TYPES and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
