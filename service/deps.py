"""FastAPI dependencies: the service context, a database session per request, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.auth import authenticate, has_scope, touch, use_is_stale
from service.context import ServiceContext
from service.db import read_scope, session_scope
from service.errors import Problem


def context_of(request: Request) -> ServiceContext:
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:  # only when the app runs without its lifespan
        raise Problem(503, "Service Unavailable", "the service is starting")
    return ctx


# The dependencies below that do no I/O are coroutines: FastAPI runs a plain ``def`` dependency
# in the thread pool, and each such hop costs more CPU than the work itself (py-spy: the hand-offs
# were about a sixth of the intake's CPU).
async def get_context(request: Request) -> ServiceContext:
    return context_of(request)


Context = Annotated[ServiceContext, Depends(get_context)]


async def get_db(request: Request) -> AsyncIterator[Session]:
    """One transaction per request: commit on success, roll back on any error.

    The session starts no transaction until the route touches the database, and only then is
    the commit (or rollback) sent to the thread pool: a route that writes elsewhere (the intake's
    group commit) or not at all costs no hop.
    """
    session = context_of(request).session_factory()
    try:
        yield session
        if session.in_transaction():
            await run_in_threadpool(session.commit)
    except BaseException:
        if session.in_transaction():
            await run_in_threadpool(session.rollback)
        raise
    finally:
        session.close()  # nothing left open (but after a cancellation): no I/O


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
    # when the route touches the database, after any CPU-bound validation. A read transaction: on
    # SQLite it then waits for no writer (every write transaction holds the write lock); the
    # key's last use is written apart, at most once a minute.
    with read_scope(ctx.session_factory) as session:
        key = authenticate(session, credentials.credentials.strip(), touch=False)
        if key is None:
            raise _unauthorized("invalid or revoked API key")
        principal = Principal(
            tenant_id=key.tenant_id, key_id=key.id, scopes=frozenset(key.scopes), actor=f"key:{key.id}"
        )
        stale = use_is_stale(key)
    if stale:
        with session_scope(ctx.session_factory) as session:
            touch(session, key.id)
    request.state.principal = principal
    return principal


def require(scope: str) -> Callable[..., Coroutine[None, None, Principal]]:
    """A dependency that authenticates the caller and demands one scope (admin implies all)."""

    async def dependency(principal: Annotated[Principal, Depends(authenticate_request)]) -> Principal:
        if not principal.has(scope):
            raise Problem(403, "Forbidden", f"this API key lacks the '{scope}' scope", required_scope=scope)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency
