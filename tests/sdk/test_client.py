"""Every operation of the SDK against the real service, with the sync and the async client."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from unlearn_client import (
    ApiKey,
    AuditEvent,
    ChainVerification,
    Client,
    Conflict,
    CreatedApiKey,
    DeletionRequest,
    Forbidden,
    Model,
    NotFound,
    Page,
    ProblemError,
    Unauthorized,
    Unprocessable,
    Version,
)

from tests.sdk.conftest import DIGITS_ARCH, Clients, Digits, Server, unique


async def _collect(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


def listed(clients: Clients, make_iterator: Any) -> list[Any]:
    """Every item of an ``iterate()`` operation, with either client."""
    if clients.kind == "sync":
        return clients(lambda c: list(make_iterator(c)))
    return clients(lambda c: _collect(make_iterator(c)))


def test_health_and_readiness(clients: Clients) -> None:
    assert clients(lambda c: c.health()).status == "ok"
    ready = clients(lambda c: c.ready())
    assert ready.status == "ok" and set(ready.checks) >= {"database", "broker"}
    assert "# TYPE" in clients(lambda c: c.metrics())


def test_models_and_versions(clients: Clients, digits: Digits, tmp_path: Path) -> None:
    name = unique("m")
    created = clients(lambda c: c.models.create(name, DIGITS_ARCH, description="sdk", tags=["a", "b"]))
    assert isinstance(created, Model) and created.name == name and created.latest_version is None
    assert created.tags == ["a", "b"] and created.architecture["name"] == "mlp"

    # Upload from a path (streamed from disk) and from bytes.
    path = tmp_path / "model.safetensors"
    path.write_bytes(digits.checkpoint)
    v1 = clients(lambda c: c.versions.upload(name, path, digits.eval_set, description="first"))
    assert isinstance(v1, Version) and v1.version == 1
    assert v1.sha256 == hashlib.sha256(digits.checkpoint).hexdigest()
    assert v1.eval_set is not None and v1.eval_set.n_samples == len(digits.y_eval)
    v2 = clients(lambda c: c.versions.upload(name, digits.checkpoint))
    assert v2.version == 2 and v2.eval_set is None

    assert clients(lambda c: c.models.get(name)).latest_version == 2
    assert clients(lambda c: c.versions.get(name, 1)) == v1
    assert clients(lambda c: c.versions.get(name)).version == 2  # "latest"
    page = clients(lambda c: c.versions.list(name, limit=1))
    assert isinstance(page, Page) and [v.version for v in page.items] == [1] and page.next_cursor
    assert [v.version for v in listed(clients, lambda c: c.versions.iterate(name))] == [1, 2]
    assert name in [m.name for m in listed(clients, lambda c: c.models.iterate())]

    info = clients(lambda c: c.versions.checkpoint_info(name, "latest"))
    assert info.sha256 == v2.sha256 and info.size_bytes == v2.size_bytes
    assert info.content_location == f"/v1/models/{name}/versions/2/checkpoint"
    assert info.filename == f"{name}-v2.safetensors"


def test_download_checks_the_digest_into_a_folder_or_a_file(
    clients: Clients, registered: str, digits: Digits, tmp_path: Path
) -> None:
    into_folder = clients(lambda c: c.download(registered, "latest", tmp_path))
    assert into_folder.path == tmp_path / f"{registered}-v1.safetensors"
    assert into_folder.version == 1 and into_folder.resumed == 0
    assert into_folder.path.read_bytes() == digits.checkpoint
    assert into_folder.sha256 == hashlib.sha256(digits.checkpoint).hexdigest()
    as_file = clients(lambda c: c.versions.download(registered, 1, tmp_path / "sub" / "v1.bin"))
    assert as_file.path.read_bytes() == digits.checkpoint
    assert not list(tmp_path.rglob("*.part")), "no partial file is left behind"


def test_deletion_requests_jobs_and_audit_reads(clients: Clients, registered: str, digits: Digits) -> None:
    # Submitted with the workers' queue behind it; these reads do not wait for the job.
    file_request = clients(
        lambda c: c.deletions.submit(registered, digits.forget_file(range(3)), subject="user-1")
    )
    inline = clients(lambda c: c.deletions.submit(registered, samples=digits.samples(range(3, 5))))
    assert isinstance(file_request, DeletionRequest) and file_request.n_samples == 3
    assert inline.n_samples == 2 and inline.model == registered and inline.job_id

    got = clients(lambda c: c.deletions.get(inline.id))
    assert got.id == inline.id and got.forget_set_sha256 == inline.forget_set_sha256
    digests = clients(lambda c: c.deletions.sample_digests(file_request.id))
    assert digests.request_id == file_request.id and len(digests.sample_digests) == 3
    mine = listed(clients, lambda c: c.deletions.iterate(model=registered))
    assert {r.id for r in mine} == {file_request.id, inline.id}
    by_subject = clients(lambda c: c.deletions.list(model=registered, subject="user-1"))
    assert [r.id for r in by_subject.items] == [file_request.id]

    job = clients(lambda c: c.jobs.get(inline.job_id))
    assert job.model == registered and inline.id in job.deletion_requests
    assert job.id in {j.id for j in listed(clients, lambda c: c.jobs.iterate(model=registered))}

    items = [
        {"samples": digits.samples(range(5, 7)), "subject": "user-2"},
        {"samples": digits.samples(range(7, 8))},
    ]
    bulk = clients(lambda c: c.deletions.submit_bulk(registered, items))
    assert [r.n_samples for r in bulk] == [2, 1]

    events = clients(lambda c: c.audit.list(model=registered, limit=2))
    assert all(isinstance(e, AuditEvent) for e in events.items) and len(events.items) == 2
    every = listed(clients, lambda c: c.audit.iterate(model=registered))
    assert [e.seq for e in every] == sorted(e.seq for e in every) and len(every) > 2
    assert {"model.created", "version.created", "deletion.requested"} <= {e.action for e in every}
    verified = clients(lambda c: c.audit.verify())
    assert isinstance(verified, ChainVerification) and verified.ok


def test_keys_create_list_revoke(clients: Clients, server: Server) -> None:
    created = clients(lambda c: c.keys.create(unique("reader"), ["models:read"]))
    assert isinstance(created, CreatedApiKey) and created.key and created.scopes == ["models:read"]
    assert created.id in {k.id for k in listed(clients, lambda c: c.keys.iterate())}
    with Client(server.url, created.key) as reader:
        reader.models.list(limit=1)
        with pytest.raises(Forbidden) as denied:
            reader.keys.list()
    assert denied.value.status == 403 and "admin" in (denied.value.detail or "")
    revoked = clients(lambda c: c.keys.revoke(created.id))
    assert isinstance(revoked, ApiKey) and revoked.revoked_at is not None
    with Client(server.url, created.key) as reader, pytest.raises(Unauthorized):
        reader.models.list()


def test_errors_are_typed_problem_details(clients: Clients, registered: str, server: Server) -> None:
    with pytest.raises(NotFound) as missing:
        clients(lambda c: c.models.get("no-such-model"))
    problem = missing.value
    assert (problem.status, problem.title) == (404, "Not Found")
    assert "no-such-model" in (problem.detail or "") and problem.request_id
    assert problem.problem == {"type": "about:blank", "title": "Not Found", "status": 404,
                               "detail": problem.detail}  # fmt: skip

    with pytest.raises(Conflict) as exists:
        clients(lambda c: c.models.create(registered, DIGITS_ARCH))
    assert exists.value.status == 409

    with pytest.raises(Unprocessable) as invalid:
        clients(lambda c: c.models.create("bad name!", DIGITS_ARCH))
    # Extension members of the problem document are kept.
    assert invalid.value.extra["errors"][0]["loc"][-1] == "name"
    assert isinstance(invalid.value, ProblemError)

    with pytest.raises(ValueError, match="pass one of"):
        clients(lambda c: c.deletions.submit(registered))
    with pytest.raises(Unauthorized):
        clients(lambda c: c.models.list(), api_key="ulk_nope")
