"""Webhooks: registration and its SSRF checks, signed deliveries to a real local receiver,
retries with backoff, dead letters and their re-sending, restarts, tenancy.

The receiver is a real HTTP server in a thread on 127.0.0.1 (allowed by these tests' settings:
private addresses are refused by default) that records every request and fails on demand.
Deliveries are driven by ``reconcile_once`` / ``deliver_due`` (the pooled test apps run no
background thread), except in the restart test, where the new app's delivery thread sends them.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from unlearn_client.webhook_signature import WebhookSignatureError, sign, verify_webhook

from service.audit.logic import append_event
from service.db import session_scope
from service.jobs.runner import run_job
from service.jobs.states import RunOutcome
from service.reconciler import reconcile_once
from service.settings import Settings
from service.tables import AuditEvent, Tenant, Webhook, WebhookDelivery
from service.webhooks.delivery import backoff, deliver_due
from service.webhooks.sealing import UnsealError, seal, unseal
from service.webhooks.signing import generate_secret, sign_headers
from service.webhooks.ssrf import AllowList, RefusedDestination, check, special_use
from tests.service_fixtures import ApiClient, make_checkpoint, make_dataset, make_settings, start_api

PROBLEM = "application/problem+json"


def assert_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"]
    return body


# --- the receiver's side: the recipe of docs/webhooks.md, standalone -------------------------------


def receiver_verifies(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """How a receiver checks a delivery (docs/webhooks.md), with nothing of ours imported."""
    msg_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False  # too old (or from the future): a replay
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(sig.removeprefix("v1,"), expected)
        for sig in headers["webhook-signature"].split()
        if sig.startswith("v1,")
    )


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers as told."""

    requests: list[Received] = field(default_factory=list)
    plan: list[int] = field(default_factory=list)  # statuses of the next answers, then `status`
    status: int = 204
    delay: float = 0.0
    lock: threading.Condition = field(default_factory=threading.Condition)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    receiver.requests.append(
                        Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                        )
                    )
                    status = receiver.plan.pop(0) if receiver.plan else receiver.status
                    receiver.lock.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)
                answer = f"answer {status} " + "x" * 100_000  # longer than the service reads
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(answer.encode())  # the service stops reading at its cap

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, n: int, timeout: float = 15.0) -> list[Received]:
        with self.lock:
            self.lock.wait_for(lambda: len(self.requests) >= n, timeout=timeout)
            assert len(self.requests) >= n, f"{len(self.requests)} requests arrived, expected {n}"
            return list(self.requests)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.close()


def hook_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_allowed_hosts": ["127.0.0.1"],
        "webhook_backoff_seconds": 0.3,
        "webhook_max_attempts": 3,
        "webhook_timeout_seconds": 2.0,
        "webhook_max_response_bytes": 1024,
        **overrides,
    }
    return make_settings(tmp_path, database_url=database_url, **values)


@pytest.fixture
def api_settings(tmp_path: Path, db_url: str) -> Settings:
    return hook_settings(tmp_path, db_url)


