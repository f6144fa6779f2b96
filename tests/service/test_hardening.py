"""Regression tests for defects an adversarial tester found: every one used to be a 500, a leak,
a lock-out or a wrong cache policy; every answer must be problem+json and change nothing."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update
from starlette.types import Message
from structlog.testing import capture_logs

from service.db import session_scope, utcnow
from service.ops.logging import configure_logging
from service.tables import ApiKey, Model, ModelVersion
from tests.service.test_registry import assert_problem
from tests.service_fixtures import ADMIN_KEY, ApiClient, make_checkpoint, make_settings, start_api

REPO = Path(__file__).resolve().parents[2]
# `unlearn-service`, run from this checkout (the installed script may import another one).
CLI = [sys.executable, "-c", "from service.cli import app; app()"]


def _cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


# --- 3. crafted pagination cursors ----------------------------------------------------------------

# (path, number of sort-key columns)
LISTS = [
    ("/v1/models", 1),
    ("/v1/models/m/versions", 1),
    ("/v1/audit", 1),
    ("/v1/keys", 2),
    ("/v1/jobs", 2),
    ("/v1/deletion-requests", 2),
]
BAD_VALUES = {
    "null": None,  # ?cursor=W251bGxd: a 500 on the one-column lists
    "bool": True,
    "beyond-int64": 10**30,
    "nul-byte": "\x00",
    "dt-not-a-string": {"dt": 5},
    "dt-out-of-range": {"dt": "0001-01-01T00:00:00+14:00"},
    "object": {"a": 1},
}


@pytest.mark.parametrize(("path", "width"), LISTS, ids=[p for p, _ in LISTS])
def test_crafted_cursor_is_422_on_every_list(api: ApiClient, path: str, width: int) -> None:
    api.create_model("m")
    assert api.get(path, params={"cursor": "W251bGxd"}).status_code == 422
    for name, value in BAD_VALUES.items():
        r = api.get(path, params={"cursor": _cursor([value] * width)})
        body = assert_problem(r, 422)
        assert "invalid cursor" in body["detail"], name
    # A cursor the service made still works.
    api.create_model("m2")
    api.new_key(["models:read"])
    first = api.get(path, params={"limit": 1}).json()
    if path in ("/v1/models", "/v1/audit", "/v1/keys"):
        assert first["next_cursor"] is not None
    if first["next_cursor"] is not None:
        assert api.get(path, params={"limit": 1, "cursor": first["next_cursor"]}).status_code == 200


# --- 3. JSON bodies Python's parser refuses -------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = (
    '{"name": "m", "task": "classification", "architecture": {"name": "mlp", "config": {"input_dim": '
    + "9" * 5000
    + "}}}"
)


@pytest.mark.parametrize("path", ["/v1/models", "/v1/keys"])
def test_deeply_nested_json_body_is_422(sqlite_api: ApiClient, path: str) -> None:
    r = sqlite_api.post(path, content=DEEP, headers={"Content-Type": "application/json"})
    assert "nested too deeply" in assert_problem(r, 422)["detail"]


@pytest.mark.parametrize("depth", [40, 400, 900])
def test_deeply_nested_architecture_config_is_422(sqlite_api: ApiClient, depth: int) -> None:
    # Parsed fine by json, but pydantic's serialiser (in the engine) gave up at a few hundred: a 500.
    config = {"hf_config": {"model_type": "gpt2", "x": json.loads('{"a":' * depth + "1" + "}" * depth)}}
    body = {"name": "deep", "task": "causal-lm", "architecture": {"name": "hf-causal-lm", "config": config}}
    detail = assert_problem(sqlite_api.post("/v1/models", json=body), 422)["detail"]
    assert "nested more than 32 levels deep" in detail
    assert sqlite_api.get("/v1/models").json()["items"] == []


def test_json_integer_beyond_the_digit_limit_is_422(sqlite_api: ApiClient) -> None:
    r = sqlite_api.post("/v1/models", content=HUGE_INT, headers={"Content-Type": "application/json"})
    assert "more than 4300 digits" in assert_problem(r, 422)["detail"]
    assert sqlite_api.get("/v1/models").json()["items"] == []


def test_json_loads_helper_turns_every_parse_failure_into_a_422() -> None:
    from service.errors import Problem
    from service.jsonbody import loads

    for raw, needle in [(DEEP, "nested too deeply"), ("9" * 5000, "4300 digits"), ("{", "not valid JSON")]:
        with pytest.raises(Problem) as caught:
            loads(raw)
        assert caught.value.status == 422 and needle in (caught.value.detail or "")


@pytest.mark.parametrize("body", [DEEP, '{"samples": ' + "9" * 5000 + "}"], ids=["deep", "huge-int"])
def test_deletion_request_json_body_is_422(sqlite_api: ApiClient, body: str) -> None:
    sqlite_api.create_model("m")
    r = sqlite_api.post(
        "/v1/models/m/deletion-requests", content=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(r, 422)


# --- 3. version numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref", ["%C2%B9", "%D9%A3", "%EF%BC%91"], ids=["superscript-1", "arabic-3", "fullwidth-1"]
)
def test_unicode_digit_version_is_422(sqlite_api: ApiClient, ref: str) -> None:
    sqlite_api.create_model("m")
    for suffix in ("", "/checkpoint"):
        body = assert_problem(sqlite_api.get(f"/v1/models/m/versions/{ref}{suffix}"), 422)
        assert "positive integer or 'latest'" in body["detail"]


# --- 3. a client that disconnects mid-body --------------------------------------------------------


@pytest.fixture
def info_logs(sqlite_api: ApiClient) -> Iterator[list[MutableMapping[str, Any]]]:
    configure_logging(sqlite_api.settings.model_copy(update={"log_level": "INFO"}), force=True)
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        configure_logging(sqlite_api.settings, force=True)


def _post_then_disconnect(api: ApiClient, path: str) -> list[int]:
    """Send half a body, then the ASGI disconnect message; returns the statuses sent."""
    messages: list[Message] = [{"type": "http.request", "body": b'{"samples": {"inp', "more_body": True}]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {ADMIN_KEY}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"1000"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(api.app(scope, receive, send))
    return [m["status"] for m in sent if m["type"] == "http.response.start"]


def test_client_disconnect_mid_body_is_logged_quietly(
    sqlite_api: ApiClient, info_logs: list[MutableMapping[str, Any]]
) -> None:
    sqlite_api.create_model("m")
    statuses = _post_then_disconnect(sqlite_api, "/v1/models/m/deletion-requests")
    assert statuses and statuses[0] < 500
    events = {(e["event"], e["log_level"]) for e in info_logs}
    assert ("client_disconnected", "info") in events
    assert not any(e["log_level"] == "error" for e in info_logs), info_logs


# --- 2. the last admin key --------------------------------------------------------------------------


def _key_id(api: ApiClient, name: str = "admin (bootstrap)") -> str:
    return next(k["id"] for k in api.get("/v1/keys").json()["items"] if k["name"] == name)


def test_last_admin_key_cannot_be_revoked(api: ApiClient) -> None:
    bootstrap = _key_id(api)
    body = assert_problem(api.delete(f"/v1/keys/{bootstrap}"), 409)
    assert "last active admin key" in body["detail"]
    assert api.get("/v1/keys").status_code == 200  # nothing changed: it still works

    # With a second admin key the first may go; then the second is the last.
    second = api.with_key(api.new_key(["admin"], name="second admin"))
    assert api.delete(f"/v1/keys/{bootstrap}").status_code == 200
    assert_problem(second.delete(f"/v1/keys/{_key_id(second, 'second admin')}"), 409)
    assert second.get("/v1/keys").status_code == 200

    # A customer tenant's only admin key may be revoked: the operator can mint another.
    acme = api.with_key(second.new_key(["admin"], tenant="acme", name="acme admin"))
    acme_id = acme.get("/v1/keys").json()["items"][0]["id"]
    assert second.delete(f"/v1/keys/{acme_id}").status_code == 200


def _revoke_all_admin_keys_behind_the_apis_back(api: ApiClient) -> None:
    # The state deployments reached before the 409 existed; the API can no longer get there.
    with session_scope(api.ctx.session_factory) as session:
        session.execute(update(ApiKey).values(revoked_at=utcnow()))


def test_a_new_admin_key_setting_recovers_a_deployment_without_admin(tmp_path: Path) -> None:
    api = start_api(make_settings(tmp_path))
    try:
        _revoke_all_admin_keys_behind_the_apis_back(api)
        assert_problem(api.get("/v1/keys"), 401)
    finally:
        api.__exit__(None, None, None)

    # The revoked key is not revived by a restart: it may have been revoked because it leaked.
    with capture_logs() as logs:
        again = start_api(make_settings(tmp_path))
    try:
        assert_problem(again.get("/v1/keys"), 401)
        assert any(e["event"] == "no_active_admin_key" for e in logs)
    finally:
        again.__exit__(None, None, None)

    new_key = "ulk_22222222_" + "C" * 43
    recovered = start_api(make_settings(tmp_path, admin_key=new_key))
    try:
        client = recovered.with_key(new_key)
        assert client.get("/v1/keys").status_code == 200
        assert {"admin"} <= set(client.get("/v1/keys").json()["items"][-1]["scopes"])
    finally:
        recovered.__exit__(None, None, None)


def test_create_key_command_recovers_a_running_deployment(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    api = start_api(settings)
    try:
        _revoke_all_admin_keys_behind_the_apis_back(api)
        env = {
            **os.environ,
            "UNLEARN_DATABASE_URL": settings.resolved_database_url,
            "UNLEARN_DATA_DIR": str(settings.data_dir),
            "UNLEARN_ADMIN_KEY": "",
        }
        done = subprocess.run(
            [
                *CLI,
                "create-key",
                "--tenant",
                settings.admin_tenant,
                "--scopes",
                "admin",
                "--name",
                "recovery",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        key = done.stdout.strip().splitlines()[-1]
        client = api.with_key(key)  # the running API accepts it at once
        assert client.post("/v1/keys", json={"name": "fresh", "scopes": ["models:read"]}).status_code == 201
    finally:
        api.__exit__(None, None, None)


# --- 4. Hugging Face configs from server paths ------------------------------------------------------

GPT2 = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 8, "vocab_size": 32, "n_positions": 16}


def _hf_model(path: str) -> dict[str, Any]:
    return {
        "name": "lm",
        "task": "causal-lm",
        "architecture": {"name": "hf-causal-lm", "config": {"path": path}},
    }


@pytest.fixture
def hf_dirs(tmp_path: Path) -> tuple[Path, Path]:
    pytest.importorskip("transformers")
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    for d in (allowed / "gpt2", outside / "gpt2"):
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(GPT2))
    (allowed / "escape").symlink_to(outside / "gpt2")
    return allowed, outside


def test_hf_config_paths_are_refused_by_default_and_say_nothing(
    sqlite_api: ApiClient, hf_dirs: tuple[Path, Path]
) -> None:
    _allowed, outside = hf_dirs
    details = set()
    for path in (str(outside / "gpt2"), str(outside / "missing"), "/etc", "/"):
        body = assert_problem(sqlite_api.post("/v1/models", json=_hf_model(path)), 422)
        details.add(body["detail"])
    assert len(details) == 1  # the same answer whether the directory exists or not
    assert "hf_config" in details.pop()
    assert sqlite_api.get("/v1/models").json()["items"] == []


def test_hf_config_path_in_an_allowed_directory_is_stored_inline(
    tmp_path: Path, hf_dirs: tuple[Path, Path]
) -> None:
    allowed, outside = hf_dirs
    api = start_api(make_settings(tmp_path, hf_config_dirs=[allowed]))
    try:
        details = set()
        for path in (str(outside / "gpt2"), str(allowed / "missing"), str(allowed / "escape"), str(allowed)):
            details.add(assert_problem(api.post("/v1/models", json=_hf_model(path)), 422)["detail"])
        assert len(details) == 1
        created = api.post("/v1/models", json=_hf_model(str(allowed / "gpt2")))
        assert created.status_code == 201, created.text
        config = created.json()["architecture"]["config"]
        assert config.get("path") is None and config["hf_config"]["n_embd"] == 8
    finally:
        api.__exit__(None, None, None)


def test_hf_inline_config_still_works(sqlite_api: ApiClient) -> None:
    pytest.importorskip("transformers")
    arch = {"name": "hf-causal-lm", "config": {"hf_config": GPT2}}
    r = sqlite_api.post("/v1/models", json={"name": "lm", "task": "causal-lm", "architecture": arch})
    assert r.status_code == 201, r.text


def test_duplicate_model_name_is_409_before_the_model_is_built(
    sqlite_api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.registry.logic as registry_logic

    sqlite_api.create_model("m")

    def must_not_build(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the architecture was built for a name that is taken")

    monkeypatch.setattr(registry_logic, "check_architecture", must_not_build)
    assert_problem(sqlite_api.post("/v1/models", json={**_hf_model("/x"), "name": "m"}), 409)


# --- 1. an eval-set decompression bomb through the API ---------------------------------------------


def test_eval_set_npz_bomb_is_422_and_stores_nothing(sqlite_api: ApiClient, mlp_checkpoint: bytes) -> None:
    rows = 256 * 1024 * 1024 // (4 * 64) + 1024  # inflates to just over the default limit
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("inputs.npy", "w", force_zip64=True) as member:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f4", "fortran_order": False, "shape": (rows, 64)}
            )
            member.write(header.getvalue())
            for _ in range(rows * 64 * 4 // (1 << 22) + 1):
                member.write(bytes(1 << 22))
        archive.writestr("labels.npy", b"")
    sqlite_api.create_model("m")
    files = {
        "checkpoint": ("model.safetensors", mlp_checkpoint, "application/octet-stream"),
        "eval_set": ("eval.npz", out.getvalue(), "application/octet-stream"),
    }
    body = assert_problem(sqlite_api.post("/v1/models/m/versions", files=files), 422)
    assert "inflates to more than" in body["detail"]
    with session_scope(sqlite_api.ctx.session_factory) as session:
        assert session.scalars(select(ModelVersion)).first() is None


def test_checkpoint_with_megabytes_of_header_metadata_is_422(
    sqlite_api: ApiClient, mlp_checkpoint: bytes
) -> None:
    (n,) = struct.unpack("<Q", mlp_checkpoint[:8])
    header = json.loads(mlp_checkpoint[8 : 8 + n])
    header["__metadata__"] = {"format": "pt", "notes": "x" * (1 << 20)}
    encoded = json.dumps(header).encode()
    bloated = struct.pack("<Q", len(encoded)) + encoded + mlp_checkpoint[8 + n :]
    sqlite_api.create_model("m")
    body = assert_problem(sqlite_api.upload_version("m", bloated), 422)
    assert "__metadata__" in body["detail"]
    assert sqlite_api.get("/v1/models/m/versions").json()["items"] == []


# --- 5. response headers ------------------------------------------------------------------------------


def test_latest_checkpoint_is_revalidated_numbered_ones_are_immutable(
    sqlite_api: ApiClient, mlp_checkpoint: bytes
) -> None:
    sqlite_api.create_model("m")
    assert sqlite_api.upload_version("m", mlp_checkpoint).status_code == 201
    assert sqlite_api.upload_version("m", make_checkpoint(seed=1)).status_code == 201
    latest = sqlite_api.get("/v1/models/m/versions/latest/checkpoint")
    assert latest.status_code == 200
    assert (
        "immutable" not in latest.headers["cache-control"] and "no-cache" in latest.headers["cache-control"]
    )
    assert latest.headers["content-location"] == "/v1/models/m/versions/2/checkpoint"
    head = sqlite_api.head("/v1/models/m/versions/latest/checkpoint")
    assert "no-cache" in head.headers["cache-control"]
    numbered = sqlite_api.get("/v1/models/m/versions/1/checkpoint")
    assert "immutable" in numbered.headers["cache-control"]
    assert numbered.headers["x-content-type-options"] == "nosniff"


def test_every_answer_has_nosniff_and_json_answers_no_store(sqlite_api: ApiClient) -> None:
    anonymous = sqlite_api.anonymous()
    answers = {
        "list": sqlite_api.get("/v1/models"),
        "problem": sqlite_api.get("/v1/models/nope"),
        "unauthorised": anonymous.get("/v1/models"),
        "health": anonymous.get("/healthz"),
        "metrics": anonymous.get("/metrics"),
        "too-large": sqlite_api.post(
            "/v1/keys",
            content=b"{}",
            headers={"Content-Length": str(10**12), "Content-Type": "application/json"},
        ),
    }
    for name, r in answers.items():
        assert r.headers.get("x-content-type-options") == "nosniff", name
        if r.headers["content-type"].startswith(("application/json", "application/problem+json")):
            assert r.headers.get("cache-control") == "no-store", name
    assert answers["too-large"].status_code == 413


def test_models_written_through_the_api_are_unchanged_by_refusals(sqlite_api: ApiClient) -> None:
    # Every refusal above is checked to store nothing; this one checks the database is untouched
    # by a mix of them in a row.
    sqlite_api.create_model("m")
    sqlite_api.post("/v1/models", content=DEEP, headers={"Content-Type": "application/json"})
    sqlite_api.get("/v1/models", params={"cursor": "W251bGxd"})
    sqlite_api.delete(f"/v1/keys/{_key_id(sqlite_api)}")
    with session_scope(sqlite_api.ctx.session_factory) as session:
        assert [m.name for m in session.scalars(select(Model))] == ["m"]
        assert session.scalars(select(ApiKey.revoked_at)).all() == [None]
