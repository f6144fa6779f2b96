"""The two executors of flows: sync (``httpx.Client``) and async (``httpx.AsyncClient``).

They only perform effects; everything else is in the flows. The stepping through a flow, and the
bookkeeping of streams to close, is shared (:class:`_Stepper`), so each executor is the loop
itself and four I/O calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar, cast

import httpx

from unlearn_client.calls import Options
from unlearn_client.flow import Close, Effect, Emit, EmittingFlow, Read, Send, Sleep, Stream

T = TypeVar("T")
X = TypeVar("X")


class _Stepper(Generic[X, T]):
    """Advances a flow: hands out its next step, takes back the step's outcome, keeps the result."""

    def __init__(self, flow: EmittingFlow[X, T]) -> None:
        self._flow = flow
        self._value: Any = None
        self._error: BaseException | None = None
        self.streams: list[Stream] = []
        self._result: Any = None

    @property
    def result(self) -> T:
        return cast(T, self._result)

    def next_step(self) -> Effect | Emit[X] | None:
        """The next effect or item; None once the flow has returned (see ``result``)."""
        value, error = self._value, self._error
        self._value, self._error = None, None
        try:
            return self._flow.throw(error) if error is not None else self._flow.send(value)
        except StopIteration as stop:
            self._result = stop.value
            return None

    def done(self, value: Any) -> None:
        if isinstance(value, Stream):
            self.streams.append(value)
        self._value = value

    @contextmanager
    def performing(self) -> Iterator[None]:
        """Around an effect: a transport error goes back into the flow (to retry or resume) as
        the effect's outcome; any other error is a bug or a cancellation and leaves through the
        executor."""
        try:
            yield
        except httpx.TransportError as exc:
            self._error = exc

    def __iter__(self) -> Iterator[Effect | Emit[X]]:
        while (step := self.next_step()) is not None:
            yield step

    def close(self) -> list[Stream]:
        """Closes the flow; the streams it opened are the executor's to close."""
        self._flow.close()
        return self.streams


class SyncRunner:
    def __init__(self, http: httpx.Client, options: Options) -> None:
        self.http = http
        self.options = options

    def run(self, flow: EmittingFlow[Any, T]) -> T:
        steps = self._drive(flow)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                result: T = stop.value
                return result

    def iterate(self, flow: EmittingFlow[X, Any]) -> Iterator[X]:
        yield from self._drive(flow)

    def _drive(self, flow: EmittingFlow[X, T]) -> Generator[X, None, T]:
        stepper: _Stepper[X, T] = _Stepper(flow)
        with self._closing(stepper):
            for step in stepper:
                if isinstance(step, Emit):
                    yield step.item
                else:
                    self._settle(stepper, step)
            return stepper.result

    @contextmanager
    def _closing(self, stepper: _Stepper[Any, Any]) -> Iterator[None]:
        """Closes the flow, and the streams it opened, however the driving ends."""
        try:
            yield
        finally:
            for stream in stepper.close():
                stream.response.close()

    def _settle(self, stepper: _Stepper[Any, Any], step: Effect) -> None:
        with stepper.performing():
            stepper.done(self._perform(step))

    def _perform(self, step: Effect) -> Any:
        if isinstance(step, Send):
            with step.request.build(self.http) as request:
                response = self.http.send(request, stream=step.stream)
            if not step.stream:
                return response
            if response.is_error:  # read whole, so that the error can be reported
                response.read()
                return Stream(response, iter(()))
            return Stream(response, response.iter_bytes())
        if isinstance(step, Read):
            return next(step.stream.chunks, b"")
        if isinstance(step, Close):
            step.stream.response.close()
            return None
        assert isinstance(step, Sleep)
        time.sleep(step.seconds)
        return None


class _Result(Generic[T]):
    value: T


class AsyncRunner:
    def __init__(self, http: httpx.AsyncClient, options: Options) -> None:
        self.http = http
        self.options = options

    async def run(self, flow: EmittingFlow[Any, T]) -> T:
        result: _Result[T] = _Result()
        async for _ in self._drive(flow, result):
            pass
        return result.value

    def iterate(self, flow: EmittingFlow[X, Any]) -> AsyncIterator[X]:
        return self._drive(flow, _Result())

    async def _drive(self, flow: EmittingFlow[X, T], result: _Result[T]) -> AsyncIterator[X]:
        # An async generator cannot return a value: the flow's result goes into ``result``.
        stepper: _Stepper[X, T] = _Stepper(flow)
        async with self._closing(stepper):
            for step in stepper:
                if isinstance(step, Emit):
                    yield step.item
                else:
                    await self._settle(stepper, step)
            result.value = stepper.result

    @asynccontextmanager
    async def _closing(self, stepper: _Stepper[Any, Any]) -> AsyncIterator[None]:
        """Closes the flow, and the streams it opened, however the driving ends."""
        try:
            yield
        finally:
            for stream in stepper.close():
                await stream.response.aclose()

    async def _settle(self, stepper: _Stepper[Any, Any], step: Effect) -> None:
        with stepper.performing():
            stepper.done(await self._perform(step))

    async def _perform(self, step: Effect) -> Any:
        if isinstance(step, Send):
            with step.request.build(self.http) as request:
                response = await self.http.send(request, stream=step.stream)
            if not step.stream:
                return response
            if response.is_error:  # read whole, so that the error can be reported
                await response.aread()
                return Stream(response, None)
            return Stream(response, response.aiter_bytes())
        if isinstance(step, Read):
            if step.stream.chunks is None:
                return b""
            return await anext(step.stream.chunks, b"")
        if isinstance(step, Close):
            await step.stream.response.aclose()
            return None
        assert isinstance(step, Sleep)
        await asyncio.sleep(step.seconds)
        return None


Runner = SyncRunner | AsyncRunner
