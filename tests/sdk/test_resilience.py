"""Failures between the SDK and the real service, made by a relay (tests/sdk/faults.py): broken
downloads resume, lost answers are retried without acting twice, gateways' and rate limits'
refusals are waited out, and what may not be retried is not."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from unlearn_client import Client, DigestMismatch, ServiceUnavailable, TooManyRequests, TransportFailure

from tests.sdk.conftest import DIGITS_ARCH, FAST_RETRY, Clients, Digits, Server, unique
from tests.sdk.faults import Answer, Corrupt, Cut, Drop, FaultProxy

CHECKPOINT = r"/versions/\d+/checkpoint$"


def test_an_interrupted_download_resumes_with_range(
    clients: Clients, proxy: FaultProxy, registered: str, digits: Digits, tmp_path: Path
) -> None:
    # The first transfer breaks after 4000 bytes, the second after 6000 more.
    proxy.add("GET", CHECKPOINT, Cut(4000))
    proxy.add("GET", CHECKPOINT, Cut(6000))
    done = clients(lambda c: c.download(registered, "latest", tmp_path / "v.safetensors"), url=proxy.url)

    assert done.path.read_bytes() == digits.checkpoint
    assert done.sha256 == hashlib.sha256(digits.checkpoint).hexdigest() and done.resumed == 2
    gets = proxy.requests("GET", CHECKPOINT)
    assert [g.headers.get("range") for g in gets] == [None, "bytes=4000-", "bytes=10000-"]
    etag = f'"{done.sha256}"'
    assert [g.headers.get("if-range") for g in gets] == [None, etag, etag]
    # "latest" was resolved once (HEAD); every range came from the numbered, immutable version.
    assert all(g.path.endswith("/versions/1/checkpoint") for g in gets)
    assert not list(tmp_path.glob("*.part"))


def test_a_download_left_half_done_continues_in_a_later_call(
    server: Server, proxy: FaultProxy, registered: str, digits: Digits, tmp_path: Path
) -> None:
    # 5000 bytes arrive, then every resumed try breaks before a byte: the call gives up.
    proxy.add("GET", CHECKPOINT, Cut(5000))
    proxy.add("GET", CHECKPOINT, Cut(0), times=10)
    target = tmp_path / "v.safetensors"
    with Client(proxy.url, server.admin_key, retry=FAST_RETRY) as client, pytest.raises(TransportFailure):
        client.download(registered, 1, target)
    (part,) = tmp_path.glob("v.safetensors.*.part")
    assert part.stat().st_size == 5000 and not target.exists()
    assert len(proxy.requests("GET", CHECKPOINT)) == 1 + 3  # then 3 tries without progress

    with server.client() as client:
        done = client.download(registered, 1, target)
    assert done.resumed == 1 and target.read_bytes() == digits.checkpoint
    assert not part.exists()


def test_a_corrupted_download_is_refused_and_not_kept(
    clients: Clients, proxy: FaultProxy, registered: str, digits: Digits, tmp_path: Path
) -> None:
    proxy.add("GET", CHECKPOINT, Corrupt(1234))
    with pytest.raises(DigestMismatch) as mismatch:
        clients(lambda c: c.download(registered, 1, tmp_path / "v.safetensors"), url=proxy.url)
    assert mismatch.value.expected == hashlib.sha256(digits.checkpoint).hexdigest()
    assert mismatch.value.actual != mismatch.value.expected
    assert list(tmp_path.iterdir()) == [], "neither the file nor a partial one is kept"


def test_a_lost_answer_to_a_deletion_is_retried_with_the_same_key_and_not_duplicated(
    clients: Clients, proxy: FaultProxy, registered: str, digits: Digits, server: Server
) -> None:
    # The request reaches the service and is stored; its 202 never reaches the client.
    proxy.add("POST", r"/deletion-requests$", Drop())
    request = clients(
        lambda c: c.deletions.submit(registered, samples=digits.samples(range(2)), subject="lost-answer"),
        url=proxy.url,
    )

    posts = proxy.requests("POST", r"/deletion-requests$")
    assert len(posts) == 2
    keys = {p.headers["idempotency-key"] for p in posts}
    assert len(keys) == 1 and keys != {""}, "one key, made by the SDK, sent with both tries"
    assert posts[0].body == posts[1].body
    with server.client() as client:
        stored = list(client.deletions.iterate(model=registered))
    assert [r.id for r in stored] == [request.id], "the service acted once"


def test_a_lost_answer_to_a_post_the_server_cannot_replay_is_not_retried(
    clients: Clients, proxy: FaultProxy, server: Server
) -> None:
    # POST /v1/models does not honour Idempotency-Key (yet): a blind retry would answer 409 for
    # the model the first try created, so the SDK raises and lets the caller look.
    name = unique("once")
    proxy.add("POST", r"^/v1/models$", Drop())
    with pytest.raises(TransportFailure):
        clients(lambda c: c.models.create(name, DIGITS_ARCH), url=proxy.url)
    assert len(proxy.requests("POST", r"^/v1/models$")) == 1
    with server.client() as client:
        assert client.models.get(name).name == name


def test_refusals_are_retried_after_retry_after(clients: Clients, proxy: FaultProxy, registered: str) -> None:
    # A gateway's 503 and a rate limit's 429 mean "not done, come back": any request is retried,
    # a POST that creates too, waiting as long as Retry-After says.
    proxy.add("GET", rf"^/v1/models/{registered}$", Answer(503, {"Retry-After": "0"}))
    proxy.add("GET", rf"^/v1/models/{registered}$", Answer(502))
    assert clients(lambda c: c.models.get(registered), url=proxy.url).name == registered
    assert len(proxy.requests("GET", rf"^/v1/models/{registered}$")) == 3

    name = unique("limited")
    proxy.add("POST", r"^/v1/models$", Answer(429, {"Retry-After": "1"}))
    created = clients(lambda c: c.models.create(name, DIGITS_ARCH), url=proxy.url)
    assert created.name == name
    posts = proxy.requests("POST", r"^/v1/models$")
    assert len(posts) == 2 and posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]


def test_retries_end_with_the_last_error(clients: Clients, proxy: FaultProxy, registered: str) -> None:
    proxy.add("GET", rf"^/v1/models/{registered}$", Answer(503, {"Retry-After": "0"}), times=4)
    with pytest.raises(ServiceUnavailable) as unavailable:
        clients(lambda c: c.models.get(registered), url=proxy.url)
    assert unavailable.value.status == 503
    assert len(proxy.requests("GET", rf"^/v1/models/{registered}$")) == 4  # FAST_RETRY.attempts
    # A Retry-After beyond the policy's patience is not waited out.
    proxy.add("GET", rf"^/v1/models/{registered}$", Answer(429, {"Retry-After": "3600"}))
    with pytest.raises(TooManyRequests) as limited:
        clients(lambda c: c.models.get(registered), url=proxy.url)
    assert limited.value.headers["retry-after"] == "3600"


def test_an_unreachable_service_is_a_transport_failure(clients: Clients) -> None:
    with pytest.raises(TransportFailure) as failed:
        clients(lambda c: c.health(), url="http://127.0.0.1:9")  # nothing listens on port 9
    assert "GET" in str(failed.value)
