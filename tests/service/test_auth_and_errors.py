"""Authentication, scopes, key management, and the problem+json shape of every error."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.auth import generate_key, hash_key
from service.tables import ApiKey
from tests.service.test_registry import assert_problem
from tests.service_fixtures import ADMIN_KEY, ApiClient, make_settings, start_api


def test_missing_and_invalid_keys_are_401(sqlite_api: ApiClient) -> None:
    anon = sqlite_api.anonymous()
    r = anon.get("/v1/models")
    body = assert_problem(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    assert "missing" in body["detail"]
    for bad in (generate_key(), "ulk_zzzzzzzz_short", ADMIN_KEY[:-1] + "B", ""):
        r = anon.get("/v1/models", headers={"Authorization": f"Bearer {bad}"})
        assert_problem(r, 401)
    r = anon.get("/v1/models", headers={"Authorization": f"Basic {ADMIN_KEY}"})
    assert_problem(r, 401)


def test_keys_are_stored_hashed_and_shown_once(sqlite_api: ApiClient) -> None:
    created = sqlite_api.post("/v1/keys", json={"name": "ci", "scopes": ["models:read"]})
    assert created.status_code == 201
    body = created.json()
    raw = body["key"]
    assert raw.startswith("ulk_") and len(raw) == len("ulk_") + 8 + 1 + 43
    assert body["prefix"] == raw.split("_")[1]
    with sqlite_api.ctx.session_factory() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.id == body["id"])).one()
        assert row.key_hash == hash_key(raw) and raw not in (row.key_hash, row.prefix)
    listed = sqlite_api.get("/v1/keys").json()["items"]
    assert {k["id"] for k in listed} >= {body["id"]}
    assert all("key" not in k for k in listed)


def test_scopes_are_enforced(sqlite_api: ApiClient, mlp_checkpoint: bytes) -> None:
    sqlite_api.create_model("m")
    reader = sqlite_api.with_key(sqlite_api.new_key(["models:read"]))
    assert reader.get("/v1/models/m").status_code == 200
    body = assert_problem(reader.post("/v1/models", json={"name": "n"}), 403)
    assert "models:write" in body["detail"]
    assert_problem(reader.get("/v1/audit"), 403)
    assert_problem(reader.get("/v1/keys"), 403)
    upload = reader.post("/v1/models/m/versions", files={"checkpoint": ("c", mlp_checkpoint)})
    assert_problem(upload, 403)
    assert sqlite_api.ctx.storage.keys() == []


def test_unknown_scope_is_422(sqlite_api: ApiClient) -> None:
    assert_problem(sqlite_api.post("/v1/keys", json={"name": "x", "scopes": ["root"]}), 422)


def test_revoked_key_is_401_and_audited(sqlite_api: ApiClient) -> None:
    created = sqlite_api.post("/v1/keys", json={"name": "temp", "scopes": ["models:read"]}).json()
    client = sqlite_api.with_key(created["key"])
    assert client.get("/v1/models").status_code == 200
    r = sqlite_api.delete(f"/v1/keys/{created['id']}")
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert_problem(client.get("/v1/models"), 401)
    actions = [
        e["action"] for e in sqlite_api.get("/v1/audit", params={"action": "key.revoked"}).json()["items"]
    ]
    assert actions == ["key.revoked"]
    assert_problem(sqlite_api.delete("/v1/keys/key_doesnotexist"), 404)


def test_tenant_admins_cannot_reach_other_tenants(sqlite_api: ApiClient) -> None:
    tenant_admin = sqlite_api.with_key(sqlite_api.new_key(["admin"], tenant="acme"))
    # An admin of a customer tenant may not mint keys elsewhere, nor see or revoke the operator's.
    assert_problem(
        tenant_admin.post("/v1/keys", json={"name": "x", "scopes": ["admin"], "tenant": "default"}), 403
    )
    operator_keys = sqlite_api.get("/v1/keys").json()["items"]
    assert_problem(tenant_admin.delete(f"/v1/keys/{operator_keys[0]['id']}"), 404)
    assert {k["tenant"] for k in tenant_admin.get("/v1/keys").json()["items"]} == {"acme"}
    # It may mint keys in its own tenant.
    r = tenant_admin.post("/v1/keys", json={"name": "y", "scopes": ["models:read"]})
    assert r.status_code == 201 and r.json()["tenant"] == "acme"


def test_admin_key_is_bootstrapped_once(tmp_path) -> None:
    settings = make_settings(tmp_path)
    first = start_api(settings)
    try:
        assert first.get("/v1/keys").status_code == 200
    finally:
        first.__exit__(None, None, None)
    # A second start with another admin key does not add it: keys exist already.
    second = start_api(make_settings(tmp_path, admin_key="ulk_11111111_" + "B" * 43))
    try:
        assert second.get("/v1/keys").status_code == 200  # the original key still works
        anon = second.anonymous()
        assert_problem(
            anon.get("/v1/keys", headers={"Authorization": "Bearer ulk_11111111_" + "B" * 43}), 401
        )
        assert len(second.get("/v1/keys").json()["items"]) == 1
    finally:
        second.__exit__(None, None, None)


def test_unknown_route_and_method_are_problem_json(sqlite_api: ApiClient) -> None:
    body = assert_problem(sqlite_api.get("/v1/nothing-here"), 404)
    assert body["title"] == "Not Found"
    r = sqlite_api.delete("/v1/models")
    assert_problem(r, 405)
    assert "GET" in r.headers["allow"]
    assert_problem(sqlite_api.put("/healthz"), 405)


def test_validation_errors_are_problem_json(sqlite_api: ApiClient) -> None:
    r = sqlite_api.post("/v1/models", content=b"{not json", headers={"Content-Type": "application/json"})
    body = assert_problem(r, 422)
    assert isinstance(body["errors"], list) and body["errors"]
    body = assert_problem(sqlite_api.post("/v1/models", json={"name": "x"}), 422)
    assert {tuple(e["loc"]) for e in body["errors"]} >= {("body", "task"), ("body", "architecture")}


def test_unknown_query_parameter_is_422(sqlite_api: ApiClient) -> None:
    body = assert_problem(sqlite_api.get("/v1/audit", params={"modle": "x"}), 422)
    assert "modle" in body["detail"]
    assert sqlite_api.get("/v1/audit", params={"model": "x"}).status_code == 200


def test_unhandled_error_is_500_without_internals(tmp_path, shared_sqlite_url: str) -> None:
    from service.app import create_app

    # An app of its own (the test adds a route to it), on the session's database.
    app = create_app(make_settings(tmp_path, database_url=shared_sqlite_url))
    boom = APIRouter()

    @boom.get("/boom")
    def explode() -> None:
        raise RuntimeError("secret internal detail /etc/passwd")

    app.include_router(boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    body = assert_problem(r, 500)
    assert "secret" not in r.text and "Traceback" not in r.text
    assert body["title"] == "Internal Server Error"
    assert r.headers["x-request-id"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_body_is_413(
    make_api: Callable[..., ApiClient], chunked: bool, mlp_checkpoint: bytes
) -> None:
    client = make_api(max_body_bytes=1024)
    client.create_model("m")
    # A well-formed multipart body, so that only its size can be the reason for refusal.
    payload = (
        b'--zzz\r\nContent-Disposition: form-data; name="checkpoint"; filename="c"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + b"x" * 4096 + b"\r\n--zzz--\r\n"
    )

    def gen():
        for i in range(0, len(payload), 512):
            yield payload[i : i + 512]

    if chunked:
        r = client.post(
            "/v1/models/m/versions",
            content=gen(),
            headers={"Content-Type": "multipart/form-data; boundary=zzz"},
        )
    else:
        r = client.post("/v1/models/m/versions", files={"checkpoint": ("c", mlp_checkpoint)})
    body = assert_problem(r, 413)
    assert "1024" in body["detail"]
    assert client.ctx.storage.keys() == []
    client.create_model("n")  # small bodies still pass


def test_request_id_is_echoed_or_generated(sqlite_api: ApiClient) -> None:
    r = sqlite_api.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = sqlite_api.get("/healthz", headers={"X-Request-ID": "bad id\n"}).headers["x-request-id"]
    assert generated != "bad id\n" and len(generated) == 32


def test_key_listing_paginates(api: ApiClient) -> None:
    for i in range(4):
        api.new_key(["models:read"], name=f"k{i}")
    ids, cursor = [], None
    while True:
        body = api.get("/v1/keys", params={"limit": 2} | ({"cursor": cursor} if cursor else {})).json()
        ids += [k["id"] for k in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(ids) == len(set(ids)) == 5
