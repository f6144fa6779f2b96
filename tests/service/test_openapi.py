"""The OpenAPI document says what the service answers (service/openapi.py), with examples that fit
their schemas, and /docs and /redoc work with no network (service/ops/docs.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from service.openapi import PROBLEM_JSON
from tests.service_fixtures import ApiClient, make_settings

Operation = tuple[str, str, dict[str, Any]]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from service.app import create_app

    tmp: Path = tmp_path_factory.mktemp("openapi")
    return create_app(make_settings(tmp)).openapi()


def operations(spec: dict[str, Any]) -> Iterator[Operation]:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def _errors(op: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(s): r for s, r in op["responses"].items() if s.isdigit() and int(s) >= 400}


def test_authenticated_operations_document_401_and_403(spec: dict[str, Any]) -> None:
    missing = [
        f"{m} {p}: {sorted({401, 403} - set(_errors(op)))}"
        for m, p, op in operations(spec)
        if op.get("security") and not {401, 403} <= set(_errors(op))
    ]
    assert missing == []
    # The public ones need no key, so they do not.
    public = {(m, p) for m, p, op in operations(spec) if not op.get("security")}
    assert ("GET", "/healthz") in public and ("GET", "/.well-known/unlearn-signing-key") in public
    for m, p, op in operations(spec):
        if (m, p) in public:
            assert 401 not in _errors(op), f"{m} {p}"
        else:
            assert "WWW-Authenticate" in _errors(op)[401].get("headers", {}), f"{m} {p}"


def test_operations_with_path_parameters_document_404(spec: dict[str, Any]) -> None:
    missing = [
        f"{m} {p}"
        for m, p, op in operations(spec)
        if any(x["in"] == "path" for x in op.get("parameters", [])) and 404 not in _errors(op)
    ]
    assert missing == []


def test_every_error_is_problem_json_and_422_is_documented_everywhere(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["properties"])
    assert problem["additionalProperties"] is True
    for m, p, op in operations(spec):
        errors = _errors(op)
        assert {422, 500} <= set(errors), f"{m} {p}"
        for status, response in errors.items():
            assert list(response["content"]) == [PROBLEM_JSON], f"{m} {p} {status}"
            assert response["content"][PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
            assert response["description"] != "Validation Error", f"{m} {p} {status}"
        if "requestBody" in op:
            assert 413 in errors, f"{m} {p}"
    # FastAPI's own 422 body is what the service never sent: it is gone from the document.
    assert "HTTPValidationError" not in str(spec)


def test_route_specific_statuses(spec: dict[str, Any]) -> None:
    def statuses(method: str, path: str) -> set[int]:
        return set(_errors(spec["paths"][path][method.lower()]))

    assert {409, 410, 415, 429} <= statuses("POST", "/v1/models/{name}/deletion-requests")
    assert {409, 429} <= statuses("POST", "/v1/models/{name}/deletion-requests/bulk")
    assert {409, 410, 429} <= statuses("POST", "/v1/datasets/{name}/erasures")
    assert {410, 416} <= statuses("GET", "/v1/models/{name}/versions/{v}/checkpoint")
    assert 409 in statuses("POST", "/v1/models") and 409 in statuses("POST", "/v1/jobs/{job_id}/cancel")
    assert 503 in statuses("GET", "/readyz")
    assert 400 in statuses("POST", "/v1/models/{name}/versions")  # malformed multipart
    backlog = spec["paths"]["/v1/models/{name}/deletion-requests"]["post"]["responses"]["429"]
    assert "Retry-After" in backlog["headers"]


def test_raw_body_routes_document_their_bodies(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    content = paths["/v1/models/{name}/deletion-requests"]["post"]["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/DeletionRequestIn"}
    form = content["multipart/form-data"]["schema"]
    assert form["required"] == ["forget_set"]
    assert form["properties"]["forget_set"] == {**form["properties"]["forget_set"], "format": "binary"}
    assert {"subject", "method", "params", "policy", "base_version"} <= set(form["properties"])
    for path, name in (
        ("/v1/models/{name}/deletion-requests/bulk", "BulkDeletionIn"),
        ("/v1/datasets/{name}/erasures", "ErasureIn"),
    ):
        body = paths[path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
    schemas = spec["components"]["schemas"]
    for name in ("DeletionRequestIn", "BulkDeletionIn", "ErasureIn", "Samples", "AcceptancePolicy"):
        assert name in schemas, name
    # Every reference in the document resolves.
    refs = set(re.findall(r"#/components/schemas/([\w.-]+)", str(spec)))
    assert refs - set(schemas) == set()


def _has_example(media: dict[str, Any]) -> bool:
    return "example" in media or bool(media.get("examples"))


def test_every_operation_has_examples(spec: dict[str, Any]) -> None:
    missing = []
    for m, p, op in operations(spec):
        for parameter in op.get("parameters", []):
            if "example" not in parameter:
                missing.append(f"{m} {p} parameter {parameter['name']}")
        for media_type, media in op.get("requestBody", {}).get("content", {}).items():
            if not _has_example(media):
                missing.append(f"{m} {p} request {media_type}")
        for status, response in op["responses"].items():
            for media_type, media in response.get("content", {}).items():
                if media_type != "application/octet-stream" and not _has_example(media):
                    missing.append(f"{m} {p} {status} {media_type}")
        success = [s for s in op["responses"] if s.startswith("2")]
        assert success, f"{m} {p}"
    assert missing == []


def _examples_of(media: dict[str, Any]) -> list[Any]:
    if "example" in media:
        return [media["example"]]
    return [named["value"] for named in media.get("examples", {}).values()]


def test_examples_fit_their_schemas(spec: dict[str, Any]) -> None:
    components = spec["components"]
    problems = []

    def check(where: str, schema: dict[str, Any], value: Any) -> None:
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": components})
        for error in validator.iter_errors(value):
            problems.append(f"{where}: {error.message}")

    for m, p, op in operations(spec):
        for parameter in op.get("parameters", []):
            check(f"{m} {p} parameter {parameter['name']}", parameter["schema"], parameter["example"])
        media_types = [("request", op.get("requestBody", {}).get("content", {}))]
        media_types += [(status, r.get("content", {})) for status, r in op["responses"].items()]
        for where, content in media_types:
            for media_type, media in content.items():
                # A multipart example names its files; an event stream's schema describes one event.
                if media_type in ("application/json", PROBLEM_JSON) and "schema" in media:
                    for value in _examples_of(media):
                        check(f"{m} {p} {where} {media_type}", media["schema"], value)
    assert problems == []


def test_since_takes_only_iso_8601_date_times(sqlite_api: ApiClient, spec: dict[str, Any]) -> None:
    for bad in ("0.5", "1700000000", "2026-01-31", "yesterday", "9999-12-31T23:59:59-23:59"):
        r = sqlite_api.get("/v1/audit", params={"since": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"] == PROBLEM_JSON
        assert r.json()["errors"][0]["loc"] == ["query", "since"]
    events = sqlite_api.get("/v1/audit").json()["items"]
    assert events, "the bootstrap admin key's creation is an event"
    for good in (
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:00:00",
        "2000-01-01T02:00:00.5+02:00",
        events[0]["ts"],
    ):
        r = sqlite_api.get("/v1/audit", params={"since": good})
        assert r.status_code == 200, (good, r.text)
        assert r.json()["items"][0]["seq"] == events[0]["seq"]
    assert sqlite_api.get("/v1/audit", params={"since": "2999-01-01T00:00:00Z"}).json()["items"] == []
    (since,) = [x for x in spec["paths"]["/v1/audit"]["get"]["parameters"] if x["name"] == "since"]
    (iso,) = [s for s in since["schema"]["anyOf"] if s.get("type") == "string"]
    assert iso["format"] == "date-time" and re.fullmatch(iso["pattern"], "2026-01-31T00:00:00Z")
    assert re.fullmatch(iso["pattern"], "0.5") is None


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_nothing_from_the_network(sqlite_api: ApiClient, page: str) -> None:
    anonymous = sqlite_api.anonymous()
    r = anonymous.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http://" not in r.text and "https://" not in r.text, "the page names an external URL"
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert len(assets) >= 2, assets
    for asset in assets:
        served = anonymous.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 1000, asset
    assert anonymous.get("/openapi.json").status_code == 200


def test_swagger_ui_sends_the_document_to_no_validator(sqlite_api: ApiClient) -> None:
    # Swagger UI otherwise posts the document to validator.swagger.io for its badge.
    assert '"validatorUrl": null' in sqlite_api.anonymous().get("/docs").text
