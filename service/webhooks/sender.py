"""One HTTP attempt of one delivery: check the destination again, connect to the checked address,
POST the signed body, judge the answer.

The URL's host is resolved and checked here, at send time (service/webhooks/ssrf.py), and the
request goes to that address: the URL's host is replaced by the IP, the Host header and (for
https) the TLS server name and certificate check keep the name. A second lookup by the HTTP
client could otherwise answer a private address (DNS rebinding). Nothing else of the network
path is configurable by the environment (no proxies), redirects are not followed (a 3xx is a
failed attempt: a redirect could lead anywhere), every network operation has a short timeout, and
at most ``webhook_max_response_bytes`` of the answer are read, never decompressed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from service.settings import Settings
from service.webhooks.signing import sign_headers
from service.webhooks.ssrf import AllowList, IPAddress, RefusedDestination, check

USER_AGENT = "unlearn-service-webhooks/1"
_EXCERPT_CHARS = 300


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status_code: int | None = None
    error: str | None = None


def _read_capped(response: httpx.Response, cap: int, deadline: float) -> bytes:
    buf = bytearray()
    if cap <= 0:
        return b""
    # Raw bytes: a compressed answer is not inflated (no decompression bomb).
    for chunk in response.iter_raw():
        buf.extend(chunk)
        if len(buf) >= cap or time.monotonic() > deadline:
            break
    return bytes(buf[:cap])


def _post(
    settings: Settings,
    target: httpx.URL,
    address: IPAddress,
    headers: dict[str, str],
    body: bytes,
    extensions: dict[str, Any],
) -> tuple[int, bytes]:
    timeout = settings.webhook_timeout_seconds
    deadline = time.monotonic() + timeout
    # A client per attempt: connections are keyed by the pinned IP, and a pooled TLS connection
    # of one host name must never carry a request for another.
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        request = client.build_request(
            "POST", target.copy_with(host=str(address)), content=body, headers=headers, extensions=extensions
        )
        response = client.send(request, stream=True)
        try:
            return response.status_code, _read_capped(response, settings.webhook_max_response_bytes, deadline)
        finally:
            response.close()


def send(settings: Settings, allow: AllowList, url: str, msg_id: str, secret: str, body: bytes) -> Attempt:
    try:
        destination = check(url, allow)
    except RefusedDestination as exc:
        return Attempt(False, None, f"refused destination: {exc}")
    target = destination.url
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "accept-encoding": "identity",
        "host": target.netloc.decode("ascii"),
        **sign_headers(secret, msg_id, body),
    }
    extensions: dict[str, Any] = {"sni_hostname": destination.host} if target.scheme == "https" else {}
    refused = Attempt(False, None, "no address to connect to")
    for address in destination.addresses:  # every one of them checked
        try:
            code, excerpt = _post(settings, target, address, headers, body, extensions)
        except httpx.ConnectError as exc:
            # The name's next address may answer (a dual-stack host whose IPv6 path is down).
            refused = Attempt(False, None, f"ConnectError ({address}): {exc}"[:1000])
            continue
        except httpx.TimeoutException:
            return Attempt(False, None, f"timed out after {settings.webhook_timeout_seconds:g} s")
        except httpx.HTTPError as exc:
            return Attempt(False, None, f"{type(exc).__name__}: {exc}"[:1000])
        if 200 <= code < 300:
            return Attempt(True, code)
        text = excerpt.decode("utf-8", "replace")[:_EXCERPT_CHARS]
        hint = " (redirects are not followed)" if 300 <= code < 400 else ""
        return Attempt(False, code, f"HTTP {code}{hint}" + (f": {text}" if text else ""))
    return refused
