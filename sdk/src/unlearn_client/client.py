"""``Client`` (sync) and ``AsyncClient``: an httpx client, an executor, and the API's resources.

    from unlearn_client import Client

    with Client("http://127.0.0.1:8000", api_key) as client:
        request = client.deletions.submit("digits", "forget.safetensors", subject="user-42")
        job = client.wait(request, progress=True)
        client.download("digits", job.result_version, "v2.safetensors")   # sha256 checked

``base_url`` and ``api_key`` default to the ``UNLEARN_URL`` and ``UNLEARN_API_KEY`` variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Generic, Self, TypedDict, TypeVar

import httpx

from unlearn_client.calls import Options
from unlearn_client.operation import R
from unlearn_client.resources import Api
from unlearn_client.retry import RetryPolicy
from unlearn_client.runners import AsyncRunner, SyncRunner

# Seconds. The read timeout must outlast the 15 s between the event stream's keep-alives.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)

TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)


class _HttpSettings(TypedDict):
    base_url: str
    headers: dict[str, str]
    timeout: float | httpx.Timeout
    verify: bool | str


def _user_agent() -> str:
    try:
        own = version("unlearn-client")
    except PackageNotFoundError:
        own = "dev"
    return f"unlearn-client/{own} httpx/{httpx.__version__}"


def _http_settings(
    base_url: str | None, api_key: str | None, headers: Mapping[str, str] | None
) -> tuple[str, dict[str, str]]:
    url = base_url or os.environ.get("UNLEARN_URL")
    if not url:
        raise ValueError("no base_url given and UNLEARN_URL is not set")
    key = api_key if api_key is not None else os.environ.get("UNLEARN_API_KEY")
    all_headers = {"User-Agent": _user_agent(), **(headers or {})}
    if key:
        all_headers["Authorization"] = f"Bearer {key}"
    return url.rstrip("/"), all_headers


class _Connected(Api[R], Generic[R, TransportT]):
    """What both clients share: the settings, the httpx client they make, and the executor."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        poll_interval: float = 1.0,
        use_sse: bool = True,
        headers: Mapping[str, str] | None = None,
        transport: TransportT | None = None,
        verify: bool | str = True,
    ) -> None:
        url, all_headers = _http_settings(base_url, api_key, headers)
        http = _HttpSettings(base_url=url, headers=all_headers, timeout=timeout, verify=verify)
        options = Options(retry=retry or RetryPolicy(), poll_interval=poll_interval, use_sse=use_sse)
        super().__init__(self._connect(http, transport, options))

    def _connect(self, http: _HttpSettings, transport: TransportT | None, options: Options) -> R:
        raise NotImplementedError


class Client(_Connected[SyncRunner, httpx.BaseTransport]):
    """The API over blocking HTTP. Use it as a context manager, or call ``close()``."""

    http: httpx.Client

    def _connect(
        self, http: _HttpSettings, transport: httpx.BaseTransport | None, options: Options
    ) -> SyncRunner:
        self.http = httpx.Client(transport=transport, **http)
        return SyncRunner(self.http, options)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(_Connected[AsyncRunner, httpx.AsyncBaseTransport]):
    """The API over asyncio: every operation is a coroutine, lists iterate with ``async for``."""

    http: httpx.AsyncClient

    def _connect(
        self, http: _HttpSettings, transport: httpx.AsyncBaseTransport | None, options: Options
    ) -> AsyncRunner:
        self.http = httpx.AsyncClient(transport=transport, **http)
        return AsyncRunner(self.http, options)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
