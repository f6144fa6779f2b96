"""Health, readiness, metrics and logging."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.db import session_scope, utcnow
from service.tables import DeletionRequest, Job, Model
from tests.service.test_registry import assert_problem
from tests.service_fixtures import ApiClient, make_settings, start_api


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_healthz_needs_no_key(sqlite_api: ApiClient) -> None:
    r = sqlite_api.anonymous().get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_ok_with_embedded_broker(sqlite_api: ApiClient) -> None:
    r = sqlite_api.anonymous().get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}


def test_readyz_ok_with_redis(make_api: Callable[..., ApiClient], redis_url: str) -> None:
    client = make_api(broker_url=redis_url)
    assert client.get("/readyz").status_code == 200


def test_readyz_503_when_broker_unreachable(make_api: Callable[..., ApiClient]) -> None:
    client = make_api(broker_url="redis://127.0.0.1:1/0")
    body = assert_problem(client.get("/readyz"), 503)
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error")


def test_readyz_503_when_embedded_broker_folder_is_gone(sqlite_api: ApiClient) -> None:
    shutil.rmtree(sqlite_api.settings.broker_dir)
    body = assert_problem(sqlite_api.get("/readyz"), 503)
    assert "broker" in body["checks"]["broker"]


def test_metrics(sqlite_api: ApiClient) -> None:
    api = sqlite_api
    api.create_model("m")
    api.get("/v1/models/m")
    api.get("/v1/models/m")
    api.get("/v1/models/missing")
    with session_scope(api.ctx.session_factory) as s:
        model = s.query(Model).filter_by(name="m").one()
        now = utcnow()
        for i, (status, seconds) in enumerate([("succeeded", 3), ("succeeded", 40), ("failed", 2000)]):
            s.add(
                Job(
                    id=f"job_{i}",
                    tenant_id=model.tenant_id,
                    model_id=model.id,
                    method="imu",
                    status=status,
                    started_at=now - timedelta(seconds=seconds),
                    finished_at=now,
                )
            )
        s.add(Job(id="job_q", tenant_id=model.tenant_id, model_id=model.id, method="imu", status="queued"))
        s.flush()
        s.add(
            DeletionRequest(
                tenant_id=model.tenant_id,
                model_id=model.id,
                job_id="job_q",
                method="imu",
                n_samples=1,
                sample_digests=["x"],
                forget_set_sha256="0" * 64,
            )
        )

    r = api.anonymous().get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = metric_samples(r.text)
    get_model = (("method", "GET"), ("route", "/v1/models/{name}"))
    assert m[("unlearn_http_requests_total", (*get_model, ("status", "200")))] == 2
    assert m[("unlearn_http_requests_total", (*get_model, ("status", "404")))] == 1
    assert m[("unlearn_http_request_duration_seconds_count", get_model)] == 3
    assert m[("unlearn_jobs", (("status", "succeeded"),))] == 2
    assert m[("unlearn_jobs", (("status", "queued"),))] == 1
    assert m[("unlearn_jobs", (("status", "running"),))] == 0
    assert m[("unlearn_deletion_requests", (("status", "queued"),))] == 1
    ok = (("method", "imu"), ("status", "succeeded"))
    assert m[("unlearn_job_duration_seconds_count", ok)] == 2
    assert m[("unlearn_job_duration_seconds_bucket", (("le", "5.0"), *ok))] == 1
    assert m[("unlearn_job_duration_seconds_bucket", (("le", "60.0"), *ok))] == 2
    assert m[("unlearn_job_duration_seconds_sum", ok)] == pytest.approx(43, abs=0.5)
    failed = (("method", "imu"), ("status", "failed"))
    assert m[("unlearn_job_duration_seconds_bucket", (("le", "1800.0"), *failed))] == 0
    assert m[("unlearn_job_duration_seconds_bucket", (("le", "+Inf"), *failed))] == 1


def test_job_duration_metrics_on_postgres(
    make_api: Callable[..., ApiClient], shared_postgres_url: str
) -> None:
    client = make_api(database_url=shared_postgres_url)
    client.create_model("m")
    with session_scope(client.ctx.session_factory) as s:
        model = s.query(Model).filter_by(name="m").one()
        now = utcnow()
        s.add(
            Job(
                tenant_id=model.tenant_id,
                model_id=model.id,
                method="ga",
                status="succeeded",
                started_at=now - timedelta(seconds=10),
                finished_at=now,
            )
        )
    m = metric_samples(client.get("/metrics").text)
    labels = (("method", "ga"), ("status", "succeeded"))
    assert m[("unlearn_job_duration_seconds_sum", labels)] == pytest.approx(10, abs=0.01)
    assert m[("unlearn_job_duration_seconds_bucket", (("le", "15.0"), *labels))] == 1
    assert m[("unlearn_job_duration_seconds_bucket", (("le", "5.0"), *labels))] == 0


@pytest.fixture
def restore_logging(sqlite_api: ApiClient) -> Iterator[None]:
    """Reconfigure logging after the test, once capsys has put sys.stderr back.

    Logging binds sys.stderr when it is configured: restored while capsys is active, every later
    test would log into capsys's closed stream, and a structlog call (inside a transaction, in
    the reconciler thread...) would raise ValueError. Requested before capsys, so torn down after.
    """
    yield
    from service.ops.logging import configure_logging

    configure_logging(sqlite_api.settings, force=True)


def test_access_log_lines_carry_the_request_id(sqlite_api: ApiClient, restore_logging, capsys) -> None:
    from service.ops.logging import configure_logging

    configure_logging(sqlite_api.settings.model_copy(update={"log_level": "INFO"}), force=True)
    capsys.readouterr()
    sqlite_api.get("/v1/models", headers={"X-Request-ID": "req-42"})
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("event") == "request"]
    assert access and access[-1]["request_id"] == "req-42"
    assert access[-1]["route"] == "/v1/models" and access[-1]["status"] == 200
    assert access[-1]["key_id"].startswith("key_")


def test_openapi_lists_the_contract(sqlite_api: ApiClient) -> None:
    spec = sqlite_api.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/models",
        "/v1/models/{name}",
        "/v1/models/{name}/versions",
        "/v1/models/{name}/versions/{v}",
        "/v1/models/{name}/versions/{v}/checkpoint",
        "/v1/audit",
        "/v1/audit/verify",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path


def test_reconciler_thread_runs_with_the_api(tmp_path, shared_sqlite_url: str) -> None:
    import threading

    def running() -> bool:
        return any(t.name == "reconciler" and t.is_alive() for t in threading.enumerate())

    assert not running()
    # An app of its own (the thread starts and stops with it), on the session's database.
    settings = make_settings(
        tmp_path, database_url=shared_sqlite_url, run_reconciler_in_api=True, reconcile_interval_seconds=0.2
    )
    client = start_api(settings)
    try:
        assert running()
    finally:
        client.__exit__(None, None, None)
    assert not running()
