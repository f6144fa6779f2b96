"""Sending one request with retries and turning error answers into typed exceptions: the step
every operation is built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from unlearn_client.endpoints import Call
from unlearn_client.errors import TransportFailure, problem_from_response
from unlearn_client.flow import Flow, Send, Sleep, Stream
from unlearn_client.retry import RetryPolicy
from unlearn_client.spec import RequestSpec

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Options:
    """What a client passes to every operation."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Seconds between two polls when following a job without Server-Sent Events.
    poll_interval: float = 1.0
    # Follow jobs with the SSE stream (GET /v1/jobs/{id}/events); False: poll only.
    use_sse: bool = True


def _exchange(options: Options, spec: RequestSpec, *, stream: bool) -> Flow[Any]:
    policy = options.retry
    retry = 0
    while True:
        try:
            result = yield Send(spec, stream=stream)
        except httpx.TransportError as exc:
            delay = policy.after_error(exc, retry, replay_safe=spec.replay_safe) if spec.retries else None
            if delay is None:
                message = str(exc) or type(exc).__name__
                raise TransportFailure(message, method=spec.method, url=spec.path) from exc
        else:
            response: httpx.Response = result.response if stream else result
            if not response.is_error:
                return result
            delay = (
                policy.after_response(response, retry, replay_safe=spec.replay_safe) if spec.retries else None
            )
            if delay is None:
                raise problem_from_response(response)
        retry += 1
        yield Sleep(delay)


def call(options: Options, spec: RequestSpec) -> Flow[httpx.Response]:
    """The answer to ``spec`` (retried as the policy allows); an error answer raises ProblemError."""
    response: httpx.Response = yield from _exchange(options, spec, stream=False)
    return response


def open_stream(options: Options, spec: RequestSpec) -> Flow[Stream]:
    """As :func:`call`, with the body left to read (``Read``)."""
    stream: Stream = yield from _exchange(options, spec, stream=True)
    return stream


def parse(response: httpx.Response, model: type[M]) -> M:
    return model.model_validate_json(response.content)


def fetch(options: Options, request: Call[M]) -> Flow[M]:
    """Send a request and parse its JSON answer into the endpoint's model."""
    if request.response is None:
        raise TypeError(f"{request.spec.method} {request.spec.path} does not answer JSON")
    response = yield from call(options, request.spec)
    return parse(response, request.response)