def register(api: Any, url: str, events: list[str], **extra: Any) -> dict[str, Any]:
    r = api.post("/v1/webhooks", json={"url": url, "events": events, **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def deliveries(api: Any, hook_id: str, status: str | None = None) -> list[dict[str, Any]]:
    params = {"status": status} if status else {}
    r = api.get(f"/v1/webhooks/{hook_id}/deliveries", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def drive(api: ApiClient, until: Callable[[], bool], timeout: float = 20.0) -> None:
    """Run delivery passes (as the reconciler does) until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out driving deliveries"
        deliver_due(api.ctx)
        time.sleep(0.05)


def upload_model(api: ApiClient, name: str) -> None:
    api.create_model(name)
    r = api.upload_version(name, make_checkpoint(), eval_set=make_dataset(64, seed=1))
    assert r.status_code == 201, r.text


def submit_deletion(api: ApiClient, model: str, seed: int = 2, status: int = 202) -> dict[str, Any]:
    files = {"forget_set": ("f.safetensors", make_dataset(8, seed=seed), "application/octet-stream")}
    r = api.post(f"/v1/models/{model}/deletion-requests", files=files)
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    return body


def tenant_id(api: ApiClient, name: str | None = None) -> str:
    with session_scope(api.ctx.session_factory) as s:
        return s.scalars(select(Tenant.id).where(Tenant.name == (name or api.settings.admin_tenant))).one()


# --- signing, sealing, destinations: the pieces ---------------------------------------------------


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    # The vector the Standard Webhooks reference libraries test against.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = sign_headers(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", body, timestamp=1614265330)
    verify_webhook(secret, headers, body, now=1614265330 + 10)
    assert receiver_verifies(secret, headers, body, tolerance=10**10)


def test_verification_refuses_tampering_replays_and_other_secrets() -> None:
    secret, body = generate_secret(), b'{"type":"job.succeeded"}'
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    headers = sign_headers(secret, "msg_1", body)
    verify_webhook(secret, headers, body)
    assert receiver_verifies(secret, headers, body)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(secret, headers, body + b" ")
    with pytest.raises(WebhookSignatureError):
        verify_webhook(generate_secret(), headers, body)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(secret, {**headers, "webhook-id": "msg_2"}, body)
    with pytest.raises(WebhookSignatureError):  # an old request replayed
        verify_webhook(secret, headers, body, now=time.time() + 3600)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(secret, {"webhook-id": "msg_1"}, body)
    # Several signatures (a rotation): any one matching is enough.
    rotated = {**headers, "webhook-signature": "v1,AAAA " + headers["webhook-signature"]}
    verify_webhook(secret, rotated, body)
    assert receiver_verifies(secret, rotated, body)


def test_sealed_secrets_open_only_with_the_service_secret_and_their_row() -> None:
    sealed = seal(b"service-secret", "whk_1", "whsec_abc")
    assert "whsec_abc" not in sealed
    assert unseal(b"service-secret", "whk_1", sealed) == "whsec_abc"
    with pytest.raises(UnsealError):
        unseal(b"another-secret", "whk_1", sealed)
    with pytest.raises(UnsealError):  # copied onto another row
        unseal(b"service-secret", "whk_2", sealed)
    assert seal(b"service-secret", "whk_1", "whsec_abc") != sealed  # a fresh nonce each time


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata endpoint
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),  # reserved (Python files 240/4 under private too)
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ],
)
def test_special_addresses_are_refused(address: str, reason: str) -> None:
    assert special_use(ipaddress.ip_address(address)) == reason

    def resolver(_host: str, _port: int) -> list[Any]:
        return [ipaddress.ip_address(address)]

    with pytest.raises(RefusedDestination, match=reason):
        check("https://hooks.example.com/x", AllowList(), resolver)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_accepted(address: str) -> None:
    assert special_use(ipaddress.ip_address(address)) is None
    found = check("https://hooks.example.com/x", AllowList(), lambda _h, _p: [ipaddress.ip_address(address)])
    assert found.host == "hooks.example.com"


def test_one_private_answer_refuses_a_name_and_the_allow_list_lets_through() -> None:
    mixed = [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.5")]

    def resolver(_h: str, _p: int) -> list[Any]:
        return mixed

    with pytest.raises(RefusedDestination, match=r"10\.0\.0\.5"):  # a rebinding trick
        check("http://rebind.example.com/", AllowList(), resolver)
    assert check("http://rebind.example.com/", AllowList.parse(["10.0.0.0/8"]), resolver)
    assert check("http://rebind.example.com/", AllowList.parse(["Rebind.Example.com."]), resolver)
    # Only listed destinations (public ones included) when the operator says so.
    only_listed = AllowList.parse(["10.0.0.0/8"], allow_public=False)
    with pytest.raises(RefusedDestination, match="not an allowed destination"):
        check("http://public.example.com/", only_listed, lambda _h, _p: [ipaddress.ip_address("8.8.8.8")])
    # An IPv4 entry also covers that address written IPv4-mapped.
    mapped = check("http://[::ffff:127.0.0.1]/", AllowList.parse(["127.0.0.1"]))
    assert mapped.addresses == (ipaddress.ip_address("::ffff:127.0.0.1"),)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://example.com/x", "http and https"),
        ("file:///etc/passwd", "http and https"),
        ("gopher://127.0.0.1:6379/_", "http and https"),
        ("http://user:pw@example.com/", "credentials"),
        ("https://example.com/#frag", "fragment"),
        ("http:///path", "no host"),
        ("not a url", "http and https"),
    ],
)
def test_url_forms_refused(url: str, fragment: str) -> None:
    with pytest.raises(RefusedDestination, match=fragment):
        check(url, AllowList(), lambda _h, _p: [ipaddress.ip_address("8.8.8.8")])


def test_backoff_doubles_up_to_its_cap() -> None:
    s = Settings(webhook_backoff_seconds=10, webhook_backoff_max_seconds=100)
    assert [backoff(s, n) for n in (1, 2, 3, 4, 5, 99)] == [10, 20, 40, 80, 100, 100]


# --- the API ----------------------------------------------------------------------------------------


def test_register_get_list_delete_and_the_secret_is_shown_once(api: ApiClient, receiver: Receiver) -> None:
    r = api.post(
        "/v1/webhooks",
        json={
            "url": receiver.url("/hook?token=abc"),
            "events": ["job.succeeded", "deletion.completed", "job.succeeded"],
            "description": "ops pager",
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_")
    assert r.headers["location"] == f"/v1/webhooks/{created['id']}"
    assert created["events"] == ["deletion.completed", "job.succeeded"] and created["model"] is None

    got = api.get(f"/v1/webhooks/{created['id']}").json()
    assert "secret" not in got and got["url"] == receiver.url("/hook?token=abc")
    listed = api.get("/v1/webhooks").json()["items"]
    assert [w["id"] for w in listed] == [created["id"]] and "secret" not in listed[0]
    with session_scope(api.ctx.session_factory) as s:
        row = s.get(Webhook, created["id"])
        assert row is not None and created["secret"] not in row.secret_sealed  # sealed at rest
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "webhook.created")).one()
        assert event.payload["host"] == "127.0.0.1" and "token" not in json.dumps(event.payload)

    r = api.delete(f"/v1/webhooks/{created['id']}")
    assert r.status_code == 204
    assert_problem(api.get(f"/v1/webhooks/{created['id']}"), 404)
    assert_problem(api.delete(f"/v1/webhooks/{created['id']}"), 404)
    assert api.get("/v1/webhooks").json()["items"] == []


def test_registration_validates_events_model_and_query(sqlite_api: ApiClient) -> None:
    # The default settings: no allow-list, so only the form of these URLs matters before DNS.
    api = sqlite_api
    body = {"url": "https://hooks.example.com/x", "events": ["job.exploded"]}
    problem = assert_problem(api.post("/v1/webhooks", json=body), 422)
    assert "job.succeeded" in json.dumps(problem)
    assert_problem(api.post("/v1/webhooks", json={**body, "events": []}), 422)
    assert_problem(api.post("/v1/webhooks", json={**body, "events": ["job.failed"], "extra": 1}), 422)
    assert_problem(api.post("/v1/webhooks", json={**body, "url": "ftp://x/"}), 422)
    assert_problem(api.get("/v1/webhooks", params={"bogus": "1"}), 422)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:9/",
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://0x7f.1/",
    ],
)
def test_private_destinations_are_refused_without_the_allow_list(sqlite_api: ApiClient, url: str) -> None:
    problem = assert_problem(
        sqlite_api.post("/v1/webhooks", json={"url": url, "events": ["job.failed"]}), 422
    )
    assert "UNLEARN_WEBHOOK_ALLOWED_HOSTS" in problem["detail"] or "resolve" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["body", "url"]
    assert sqlite_api.get("/v1/webhooks").json()["items"] == []


def test_scopes(api: ApiClient, receiver: Receiver) -> None:
    reader = api.with_key(api.new_key(["webhooks:read"]))
    writer = api.with_key(api.new_key(["webhooks:write"]))
    other = api.with_key(api.new_key(["models:read"]))
    body = {"url": receiver.url(), "events": ["job.failed"]}
    assert_problem(reader.post("/v1/webhooks", json=body), 403)
    assert_problem(other.get("/v1/webhooks"), 403)
    created = writer.post("/v1/webhooks", json=body)
    assert created.status_code == 201, created.text
    assert_problem(writer.get("/v1/webhooks"), 403)
    assert [w["id"] for w in reader.get("/v1/webhooks").json()["items"]] == [created.json()["id"]]
    assert_problem(api.anonymous().get("/v1/webhooks"), 401)


def test_another_tenants_webhook_is_404(api: ApiClient, receiver: Receiver) -> None:
    hook = register(api, receiver.url(), ["version.created"])
    stranger = api.with_key(api.new_key(["admin"], tenant="tenant-b"))
    assert stranger.get("/v1/webhooks").json()["items"] == []
    for r in (
        stranger.get(f"/v1/webhooks/{hook['id']}"),
        stranger.delete(f"/v1/webhooks/{hook['id']}"),
        stranger.get(f"/v1/webhooks/{hook['id']}/deliveries"),
        stranger.post(f"/v1/webhooks/{hook['id']}/deliveries/msg_x/retry"),
    ):
        assert_problem(r, 404)
    # Their events are not ours to hear either.
    upload_model(stranger, "theirs")
    reconcile_once(api.ctx)
    assert deliveries(api, hook["id"]) == [] and receiver.requests == []
    assert api.get(f"/v1/webhooks/{hook['id']}").status_code == 200


def test_deliveries_arrive_signed_and_are_listed(api: ApiClient, receiver: Receiver) -> None:
    hook = register(api, receiver.url("/in?x=1"), ["version.created", "deletion.requested"])
    upload_model(api, "m")
    request = submit_deletion(api, "m")
    # Written in the transactions of the upload and the request, waiting to be sent.
    assert {d["status"] for d in deliveries(api, hook["id"])} == {"pending"}

    stats = reconcile_once(api.ctx)
    assert stats["webhooks_delivered"] == 2
    got = receiver.wait_for(2)
    assert [g.json()["type"] for g in got] == ["version.created", "deletion.requested"]
    for g in got:
        assert g.path == "/in?x=1"
        assert g.headers["content-type"] == "application/json"
        assert g.headers["webhook-id"].startswith("msg_")
        assert abs(int(g.headers["webhook-timestamp"]) - time.time()) < 60
        assert g.headers["host"] == f"127.0.0.1:{receiver.port}"
        assert receiver_verifies(hook["secret"], g.headers, g.body)
        assert not receiver_verifies(generate_secret(), g.headers, g.body)
    version, requested = (g.json() for g in got)
    assert version["data"] == {
        "model": "m",
        "version": 1,
        "sha256": version["data"]["sha256"],
        "parent_version": None,
    }
    assert requested["data"]["deletion_request_id"] == request["id"]
    assert requested["data"]["job_id"] == request["job_id"] and requested["data"]["n_samples"] == 8
    assert "sample_digests" not in json.dumps(requested)  # nothing private leaves the service
    assert requested["timestamp"].endswith("Z")

    listed = deliveries(api, hook["id"], "delivered")
    assert {d["id"] for d in listed} == {g.headers["webhook-id"] for g in got}
    for d in listed:
        assert d["attempts"] == 1 and d["last_status_code"] == 204 and d["last_error"] is None
        assert d["delivered_at"] and d["next_attempt_at"] is None
    assert deliveries(api, hook["id"], "pending") == []
    one = api.get(f"/v1/webhooks/{hook['id']}/deliveries/{listed[0]['id']}").json()
    assert one["payload"] == next(g.json() for g in got if g.headers["webhook-id"] == one["id"])
    assert_problem(api.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "lost"}), 422)
    # Nothing is sent twice.
    assert reconcile_once(api.ctx)["webhooks_delivered"] == 0
    assert len(receiver.requests) == 2


def test_failures_retry_with_backoff_then_dead_then_retry_by_hand(api: ApiClient, receiver: Receiver) -> None:
    receiver.status = 500
    hook = register(api, receiver.url(), ["version.created"])
    upload_model(api, "m")
    (pending,) = deliveries(api, hook["id"])

    deliver_due(api.ctx)
    receiver.wait_for(1)
    (failed,) = deliveries(api, hook["id"], "failed")
    assert failed["attempts"] == 1 and failed["last_status_code"] == 500
    assert failed["last_error"].startswith("HTTP 500: answer 500")
    assert len(failed["last_error"]) < 400  # an excerpt of the answer, not all of it
    assert failed["next_attempt_at"] > failed["last_attempt_at"]
    deliver_due(api.ctx)  # not due yet: nothing is sent
    assert len(receiver.requests) == 1

    drive(api, lambda: bool(deliveries(api, hook["id"], "dead")))
    (dead,) = deliveries(api, hook["id"], "dead")
    assert dead["id"] == pending["id"] and dead["attempts"] == 3 and dead["next_attempt_at"] is None
    times = [g.at for g in receiver.requests]
    assert len(times) == 3
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert first_gap >= 0.3 and second_gap >= 0.6  # 0.3 s, then doubled
    assert {g.headers["webhook-id"] for g in receiver.requests} == {pending["id"]}  # one message id
    time.sleep(0.7)
    deliver_due(api.ctx)
    assert len(receiver.requests) == 3  # dead: no more attempts on its own

    assert_problem(api.post(f"/v1/webhooks/{hook['id']}/deliveries/msg_nope/retry"), 404)
    receiver.status = 200
    r = api.post(f"/v1/webhooks/{hook['id']}/deliveries/{dead['id']}/retry")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "pending" and r.json()["attempts"] == 0
    deliver_due(api.ctx)
    got = receiver.wait_for(4)
    assert got[-1].headers["webhook-id"] == dead["id"]
    assert receiver_verifies(hook["secret"], got[-1].headers, got[-1].body)
    (delivered,) = deliveries(api, hook["id"], "delivered")
    assert delivered["attempts"] == 1 and delivered["last_status_code"] == 200
    problem = assert_problem(api.post(f"/v1/webhooks/{hook['id']}/deliveries/{dead['id']}/retry"), 409)
    assert "delivered" in problem["detail"]
    with session_scope(api.ctx.session_factory) as s:
        retried = s.scalars(select(AuditEvent).where(AuditEvent.action == "webhook.delivery_retried")).one()
        assert retried.object_id == dead["id"] and retried.payload["previous_attempts"] == 3


def test_redirects_are_not_followed_and_slow_receivers_time_out(
    tmp_path: Path, shared_sqlite_url: str, receiver: Receiver, make_api: Callable[..., ApiClient]
) -> None:
    api = make_api(
        webhook_allowed_hosts=["127.0.0.1"], webhook_timeout_seconds=0.5, webhook_backoff_seconds=60.0
    )
    hook = register(api, receiver.url(), ["version.created"])
    receiver.plan = [302]
    upload_model(api, "m")
    deliver_due(api.ctx)
    (failed,) = deliveries(api, hook["id"], "failed")
    assert failed["last_status_code"] == 302 and "redirects are not followed" in failed["last_error"]
    assert [g.path for g in receiver.requests] == ["/hook"]  # /elsewhere was never asked for

    receiver.delay = 1.5
    upload = api.upload_version("m", make_checkpoint(seed=1))
    assert upload.status_code == 201, upload.text
    started = time.monotonic()
    deliver_due(api.ctx)
    assert time.monotonic() - started < 1.4
    slow = [d for d in deliveries(api, hook["id"], "failed") if d["payload"]["data"]["version"] == 2]
    assert slow[0]["last_error"].startswith("timed out") and slow[0]["last_status_code"] is None


def test_the_destination_is_checked_again_at_delivery(api: ApiClient, receiver: Receiver) -> None:
    hook = register(api, receiver.url(), ["version.created"])
    upload_model(api, "m")
    # The operator removed the allow-list entry since: the delivery is refused, not sent.
    strict = dataclasses.replace(
        api.ctx, settings=api.settings.model_copy(update={"webhook_allowed_hosts": []})
    )
    deliver_due(strict)
    (failed,) = deliveries(api, hook["id"], "failed")
    assert failed["last_error"].startswith("refused destination") and "loopback" in failed["last_error"]
    assert receiver.requests == []


def test_model_webhooks_hear_their_model_and_tenant_webhooks_hear_erasures(
    api: ApiClient, receiver: Receiver
) -> None:
    upload_model(api, "a")
    api.create_model("b")
    only_b = register(api, receiver.url("/b"), ["version.created", "erasure.completed"], model="b")
    register(api, receiver.url("/all"), ["version.created", "erasure.requested", "erasure.completed"])
    assert only_b["model"] == "b" and api.get(f"/v1/webhooks/{only_b['id']}").json()["model"] == "b"
    assert_problem(
        api.post("/v1/webhooks", json={"url": receiver.url(), "events": ["job.failed"], "model": "zz"}), 404
    )

    assert api.upload_version("a", make_checkpoint(seed=1)).status_code == 201
    assert api.upload_version("b", make_checkpoint(seed=2)).status_code == 201
    # An erasure that completed at once (no model held the samples): tenant-wide, no model.
    with session_scope(api.ctx.session_factory) as s:
        append_event(
            s,
            actor="test",
            action="erasure.requested",
            tenant_id=tenant_id(api),
            object_id="era_1",
            payload={
                "dataset": "train",
                "n_samples": 3,
                "deletion_requests": [],
                "result_dataset_version": 2,
            },
        )
    reconcile_once(api.ctx)
    got = receiver.wait_for(5)
    by_path = sorted((g.path, g.json()["type"], g.json()["data"].get("model")) for g in got)
    assert by_path == [
        ("/all", "erasure.completed", None),
        ("/all", "erasure.requested", None),
        ("/all", "version.created", "a"),
        ("/all", "version.created", "b"),
        ("/b", "version.created", "b"),
    ]


def test_a_deletion_job_announces_its_whole_life(api: ApiClient, receiver: Receiver) -> None:
    events = ["job.started", "job.succeeded", "job.cancelled", "deletion.completed", "deletion.cancelled"]
    hook = register(api, receiver.url(), [*events, "version.created"])
    upload_model(api, "m")
    request = submit_deletion(api, "m")
    assert run_job(api.ctx, request["job_id"], "w1") == RunOutcome.SUCCEEDED
    # The same samples again: the model no longer holds them, the request completes at once.
    again = submit_deletion(api, "m", status=200)
    cancelled = submit_deletion(api, "m", seed=3)
    assert api.post(f"/v1/jobs/{cancelled['job_id']}/cancel").status_code == 202
    reconcile_once(api.ctx)
    got = [g.json() for g in receiver.wait_for(8)]
    # One receiver's deliveries go out one after the other, in the order their events happened.
    assert [g["type"] for g in got] == [
        "version.created",
        "job.started",
        "job.succeeded",
        "version.created",
        "deletion.completed",
        "deletion.completed",
        "job.cancelled",
        "deletion.cancelled",
    ]
    done = {g["type"]: g["data"] for g in got}
    assert done["job.succeeded"]["job_id"] == request["job_id"]
    assert done["job.succeeded"]["deletion_requests"] == [request["id"]]
    completed = [g["data"] for g in got if g["type"] == "deletion.completed"]
    assert completed == [
        {
            "deletion_request_id": request["id"],
            "model": "m",
            "job_id": request["job_id"],
            "result_version": 2,
        },
        {
            "deletion_request_id": again["id"],
            "model": "m",
            "erasure_id": None,
            "result_version": 2,
            "outcome": "already_erased",
        },
    ]
    assert done["job.cancelled"]["job_id"] == cancelled["job_id"]
    assert done["deletion.cancelled"]["deletion_request_id"] == cancelled["id"]
    assert [g["data"]["version"] for g in got if g["type"] == "version.created"] == [1, 2]
    assert all(receiver_verifies(hook["secret"], r.headers, r.body) for r in receiver.requests)


def test_deleting_a_webhook_drops_its_pending_deliveries(api: ApiClient, receiver: Receiver) -> None:
    hook = register(api, receiver.url(), ["version.created"])
    upload_model(api, "m")
    assert len(deliveries(api, hook["id"])) == 1
    assert api.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
    with session_scope(api.ctx.session_factory) as s:
        assert s.scalars(select(WebhookDelivery)).all() == []
    reconcile_once(api.ctx)
    assert receiver.requests == []


def test_a_restarted_service_delivers_what_was_pending(
    tmp_path: Path, fresh_db_url: str, receiver: Receiver
) -> None:
    first = start_api(hook_settings(tmp_path, fresh_db_url))
    try:
        hook = register(first, receiver.url(), ["version.created"])
        upload_model(first, "m")
        assert [d["status"] for d in deliveries(first, hook["id"])] == ["pending"]
    finally:
        first.__exit__(None, None, None)  # gone before it sent anything
    assert receiver.requests == []

    # A new process on the same database (and service secret): its delivery thread sends it.
    second = start_api(
        hook_settings(tmp_path, fresh_db_url, run_reconciler_in_api=True, webhook_poll_seconds=0.2)
    )
    try:
        assert any(t.name == "webhook-delivery" for t in threading.enumerate())
        (got,) = receiver.wait_for(1)
        assert receiver_verifies(hook["secret"], got.headers, got.body)
        deadline = time.monotonic() + 10
        while deliveries(second, hook["id"])[0]["status"] != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # Events of the new process reach the receiver without waiting for a poll.
        assert second.upload_version("m", make_checkpoint(seed=1)).status_code == 201
        receiver.wait_for(2, timeout=5)
    finally:
        second.__exit__(None, None, None)
    assert not any(t.name == "webhook-delivery" for t in threading.enumerate())


def _dataset_npz(n: int = 120, subjects: int = 6) -> bytes:
    import io

    import numpy as np

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(
        buf,
        inputs=rng.standard_normal((n, 64)).astype("float32"),
        labels=rng.integers(0, 10, n).astype("int64"),
        sample_ids=np.array([f"s{i}" for i in range(n)]),
        subject_ids=np.array([f"user-{i % subjects}" for i in range(n)]),
    )
    return buf.getvalue()


def _models_on_a_dataset(api: ApiClient, names: tuple[str, ...]) -> None:
    assert api.post("/v1/datasets", json={"name": "train", "task": "classification"}).status_code == 201
    r = api.post("/v1/datasets/train/versions", files={"data": ("t.npz", _dataset_npz())})
    assert r.status_code == 201, r.text
    for i, name in enumerate(names):
        api.create_model(name)
        r = api.post(
            f"/v1/models/{name}/versions",
            files={"checkpoint": ("m", make_checkpoint(seed=i)), "eval_set": ("e", make_dataset(64, seed=9))},
            data={"dataset": "train", "dataset_version": "1"},
        )
        assert r.status_code == 201, r.text


def _erase(api: ApiClient, subject: str) -> dict[str, Any]:
    r = api.post("/v1/datasets/train/erasures", json={"subject": subject})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def test_an_erasure_fails_once_when_its_first_model_request_ends_badly(
    make_api: Callable[..., ApiClient], receiver: Receiver
) -> None:
    api = make_api(webhook_allowed_hosts=["127.0.0.1"])
    _models_on_a_dataset(api, ("a", "b"))
    hook = register(api, receiver.url(), ["erasure.requested", "erasure.completed", "erasure.failed"])
    erasure = _erase(api, "user-1")
    jobs = [d["job_id"] for d in erasure["deletion_requests"]]
    assert len(jobs) == 2
    for job_id in jobs:  # both models' requests cancelled: the erasure failed, announced once
        assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    reconcile_once(api.ctx)
    got = [g.json() for g in receiver.wait_for(2)]
    assert [g["type"] for g in got] == ["erasure.requested", "erasure.failed"]
    assert got[0]["data"]["erasure_id"] == erasure["id"] and got[0]["data"]["dataset"] == "train"
    assert got[1]["data"] == {
        "erasure_id": erasure["id"],
        "dataset": "train",
        "deletion_requests": sorted(d["id"] for d in erasure["deletion_requests"]),
    }
    assert api.get(f"/v1/erasures/{erasure['id']}").json()["status"] == "failed"
    assert [d["event"] for d in deliveries(api, hook["id"], "delivered")] == [
        "erasure.failed",
        "erasure.requested",
    ]


def test_an_erasure_completes_when_its_last_model_request_does(
    make_api: Callable[..., ApiClient], receiver: Receiver
) -> None:
    api = make_api(webhook_allowed_hosts=["127.0.0.1"])
    _models_on_a_dataset(api, ("a", "b"))
    register(api, receiver.url(), ["erasure.completed", "deletion.completed"])
    erasure = _erase(api, "user-2")
    first, second = (d["job_id"] for d in erasure["deletion_requests"])
    assert run_job(api.ctx, first, "w1") == RunOutcome.SUCCEEDED
    reconcile_once(api.ctx)
    assert [g.json()["type"] for g in receiver.wait_for(1)] == ["deletion.completed"]
    assert run_job(api.ctx, second, "w1") == RunOutcome.SUCCEEDED
    reconcile_once(api.ctx)
    got = [g.json() for g in receiver.wait_for(3)]
    assert [g["type"] for g in got] == ["deletion.completed", "deletion.completed", "erasure.completed"]
    assert got[-1]["data"]["erasure_id"] == erasure["id"]
    assert api.get(f"/v1/erasures/{erasure['id']}").json()["status"] == "completed"
    assert api.get("/v1/audit/verify").json()["ok"] is True


def test_allowed_hosts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARN_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1, 10.0.0.0/8 ,hooks.internal")
    assert Settings().webhook_allowed_hosts == ["127.0.0.1", "10.0.0.0/8", "hooks.internal"]
    monkeypatch.setenv("UNLEARN_WEBHOOK_ALLOWED_HOSTS", '["::1", "fd00::/8"]')
    allow = AllowList.from_settings(Settings())
    assert ipaddress.ip_network("fd00::/8") in allow.networks


def test_a_name_with_an_unreachable_address_is_sent_to_its_next_one(
    api: ApiClient, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.webhooks import ssrf

    hook = register(api, receiver.url(), ["version.created"])
    upload_model(api, "m")
    # The name answers two addresses (both checked): nothing listens on the first.
    two = [ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1")]
    monkeypatch.setattr(ssrf, "resolve", lambda _host, _port: two)
    loopback = dataclasses.replace(
        api.ctx, settings=api.settings.model_copy(update={"webhook_allowed_hosts": ["127.0.0.0/8"]})
    )
    deliver_due(loopback)
    (delivered,) = deliveries(api, hook["id"], "delivered")
    assert delivered["attempts"] == 1 and len(receiver.requests) == 1
    assert receiver_verifies(hook["secret"], receiver.requests[0].headers, receiver.requests[0].body)
    # With none answering, the attempt fails and says why.
    monkeypatch.setattr(ssrf, "resolve", lambda _host, _port: two[:1])
    assert api.upload_version("m", make_checkpoint(seed=1)).status_code == 201
    deliver_due(loopback)
    (failed,) = deliveries(api, hook["id"], "failed")
    assert failed["last_error"].startswith("ConnectError (127.0.0.2)") and failed["last_status_code"] is None


def test_a_tenant_has_at_most_so_many_webhooks(
    make_api: Callable[..., ApiClient], receiver: Receiver
) -> None:
    api = make_api(webhook_allowed_hosts=["127.0.0.1"], webhook_max_per_tenant=1)
    register(api, receiver.url(), ["job.failed"])
    problem = assert_problem(
        api.post("/v1/webhooks", json={"url": receiver.url(), "events": ["job.failed"]}), 409
    )
    assert problem["limit"] == 1
