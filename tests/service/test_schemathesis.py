"""schemathesis against the service's own OpenAPI document: the in-process app, an admin key, a
model and a data set to find, and every operation called with the document's examples, with the
edge cases schemathesis derives from each schema (its coverage phase) and with random requests
(a fixed number per operation, from a fixed seed). No answer may be a 5xx, have a status the
document does not list for that operation, or differ from the documented media type or schema.

Bounded for CI: about 2,000 requests in about 40 s on two cores. ``UNLEARN_SCHEMATHESIS_EXAMPLES``
raises the number of random requests per operation (the seed stays fixed) for a longer hunt.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from schemathesis.python import asgi

from service.openapi_examples import DATASET, MODEL
from tests.service_fixtures import ADMIN_KEY, ApiClient, make_checkpoint, make_dataset, make_settings

MAX_EXAMPLES = int(os.environ.get("UNLEARN_SCHEMATHESIS_EXAMPLES", "10"))
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
ARCHITECTURE = {"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [128], "num_classes": 10}}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    """An app of its own (schemathesis runs its lifespan), on a SQLite database of its own."""
    app = create_app_for(tmp_path)
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()  # the lifespan schemathesis started: migrations done, threads ended


def create_app_for(tmp_path: Path) -> FastAPI:
    from service.app import create_app

    return create_app(make_settings(tmp_path))


def seed(app: FastAPI) -> None:
    """The objects the document's examples name, so that they reach the routes' real work."""
    client = TestClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    body = {"name": MODEL, "task": "classification", "architecture": ARCHITECTURE}
    assert client.post("/v1/models", json=body).status_code == 201
    body = {"name": DATASET, "task": "classification"}
    assert client.post("/v1/datasets", json=body).status_code == 201
    rng = np.random.default_rng(0)
    data = io.BytesIO()
    np.savez(
        data,
        inputs=rng.random((300, 64), dtype=np.float32),
        labels=rng.integers(0, 10, 300),
        sample_ids=np.arange(300),
        subject_ids=np.array([f"user-{40 + i % 4}" for i in range(300)]),
    )
    r = client.post(f"/v1/datasets/{DATASET}/versions", files={"data": ("train.npz", data.getvalue())})
    assert r.status_code == 201, r.text
    files = {
        "checkpoint": ("model.safetensors", make_checkpoint(ARCHITECTURE)),
        "eval_set": ("eval.safetensors", make_dataset(20)),
    }
    r = client.post(f"/v1/models/{MODEL}/versions", files=files, data={"dataset": DATASET})
    assert r.status_code == 201, r.text


def config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": 20260131,
            "headers": {"Authorization": f"Bearer {ADMIN_KEY}"},
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            # Stateful sequences are left out: unbounded in time, and the coverage phase already
            # sends every operation the values its schema allows at the edges and just past them.
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "suppress-health-check": ["all"],
            # A job's event stream stays open while the job waits for a worker (there is none).
            "max-stream-events": 1,
        }
    )


def _describe(recorder: Any, case_id: str, check: Any) -> str:
    failure = check.failure_info.failure
    case = recorder.cases[case_id].value
    interaction = recorder.interactions.get(case_id)
    status = interaction.response.status_code if interaction and interaction.response else None
    where = f"{recorder.label} [{check.name}] {failure.title} (got {status})"
    return f"{where}: {failure.message}\n  {case.as_curl_command()}"


@pytest.mark.slow
def test_the_api_answers_as_its_openapi_says(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config())
    seed(app)
    failures: list[str] = []
    errors: list[str] = []
    requests = 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            requests += len(recorder.interactions)
            for case_id, checks in recorder.checks.items():
                failures += [_describe(recorder, case_id, c) for c in checks if c.failure_info is not None]
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            errors.append(f"fatal: {event.exception!r}")
    assert errors == []
    assert sorted(set(failures)) == []
    assert requests > 1000, "schemathesis sent far fewer requests than it should"


# What schemathesis found, each kept as a test of its own.


def test_a_rollback_to_a_version_past_the_column_is_422(sqlite_api: ApiClient) -> None:
    # It reached the database, which refused the number: a 500.
    sqlite_api.create_model(MODEL)
    r = sqlite_api.post(f"/v1/models/{MODEL}/rollback", json={"to_version": 10**28})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "to_version"]


@pytest.mark.parametrize("ids", [[False], [True, 3]])
def test_sample_ids_are_not_booleans(sqlite_api: ApiClient, ids: list[Any]) -> None:
    # JSON false was read as the sample id 0 (and true as 1): an erasure of the wrong sample.
    sqlite_api.create_model(MODEL)
    for path in (f"/v1/datasets/{DATASET}/erasures", f"/v1/models/{MODEL}/deletion-requests"):
        r = sqlite_api.post(path, json={"sample_ids": ids})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["errors"][0]["loc"][:2] == ["sample_ids", 0]


def test_a_malformed_multipart_body_is_a_documented_400(sqlite_api: ApiClient) -> None:
    r = sqlite_api.post(
        f"/v1/models/{MODEL}/versions",
        content=b"3925",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
