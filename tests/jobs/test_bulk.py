"""Bulk intake: many deletion requests in one call and one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from service.db import session_scope
from service.tables import DeletionRequest, Job
from tests.jobs.helpers import FakePublisher, register_model
from tests.service_fixtures import ApiClient, make_settings, start_api

URL = "/v1/models/m/deletion-requests/bulk"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiClient]:
    client = start_api(make_settings(tmp_path, max_bulk_requests=50))
    client.ctx.publisher = FakePublisher()
    try:
        yield client
    finally:
        client.__exit__(None, None, None)


def _items(n: int, seed: int = 0) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "subject": f"user-{i}",
            "samples": {"inputs": torch.randn(2, 64, generator=g).tolist(), "labels": [i % 10, (i + 1) % 10]},
        }
        for i in range(n)
    ]


def _count(api: ApiClient) -> tuple[int, int]:
    with session_scope(api.ctx.session_factory) as s:
        return s.query(DeletionRequest).count(), s.query(Job).count()


def test_bulk_makes_one_request_per_subject_in_one_job(api: ApiClient) -> None:
    register_model(api)
    r = api.post(URL, json={"requests": _items(20)}, headers={"Idempotency-Key": "bulk-1"})
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    assert len(items) == 20 and len({i["job_id"] for i in items}) == 1
    assert _count(api) == (20, 1)
    publisher = api.ctx.publisher
    assert isinstance(publisher, FakePublisher) and len(publisher.sent) == 1
    listed = api.get("/v1/deletion-requests", params={"subject": "user-7"}).json()["items"]
    assert [i["id"] for i in listed] == [items[7]["id"]]
    # A retry with the same key answers the same and stores nothing more.
    again = api.post(URL, json={"requests": _items(20)}, headers={"Idempotency-Key": "bulk-1"})
    assert again.status_code == 202 and again.json() == r.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert _count(api) == (20, 1)


def test_one_bad_item_refuses_the_whole_bulk(api: ApiClient) -> None:
    register_model(api)
    items = _items(5)
    items[3]["samples"]["labels"] = [99, 0]  # out of the model's label range
    r = api.post(URL, json={"requests": items})
    assert r.status_code == 422 and r.json()["index"] == 3, r.text
    assert "requests[3]" in r.json()["detail"]
    assert _count(api) == (0, 0)
    assert api.ctx.storage.keys("forget-sets") == []


def test_bulk_size_and_shape_are_bounded(api: ApiClient) -> None:
    register_model(api)
    assert api.post(URL, json={"requests": _items(51)}).status_code == 422
    assert api.post(URL, json={"requests": []}).status_code == 422
    assert api.post(URL, json={"requests": _items(1), "extra": 1}).status_code == 422
    assert _count(api) == (0, 0)
