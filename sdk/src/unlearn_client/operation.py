"""Binding flows to clients, once for both: an :class:`Operation` on a resource class becomes a
plain method on :class:`~unlearn_client.Client` and a coroutine method on
:class:`~unlearn_client.AsyncClient`, with the flow's own parameters and types (the ``__get__``
overloads tell type checkers which one they get).

    class Models(Resource[R]):
        get = Operation(ops.models.get)        # def get(options, name) -> Flow[Model]

    client.models.get("digits")                # Model
    await aclient.models.get("digits")         # Model
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from unlearn_client.calls import Options
from unlearn_client.flow import EmittingFlow, Flow
from unlearn_client.runners import AsyncRunner, Runner, SyncRunner

P = ParamSpec("P")
T = TypeVar("T")
X = TypeVar("X")
R = TypeVar("R", bound=Runner)


class Resource(Generic[R]):
    """A group of operations (``client.models``, ``client.jobs``...) sharing the client's executor."""

    def __init__(self, runner: R) -> None:
        self._runner: R = runner


def _signature_without_options(flow: Callable[..., Any]) -> inspect.Signature:
    sig = inspect.signature(flow)
    return sig.replace(parameters=list(sig.parameters.values())[1:], return_annotation=sig.empty)


class _Bound(Generic[P, T]):
    """What both descriptors share: the flow, and dressing the bound callable like the flow."""

    def __init__(self, flow: Callable[Concatenate[Options, P], T]) -> None:
        self.flow = flow

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        return _signature_without_options(self.flow)

    def dress(self, bound: Callable[..., Any]) -> Any:
        functools.update_wrapper(bound, self.flow)
        # help() and IDEs show the flow's parameters without the leading `options`.
        bound.__signature__ = self.signature  # type: ignore[attr-defined]
        return bound


class Operation(_Bound[P, Flow[T]]):
    """A flow returning T: a method returning T (sync) or an awaitable of T (async)."""

    @overload
    def __get__(self, obj: None, owner: type) -> Operation[P, T]: ...
    @overload
    def __get__(self, obj: Resource[SyncRunner], owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: Resource[AsyncRunner], owner: type) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, obj: Resource[Any] | None, owner: type) -> Any:
        if obj is None:
            return self
        runner: Runner = obj._runner
        flow = self.flow

        if isinstance(runner, AsyncRunner):
            arunner = runner

            async def run_async(*args: P.args, **kwargs: P.kwargs) -> T:
                return await arunner.run(flow(arunner.options, *args, **kwargs))

            return self.dress(run_async)
        srunner = runner

        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            return srunner.run(flow(srunner.options, *args, **kwargs))

        return self.dress(run)


class Iteration(_Bound[P, EmittingFlow[X, Any]]):
    """A flow emitting X items: a method returning an iterator (sync) or async iterator (async)."""

    @overload
    def __get__(self, obj: None, owner: type) -> Iteration[P, X]: ...
    @overload
    def __get__(self, obj: Resource[SyncRunner], owner: type) -> Callable[P, Iterator[X]]: ...
    @overload
    def __get__(self, obj: Resource[AsyncRunner], owner: type) -> Callable[P, AsyncIterator[X]]: ...
    def __get__(self, obj: Resource[Any] | None, owner: type) -> Any:
        if obj is None:
            return self
        runner: Runner = obj._runner
        flow = self.flow

        def iterate(*args: P.args, **kwargs: P.kwargs) -> Iterator[X] | AsyncIterator[X]:
            return runner.iterate(flow(runner.options, *args, **kwargs))

        return self.dress(iterate)
