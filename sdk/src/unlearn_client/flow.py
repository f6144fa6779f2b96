"""Operations as generators of effects ("sans-I/O"), so each is written once for sync and async.

An operation is a generator that *yields* what it needs done — send a request, read the next
chunk of a streamed body, close it, sleep — and receives the result. It never touches a socket.
The sync executor performs the effects with ``httpx.Client`` and ``time.sleep``, the async one
with ``httpx.AsyncClient`` and ``asyncio.sleep``; retries, SSE parsing, resumable downloads and
error mapping live in the operations and are shared. A transport error (``httpx.TransportError``)
raised while performing an effect is thrown into the generator at its ``yield``.

An operation may also yield :class:`Emit` items: an executor that iterates (``client.jobs.events``,
``client.models.iterate``) hands them to the caller one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from unlearn_client.spec import RequestSpec

T = TypeVar("T")
X = TypeVar("X")


@dataclass(eq=False)
class Stream:
    """A response whose body is read chunk by chunk (``Read``); ``chunks`` belongs to the executor."""

    response: httpx.Response
    chunks: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class Send:
    """Send one request. Result: the ``httpx.Response`` (body read), or with ``stream=True`` a
    :class:`Stream` whose body is still to read (an error answer's body is read anyway, so it can
    be reported)."""

    request: RequestSpec
    stream: bool = False


@dataclass(frozen=True)
class Read:
    """The next chunk of a stream's body; ``b""`` once it is complete."""

    stream: Stream


@dataclass(frozen=True)
class Close:
    """Give a stream's connection back (executors also close every stream left open at the end)."""

    stream: Stream


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit(Generic[X]):
    """An item for the caller of an iterating operation."""

    item: X


Effect = Send | Read | Close | Sleep
# An operation that returns T.
Flow = Generator[Effect, Any, T]
# An operation that also hands out items (its return value is ignored by iterating executors).
EmittingFlow = Generator[Effect | Emit[X], Any, T]


def forward(flow: EmittingFlow[X, T], on_item: Callable[[X], None]) -> Flow[T]:
    """Run ``flow`` inside another operation, passing its effects up and its emitted items to
    ``on_item`` (``yield from`` would pass the items up too)."""
    value: Any = None
    error: Exception | None = None
    try:
        while True:
            try:
                step = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value, error = None, None
            if isinstance(step, Emit):
                on_item(step.item)
                continue
            try:
                value = yield step
            except Exception as exc:  # not GeneratorExit: closing this closes the inner flow below
                error = exc
    finally:
        flow.close()
