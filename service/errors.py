"""RFC 9457 problem details: every error the API returns is ``application/problem+json``."""

from __future__ import annotations

import json
import sys
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from unlearning.errors import InvalidInputError

PROBLEM_JSON = "application/problem+json"

_log = structlog.get_logger("service.errors")

# Titles for statuses raised without one (e.g. Starlette's own 404/405).
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def status_title(status: int) -> str:
    return _TITLES.get(status, "Error")


class Problem(Exception):
    """An error with an HTTP status, rendered as problem+json; raise it anywhere below a route."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type: str = "about:blank",  # the RFC 9457 member is called "type"
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.headers = headers or {}
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            body["detail"] = self.detail
        for key, value in self.extra.items():
            if key not in body:
                body[key] = value
        return jsonable_encoder(body)


def problem_response(problem: Problem) -> JSONResponse:
    return JSONResponse(
        problem.to_dict(), status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON
    )


def not_found(kind: str, ident: object) -> Problem:
    return Problem(404, "Not Found", f"{kind} {ident!s} not found")


def conflict(detail: str, **extra: Any) -> Problem:
    return Problem(409, "Conflict", detail, **extra)


def unprocessable(detail: str, **extra: Any) -> Problem:
    return Problem(422, "Unprocessable Content", detail, **extra)


def json_error_detail(exc: BaseException, what: str = "the body") -> str | None:
    """A client-facing reason for a JSON parse failure, or None if ``exc`` is not one."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, RecursionError):
        return f"{what} is nested too deeply to parse (at most about {sys.getrecursionlimit()} levels)"
    if isinstance(exc, UnicodeDecodeError):
        return f"{what} is not valid JSON: it is not UTF-8 text"
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return f"{what} holds an integer with more than {sys.get_int_max_str_digits()} digits"
    return None


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        # "input" may hold bytes or the whole uploaded file; keep the answer small and JSON-safe.
        errors.append(
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type", "")}
        )
    return errors


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc)


async def _on_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    first = errors[0] if errors else None
    detail = (
        f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else "request validation failed"
    )
    return problem_response(unprocessable(detail, errors=errors))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> set[str]:
    # Starlette's Allow lists the methods of the first route matching the path only; a path
    # served by several routes (GET and POST /v1/models) deserves the union. Asking the router
    # (rather than reading route objects) also sees through included routers.
    from starlette.routing import Match

    allowed: set[str] = set()
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(dict(probe))[0] == Match.FULL for route in request.app.router.routes):
            allowed.add(method)
    return allowed


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    title = status_title(exc.status_code)
    if detail == title:
        detail = None
    if exc.status_code == 400 and exc.__cause__ is not None:
        # FastAPI answers every body it cannot parse with a bare 400; a JSON body nested too deep
        # or with a too-long integer is bad input like any other: say what is wrong, as a 422.

        reason = json_error_detail(exc.__cause__)
        if reason is not None:
            return problem_response(unprocessable(reason))
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(sorted(allowed))
            detail = detail or f"{request.method} is not allowed here; allowed: {headers['Allow']}"
    return problem_response(Problem(exc.status_code, title, detail, headers=headers))


async def _on_invalid_input(_request: Request, exc: Exception) -> JSONResponse:
    return problem_response(unprocessable(str(exc), error=type(exc).__name__))


async def _on_client_disconnect(request: Request, _exc: Exception) -> JSONResponse:
    # The client went away before its body was complete: nothing failed here and nobody reads the
    # answer, so it is an info line, not an "unhandled_error" with a traceback.
    _log.info("client_disconnected", path=request.url.path)
    return problem_response(
        Problem(400, "Bad Request", "the client disconnected before the request body was complete")
    )


async def _on_unhandled(request: Request, exc: Exception) -> JSONResponse:
    # Log the traceback for operators; the client sees no internals.
    _log.error("unhandled_error", path=request.url.path, exc_info=exc)
    return problem_response(Problem(500, "Internal Server Error", "an unexpected error occurred"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(InvalidInputError, _on_invalid_input)
    app.add_exception_handler(ClientDisconnect, _on_client_disconnect)
    app.add_exception_handler(Exception, _on_unhandled)
