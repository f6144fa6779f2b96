"""GET /v1/jobs and GET /v1/deletion-requests share their filters (?model=&status=) and paging."""

from __future__ import annotations

import pytest

from tests.service.test_registry import assert_problem
from tests.service_fixtures import ApiClient

LISTS = [
    ("/v1/jobs", ("queued", "running", "succeeded", "failed", "cancelled")),
    ("/v1/deletion-requests", ("queued", "running", "completed", "failed", "cancelled")),
]


@pytest.fixture
def submitted(sqlite_api: ApiClient, mlp_checkpoint: bytes) -> list[dict]:
    """Three deletion requests (one batched job) on model "m"; model "empty" has none."""
    sqlite_api.create_model("m")
    sqlite_api.create_model("empty")
    assert sqlite_api.upload_version("m", mlp_checkpoint).status_code == 201
    out = []
    for i in range(3):
        r = sqlite_api.post(
            "/v1/models/m/deletion-requests",
            json={"samples": {"inputs": [[float(i)] * 64], "labels": [i]}},
        )
        assert r.status_code == 202, r.text
        out.append(r.json())
    return out


@pytest.mark.parametrize(("path", "statuses"), LISTS, ids=["jobs", "deletion-requests"])
def test_filters_and_paging(sqlite_api: ApiClient, submitted: list[dict], path: str, statuses) -> None:
    api = sqlite_api
    expected = (
        [submitted[0]["job_id"]] if path == "/v1/jobs" else [r["id"] for r in reversed(submitted)]
    )  # newest first
    everything = api.get(path).json()
    assert [i["id"] for i in everything["items"]] == expected and everything["next_cursor"] is None
    assert all(i["model"] == "m" for i in everything["items"])
    assert [i["id"] for i in api.get(path, params={"model": "m", "status": "queued"}).json()["items"]] == (
        expected
    )
    assert api.get(path, params={"model": "empty"}).json()["items"] == []
    assert api.get(path, params={"status": statuses[-1]}).json()["items"] == []

    seen, cursor = [], None
    while True:
        page = api.get(path, params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected

    body = assert_problem(api.get(path, params={"status": "bogus"}), 422)
    assert body["detail"] == f"status must be one of {', '.join(statuses)}"
    # The status is checked before the model is looked up.
    assert_problem(api.get(path, params={"status": "bogus", "model": "nope"}), 422)
    assert_problem(api.get(path, params={"model": "nope"}), 404)
    assert_problem(api.get(path, params={"modle": "m"}), 422)
    assert_problem(api.get(path, params={"limit": 0}), 422)
    assert_problem(api.get(path, params={"cursor": "not-a-cursor"}), 422)

    # Another tenant sees nothing, and the model's name means nothing to it.
    other = api.with_key(api.new_key(["jobs:read"], tenant="other"))
    assert other.get(path).json() == {"items": [], "next_cursor": None}
    assert_problem(other.get(path, params={"model": "m"}), 404)
