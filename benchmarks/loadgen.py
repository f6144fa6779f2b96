"""A small HTTP/1.1 load generator for the service benchmarks: keep-alive connections on asyncio.

Why not httpx in threads (what the first version of benchmarks/service.py used): on a 2-core
machine the client shares the CPU with the server, and httpx costs about a millisecond of CPU per
request, a GIL-bound thread pool more again; at a few hundred requests/s the client then measures
itself. Here every request is encoded once before the clock starts (raw bytes), each connection is
one coroutine that writes a request, reads the status line, the headers and a ``Content-Length``
body, and notes the latency; nothing else runs per request. The server's answers must carry
``Content-Length`` (FastAPI's JSON answers do); ``Connection: close`` reopens the connection.

``run`` drives one list of requests over N connections (each takes the next request from a shared
queue, so a slow request does not hold back the others). ``run_mixed`` runs several such groups at
once (e.g. readers while uploads are validated) and stops the open-ended ones when the bounded
ones are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, host: str) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def json_request(method: str, path: str, payload: Any, headers: dict[str, str] | None = None) -> Request:
    return Request(
        method,
        path,
        json.dumps(payload, separators=(",", ":")).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


def multipart_request(
    path: str,
    files: dict[str, tuple[str, bytes]],
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Request:
    boundary = "----unlearnbench7f3a9c"
    parts: list[bytes] = []
    for name, value in (fields or {}).items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, (filename, data) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return Request(
        "POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})}
    )


@dataclass
class Result:
    """What one group of requests measured: latencies (s), statuses, wall time, bodies kept."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    wall_s: float = 0.0
    connections: int = 0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        n = len(lat)
        return {
            "connections": self.connections,
            "requests": n,
            "wall_s": self.wall_s,
            "requests_per_s": n / self.wall_s if self.wall_s else float("nan"),
            "p50_ms": 1000 * percentile(lat, 50),
            "p90_ms": 1000 * percentile(lat, 90),
            "p99_ms": 1000 * percentile(lat, 99),
            "max_ms": 1000 * lat[-1] if lat else float("nan"),
            "statuses": {str(s): self.statuses.count(s) for s in sorted(set(self.statuses))},
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Inclusive linear interpolation (numpy's default), on already sorted values."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(q) - 1]


class _Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked answers are not supported by this load generator")
        body = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


@dataclass
class Group:
    """Requests sent over ``connections`` connections; ``repeat``: cycle until the others end."""

    requests: list[Request] | Callable[[int], Request]
    connections: int
    repeat: bool = False  # open-ended (e.g. readers): stops when every bounded group is done
    keep_bodies: bool = False
    pause_s: float = 0.0  # think time between one connection's requests


async def _drive(base_url: str, groups: list[Group], warmup: bool) -> list[Result]:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    hostport = f"{host}:{port}"
    results = [Result(connections=g.connections) for g in groups]
    conns = [[_Conn(host, port) for _ in range(g.connections)] for g in groups]
    # Connections are opened (and used once) before the clock starts: TCP set-up is not measured.
    for group_conns in conns:
        for c in group_conns:
            await c.open()
            if warmup:
                await c.send(Request("GET", "/healthz").encode(hostport))
    stop = asyncio.Event()
    counters = [0] * len(groups)
    encoded: list[list[bytes] | None] = [
        [r.encode(hostport) for r in g.requests] if isinstance(g.requests, list) else None for g in groups
    ]

    def next_raw(k: int) -> bytes | None:
        g = groups[k]
        i = counters[k]
        counters[k] += 1
        enc = encoded[k]
        if enc is not None:
            if i >= len(enc):
                if not g.repeat:
                    return None
                i %= len(enc)
            return enc[i]
        assert callable(g.requests)
        return g.requests(i).encode(hostport)

    async def worker(k: int, conn: _Conn) -> None:
        g, res = groups[k], results[k]
        while not (g.repeat and stop.is_set()):
            raw = next_raw(k)
            if raw is None:
                return
            t0 = time.perf_counter()
            status, body = await conn.send(raw)
            res.latencies.append(time.perf_counter() - t0)
            res.statuses.append(status)
            if g.keep_bodies:
                res.bodies.append(body)
            if g.pause_s:
                await asyncio.sleep(g.pause_s)

    t0 = time.perf_counter()
    bounded = [
        asyncio.ensure_future(worker(k, c)) for k, g in enumerate(groups) if not g.repeat for c in conns[k]
    ]
    open_ended = [
        asyncio.ensure_future(worker(k, c)) for k, g in enumerate(groups) if g.repeat for c in conns[k]
    ]
    group_started = [t0] * len(groups)
    try:
        await asyncio.gather(*bounded)
        ended = time.perf_counter()
        stop.set()
        await asyncio.gather(*open_ended)
    finally:
        for group_conns in conns:
            for c in group_conns:
                await c.close()
    for k in range(len(groups)):
        results[k].wall_s = ended - group_started[k]
    return results


def run_mixed(base_url: str, groups: list[Group], warmup: bool = True) -> list[Result]:
    """Run the groups at once; returns one Result per group (same order)."""
    try:
        import uvloop

        return uvloop.run(_drive(base_url, groups, warmup))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(_drive(base_url, groups, warmup))


def run(base_url: str, requests: list[Request], connections: int, keep_bodies: bool = False) -> Result:
    return run_mixed(base_url, [Group(requests, connections, keep_bodies=keep_bodies)])[0]
