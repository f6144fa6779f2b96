"""Webhooks and their deliveries, training jobs and a model's settings (eventual exactness),
through the SDK against the real service and worker."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from unlearn_client import CreatedWebhook, Delivery, Exactness, Job, Model, NotFound, Page, Webhook
from unlearn_client.webhook_signature import WebhookSignatureError, sign, verify_webhook

import tests.sdk.test_cli as cli_tests
import tests.sdk.test_datasets as dataset_tests
from tests.sdk.conftest import DIGITS_ARCH, Clients, Digits, Server, unique

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class Receiver:
    """A webhook destination on loopback that answers ``status`` and keeps what it was sent."""

    url: str
    status: int = 500
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(state.status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_webhooks_and_their_deliveries(
    clients: Clients, registered: str, receiver: Receiver, digits: Digits
) -> None:
    def steps(c: Any) -> Any:
        hook = yield c.webhooks.create(receiver.url, ["version.created"], model=registered, description="sdk")
        got = yield c.webhooks.get(hook.id)
        page = yield c.webhooks.list(limit=100)
        yield c.versions.upload(registered, digits.checkpoint)  # version.created, to a failing receiver
        dead: list[Delivery] = []
        deadline = time.monotonic() + 60
        while not dead:
            assert time.monotonic() < deadline, "the delivery did not die"
            time.sleep(0.2)
            dead = (yield c.webhooks.list_deliveries(hook.id, status="dead")).items
        receiver.status = 204
        retried = yield c.webhooks.retry_delivery(hook.id, dead[0].id)
        delivered = retried
        while delivered.status != "delivered":
            assert time.monotonic() < deadline + 60, f"not delivered: {delivered}"
            time.sleep(0.2)
            delivered = yield c.webhooks.get_delivery(hook.id, dead[0].id)
        everything = yield c.webhooks.list_deliveries(hook.id)
        yield c.webhooks.delete(hook.id)
        return hook, got, page, dead[0], retried, delivered, everything

    hook, got, page, dead, retried, delivered, everything = clients(steps)
    assert isinstance(hook, CreatedWebhook) and hook.secret.startswith("whsec_")
    assert (
        isinstance(got, Webhook) and not isinstance(got, CreatedWebhook) and "secret" not in got.model_dump()
    )
    assert got.model == registered and got.events == ["version.created"] and got.description == "sdk"
    assert isinstance(page, Page) and hook.id in [w.id for w in page.items]
    assert dead.status == "dead" and dead.attempts == 2 and dead.last_status_code == 500
    assert dead.event == "version.created" and dead.payload["data"]["model"] == registered
    assert retried.status == "pending" and delivered.status == "delivered" and delivered.delivered_at
    assert [d.id for d in everything.items] == [dead.id]

    # What the receiver got: three attempts of one delivery, signed with the webhook's secret.
    assert len(receiver.received) == 3
    headers, body = receiver.received[-1]
    assert headers["webhook-id"] == dead.id and json.loads(body)["type"] == "version.created"
    assert verify_webhook(hook.secret, headers, body) == dead.id
    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        verify_webhook(hook.secret, headers, body + b" ")
    with pytest.raises(WebhookSignatureError, match="too far"):
        verify_webhook(hook.secret, headers, body, now=time.time() + 3600)
    # The service signs with the SDK's own function.
    from service.webhooks import signing

    signed = signing.sign_headers(hook.secret, "msg", b"{}", timestamp=1)
    assert sign(hook.secret, "msg", 1, b"{}") == signed["webhook-signature"]

    with pytest.raises(NotFound):
        clients(lambda c: c.webhooks.get(hook.id))


def test_model_settings(clients: Clients, registered: str) -> None:
    def steps(c: Any) -> Any:
        on = yield c.models.update(registered, exactness={"after_erasures": 3, "after_hours": 12})
        typed = yield c.models.update(registered, exactness=Exactness(after_erasures=5))
        described = yield c.models.update(registered, description="now with a description")
        off = yield c.models.update(registered, exactness={})
        return on, typed, described, off

    on, typed, described, off = clients(steps)
    assert isinstance(on, Model) and on.exactness == Exactness(after_erasures=3, after_hours=12.0)
    assert typed.exactness == Exactness(after_erasures=5)
    assert described.description == "now with a description" and described.exactness == typed.exactness
    assert off.exactness is None and off.description == "now with a description"


def test_a_training_job(server: Server, digits: Digits) -> None:
    dataset, model = unique("train"), unique("trained")
    with server.client() as client:
        client.datasets.create(dataset, "classification")
        client.datasets.upload(dataset, dataset_tests._training_set(digits))
        client.models.create(model, DIGITS_ARCH)
        client.versions.upload(model, digits.checkpoint, digits.eval_set, dataset=dataset)
        job = client.jobs.train(model, dataset, dataset_version=1, recipe={"epochs": 1, "seed": 3})
        assert isinstance(job, Job) and job.kind == "train" and job.reason == "requested"
        assert job.status in ("queued", "running")
        done = client.jobs.wait(job, timeout=240)
        version = client.versions.get(model, "latest")
    assert done.status == "succeeded" and done.kind == "train" and done.result_version == 2
    assert version.version == 2 and version.created_by_job == job.id
    assert version.training_data is not None and version.training_data.dataset == dataset
    assert version.recipe is not None and version.recipe["epochs"] == 1


def test_models_update_webhooks_and_train_on_the_command_line(
    server: Server, registered: str, receiver: Receiver, tmp_path: Path
) -> None:
    cli = cli_tests.Cli(server, tmp_path / "config")
    cli.login()
    model = cli.json("models", "update", registered, "--after-erasures", "4", "--description", "from the cli")
    assert model["exactness"]["after_erasures"] == 4 and model["description"] == "from the cli"
    assert cli.json("models", "update", registered, "--no-exactness")["exactness"] is None
    done = cli.run("--json", "models", "update", registered, check=2)  # nothing to change
    assert "nothing to change" in done.stderr

    hook = cli.json(
        "webhooks", "create", receiver.url, "-e", "job.succeeded", "-e", "job.failed", "--model", registered
    )
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["job.failed", "job.succeeded"]
    assert hook["id"] in [w["id"] for w in cli.json("webhooks", "list")]
    assert "secret" not in cli.json("webhooks", "get", hook["id"])
    assert cli.json("webhooks", "deliveries", hook["id"]) == []
    assert cli.json("webhooks", "delete", hook["id"]) == {"id": hook["id"], "deleted": True}
    assert cli.json("webhooks", "get", hook["id"], check=1)["status"] == 404

    # A training job on a dataset that does not exist: the API's 404, as problem+json.
    problem = cli.json("train", registered, unique("no-such-dataset"), check=1)
    assert problem["status"] == 404
