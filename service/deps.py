"""FastAPI dependencies: the service context, a database session per request, the caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.auth import authenticate, has_scope
from service.context import ServiceContext
from service.db import session_scope
from service.errors import Problem


def get_context(request: Request) -> ServiceContext:
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:  # only when the app runs without its lifespan
        raise Problem(503, "Service Unavailable", "the service is starting")
    return ctx


Context = Annotated[ServiceContext, Depends(get_context)]


def get_db(request: Request) -> Iterator[Session]:
    """One transaction per request: commit on success, roll back on any error."""
    with session_scope(get_context(request).session_factory) as session:
        yield session


# scope="function": commit before the response is sent, so a client never sees a 201 for a
# transaction that then fails to commit.
DbSession = Annotated[Session, Depends(get_db, scope="function")]


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    actor: str = ""

    def has(self, scope: str) -> bool:
        return has_scope(self.scopes, scope)


_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer ulk_...`")


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def authenticate_request(
    request: Request,
    ctx: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    # A short transaction of its own, not the request's: the route's transaction then starts only
    # when the route touches the database, after any CPU-bound validation (on SQLite every
    # transaction holds the write lock).
    with session_scope(ctx.session_factory) as session:
        key = authenticate(session, credentials.credentials.strip())
        if key is None:
            raise _unauthorized("invalid or revoked API key")
        principal = Principal(
            tenant_id=key.tenant_id, key_id=key.id, scopes=frozenset(key.scopes), actor=f"key:{key.id}"
        )
    request.state.principal = principal
    return principal


def require(scope: str) -> Callable[..., Principal]:
    """A dependency that authenticates the caller and demands one scope (admin implies all)."""

    def dependency(principal: Annotated[Principal, Depends(authenticate_request)]) -> Principal:
        if not principal.has(scope):
            raise Problem(403, "Forbidden", f"this API key lacks the '{scope}' scope", required_scope=scope)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency
