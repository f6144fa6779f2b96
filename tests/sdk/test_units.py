"""The SDK's pieces on their own (no server): SSE parsing, retry decisions, digests, errors."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import unlearn_client
from unlearn_client.digest import announced_sha256, sha256_from_etag, sha256_from_repr_digest
from unlearn_client.errors import (
    Conflict,
    NotFound,
    ProblemError,
    ServerError,
    UnlearnError,
    problem_from_response,
)
from unlearn_client.retry import RetryPolicy, retry_after
from unlearn_client.sse import ServerEvent, SseParser


def test_sse_events_split_anywhere_across_chunks() -> None:
    stream = (
        b": keep-alive\n\n"
        b'event: progress\ndata: {"a": 1}\n\n'
        b"event: end\r\ndata: line one\r\ndata: line two\r\n\r\n"
        b"data: caf\xc3\xa9\rid: 7\r\r\n"
    )
    whole = SseParser().feed(stream)
    expected = [
        ServerEvent("progress", '{"a": 1}'),
        ServerEvent("end", "line one\nline two"),
        ServerEvent("message", "café", "7"),
    ]
    assert whole == expected
    # Byte by byte: lines, \r\n pairs and UTF-8 characters split between chunks.
    parser = SseParser()
    assert [event for i in range(len(stream)) for event in parser.feed(stream[i : i + 1])] == expected


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (" 0 ", 0.0), ("-5", 0.0), ("soon", None), ("", None), (None, None)],
)
def test_retry_after_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after(header) == seconds


def test_retry_after_http_date() -> None:
    assert retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)


def _response(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:
    return httpx.Response(status, headers=headers, content=body, request=httpx.Request("GET", "http://x/y"))


def test_what_is_retried() -> None:
    policy = RetryPolicy(attempts=3, backoff=1.0, max_backoff=1.0)
    not_sent = httpx.ConnectError("refused")
    broken = httpx.ReadError("reset")
    # A request that never left may always be sent again; one that may have arrived only if safe.
    assert policy.after_error(not_sent, 0, replay_safe=False) is not None
    assert policy.after_error(broken, 0, replay_safe=False) is None
    assert policy.after_error(broken, 0, replay_safe=True) is not None
    assert policy.after_error(not_sent, 2, replay_safe=True) is None  # attempts used up
    # 429/503: refused before acting. 502/504: may have acted. 4xx: the request is wrong.
    assert policy.after_response(_response(503, {"Retry-After": "2"}), 0, replay_safe=False) == 2.0
    assert policy.after_response(_response(429), 0, replay_safe=False) is not None
    assert policy.after_response(_response(502), 0, replay_safe=False) is None
    assert policy.after_response(_response(504), 0, replay_safe=True) is not None
    assert policy.after_response(_response(409), 0, replay_safe=True) is None
    assert policy.after_response(_response(429, {"Retry-After": "999"}), 0, replay_safe=True) is None


def test_backoff_grows_with_full_jitter_under_a_ceiling() -> None:
    policy = RetryPolicy(backoff=0.5, max_backoff=4.0)
    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (5, 4.0)]:
        delays = [policy.backoff_delay(retry) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling and max(delays) > ceiling / 2


def test_digests_from_etag_and_repr_digest() -> None:
    raw = hashlib.sha256(b"x").digest()
    hexa = raw.hex()
    b64 = base64.b64encode(raw).decode()
    assert sha256_from_etag(f'"{hexa}"') == hexa and sha256_from_etag(f'W/"{hexa.upper()}"') == hexa
    assert sha256_from_etag('"abc"') is None
    assert sha256_from_repr_digest(f"sha-512=:AAAA:, sha-256=:{b64}:") == hexa
    assert sha256_from_repr_digest("sha-256=:not base64:") is None
    assert announced_sha256(httpx.Headers({"ETag": f'"{hexa}"'})) == hexa
    with pytest.raises(UnlearnError, match="disagree"):
        announced_sha256(httpx.Headers({"ETag": f'"{"0" * 64}"', "Repr-Digest": f"sha-256=:{b64}:"}))
    with pytest.raises(UnlearnError, match="no sha256"):
        announced_sha256(httpx.Headers({}))


def test_errors_keep_the_problem_document() -> None:
    body = {"type": "about:blank", "title": "Conflict", "status": 409, "detail": "done", "job_status": "x"}
    error = problem_from_response(_response(409, {"x-request-id": "r1"}, json.dumps(body).encode()))
    assert isinstance(error, Conflict) and error.problem == body and error.extra == {"job_status": "x"}
    assert error.request_id == "r1" and error.method == "GET" and str(error) == "409 Conflict: done"
    assert isinstance(problem_from_response(_response(404, body=b"{}")), NotFound)
    # Not problem+json (a proxy's page): still typed by status, titled by the reason phrase.
    gateway = problem_from_response(_response(502, body=b"<html>bad gateway</html>"))
    assert isinstance(gateway, ServerError) and gateway.title == "Bad Gateway"
    assert gateway.detail == "<html>bad gateway</html>"
    teapot = problem_from_response(_response(418))
    assert type(teapot) is ProblemError and teapot.status == 418


def _imports(path: Path) -> set[str]:
    """The top-level packages a module imports (at module level or inside functions)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_sdk_depends_on_httpx_and_pydantic_only() -> None:
    # The CLI may use typer and rich (the "cli" extra); the core only imports rich lazily, for
    # an optional progress bar; the offline verifier needs cryptography (the "verify" extra).
    # Nothing reaches for torch, numpy, or the service's code.
    package = Path(unlearn_client.__file__).parent
    allowed = set(sys.stdlib_module_names) | {"httpx", "pydantic", "unlearn_client"}
    for module in package.rglob("*.py"):
        relative = module.relative_to(package)
        extra = {"typer", "rich"} if "cli" in relative.parts else {"rich"}
        if relative == Path("verify.py"):
            extra = {"cryptography"}
        outside = _imports(module) - allowed - extra
        assert outside == set(), f"{relative} imports {sorted(outside)}"
    # cryptography stays optional: importing the SDK does not load it.
    probe = "import sys, unlearn_client; print('cryptography' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
        == "False"
    )
