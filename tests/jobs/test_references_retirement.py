"""Reference sets hold the samples they were trained on, so an erasure retires them.

On SQLite and PostgreSQL (``db_url``), jobs run by the test; the data and model are
tests/jobs/test_references.py's. A subject erasure across two models, each with a reference set
of its own: each model's deletion job still runs its LiRA test against its set, and its publish
retires the set (an audit event, the set's metrics say when and by which job); the checkpoints and
the membership blob leave storage after the commit (a blob two sets share only with the last).
The next job on the model finds no usable set and says why; a set built from the new dataset
version serves again. An erasure that no model's job carries (the data erased at once) retires
the sets too.
"""

from __future__ import annotations

from typing import Any

import pytest
from safetensors.torch import save
from sqlalchemy import select

from service.db import session_scope
from service.jobs.runner import run_job
from service.jobs.states import RunOutcome
from service.reconciler import reconcile_once
from service.tables import AuditEvent, Job, Model
from tests.jobs.helpers import job_row
from tests.jobs.test_references import (
    N_TRAIN,
    K,
    _build_references,
    _data,
    _register,
    api,
)
from tests.service_fixtures import ApiClient

__all__ = ["api"]


def _keys(metrics: dict[str, Any]) -> set[str]:
    return {*metrics["checkpoints"], metrics["membership_key"]}


def _set_id(api: ApiClient, model: str) -> str:
    """The model's newest finished references job."""
    with session_scope(api.ctx.session_factory) as s:
        row = s.scalars(
            select(Job)
            .join(Model, Model.id == Job.model_id)
            .where(Model.name == model, Job.kind == "references", Job.status == "succeeded")
            .order_by(Job.finished_at.desc())
        ).first()
        assert row is not None
        return row.id


def _events(api: ApiClient, action: str) -> list[AuditEvent]:
    with session_scope(api.ctx.session_factory) as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def test_a_subject_erasure_retires_and_deletes_the_reference_sets_after_their_tests(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register(api, "a")
    _register(api, "b")
    set_a, set_b = _build_references(api, "a"), _build_references(api, "b")
    id_a, id_b = _set_id(api, "a"), _set_id(api, "b")
    storage = api.ctx.storage
    assert all(storage.exists(k) for k in _keys(set_a) | _keys(set_b))

    r = api.post("/v1/datasets/train/erasures", json={"subject": "user-7"})
    assert r.status_code == 202, r.text
    jobs = {d["model"]: d["job_id"] for d in r.json()["deletion_requests"]}
    assert set(jobs) == {"a", "b"}

    # Model a's job: tested against a's set (before anything is purged), then its publish retires it.
    assert run_job(api.ctx, jobs["a"], "w1") == RunOutcome.SUCCEEDED, job_row(api, jobs["a"]).error
    metrics = job_row(api, jobs["a"]).metrics
    assert metrics is not None
    assert metrics["lira"]["references_job"] == id_a and metrics["lira"]["n_members"] == 10
    assert metrics["references_retired"] == [id_a]
    retired = job_row(api, id_a).metrics["retired"]  # type: ignore[index]
    assert retired["reason"] == "erasure" and retired["job_id"] == jobs["a"]
    assert retired["erasure_ids"] == [r.json()["id"]] and retired["dataset_version"] == 1
    assert retired["blobs_deleted_at"]
    # b's own erasure has not published: its set stays for its test, and so do blobs it shares.
    assert "retired" not in (job_row(api, id_b).metrics or {})
    assert all(storage.exists(k) for k in _keys(set_b))
    assert not any(storage.exists(k) for k in _keys(set_a) - _keys(set_b))
    # Its model's data was replaced: no new set can be built on it now.
    conflict = api.post("/v1/models/b/references", json={"k": K})
    assert conflict.status_code == 409 and "erasure" in conflict.json()["detail"]

    # Model b's job: tested against b's set; its publish retires it. The after-commit delete
    # fails here (storage down): the set is retired, and the reconciler deletes its blobs.
    def down(key: str) -> None:
        raise OSError("storage unavailable")

    monkeypatch.setattr(storage, "delete", down)
    assert run_job(api.ctx, jobs["b"], "w1") == RunOutcome.SUCCEEDED, job_row(api, jobs["b"]).error
    metrics = job_row(api, jobs["b"]).metrics
    assert metrics is not None and metrics["lira"]["references_job"] == id_b
    assert metrics["references_retired"] == [id_b]
    assert "blobs_deleted_at" not in job_row(api, id_b).metrics["retired"]  # type: ignore[index]
    assert all(storage.exists(k) for k in _keys(set_b))
    monkeypatch.undo()
    assert reconcile_once(api.ctx)["reference_sets_purged"] == 1
    assert not any(storage.exists(k) for k in _keys(set_a) | _keys(set_b)), "erased data left in storage"
    assert job_row(api, id_b).metrics["retired"]["blobs_deleted_at"]  # type: ignore[index]
    assert reconcile_once(api.ctx)["reference_sets_purged"] == 0

    # The audit chain records both retirements and deletions, and still verifies.
    # The erasure's receipt names, per model, the per-example test and the retired reference set.
    receipt = api.get(f"/v1/erasures/{r.json()['id']}/receipt").json()
    by_model = {m["model"]: m for m in receipt["models"]}
    assert by_model["a"]["references_retired"] == [id_a] and by_model["b"]["references_retired"] == [id_b]
    assert by_model["a"]["verification"]["lira"]["references_job"] == id_a
    assert "mia_two_sided" in by_model["a"]["verification"]
    assert [e.object_id for e in _events(api, "references.retired")] == [id_a, id_b]
    assert {e.object_id for e in _events(api, "references.deleted")} == {id_a, id_b}
    assert all(e.payload["job_id"] in jobs.values() for e in _events(api, "references.retired"))
    assert api.get("/v1/audit/verify").json()["ok"] is True

    # The next job on a finds no usable set: a policy that requires LiRA fails, saying why.
    r = api.post(
        "/v1/models/a/deletion-requests", json={"subject": "user-3", "policy": {"max_lira_tpr": 1.0}}
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert run_job(api.ctx, job_id, "w1") == RunOutcome.FAILED
    job = job_row(api, job_id)
    assert job.error is not None and job.metrics is not None
    reason = job.error["checks"]["lira"]["reason"]
    assert "retired by an erasure" in reason and jobs["a"] in reason and "/v1/models/a/references" in reason
    assert job.metrics["lira"]["references_job"] == id_a
    assert job.metrics["lira"]["references_retired"]["job_id"] == jobs["a"]

    # A new set from the current data (dataset version 2) serves the next job.
    fresh = _build_references(api, "a")
    assert fresh["n_samples"] == N_TRAIN - 10 and not _keys(fresh) & (_keys(set_a) | _keys(set_b))
    r = api.post("/v1/models/a/deletion-requests", json={"subject": "user-3"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert run_job(api.ctx, job_id, "w1") == RunOutcome.SUCCEEDED, job_row(api, job_id).error
    metrics = job_row(api, job_id).metrics
    assert metrics is not None and metrics["lira"]["n_members"] == 10
    fresh_id = metrics["lira"]["references_job"]
    assert fresh_id not in (id_a, id_b)
    # ... and that erasure (user-3 was in dataset version 2 too) retires the new set in turn.
    assert metrics["references_retired"] == [fresh_id]
    assert not any(storage.exists(k) for k in _keys(fresh))
    assert api.get("/v1/audit/verify").json()["ok"] is True


def test_an_erasure_no_model_carries_retires_the_sets_at_once(api: ApiClient) -> None:
    _register(api, "a")
    refs = _build_references(api, "a")
    set_id = _set_id(api, "a")
    # Version 2 of a is no longer trained on the registered data: no model holds the samples.
    d = _data()
    ev = save({"inputs": d["x"][N_TRAIN:].contiguous(), "labels": d["y"][N_TRAIN:].contiguous()})
    r = api.post("/v1/models/a/versions", files={"checkpoint": ("m", d["checkpoint"]), "eval_set": ("e", ev)})
    assert r.status_code == 201, r.text
    r = api.post("/v1/datasets/train/erasures", json={"subject": "user-7"})
    assert r.status_code in (200, 202), r.text
    assert r.json()["deletion_requests"] == [] and r.json()["result_dataset_version"] == 2
    retired = job_row(api, set_id).metrics["retired"]  # type: ignore[index]
    assert retired["job_id"] is None and retired["erasure_ids"] == [r.json()["id"]]
    assert retired["blobs_deleted_at"]
    assert not any(api.ctx.storage.exists(k) for k in _keys(refs))
    assert [e.object_id for e in _events(api, "references.retired")] == [set_id]
    assert api.get("/v1/audit/verify").json()["ok"] is True


def _forget(api: ApiClient, model: str, subject: str) -> dict[str, Any]:
    """A request on one model by reference, run to its publish; the job's metrics."""
    r = api.post(f"/v1/models/{model}/deletion-requests", json={"subject": subject})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert run_job(api.ctx, job_id, "w1") == RunOutcome.SUCCEEDED, job_row(api, job_id).error
    metrics = job_row(api, job_id).metrics
    assert metrics is not None
    return {**metrics, "job_id": job_id}


def _retired_by(api: ApiClient, set_id: str) -> str | None:
    retired = (job_row(api, set_id).metrics or {}).get("retired")
    return None if retired is None else str(retired["job_id"])


def test_a_set_retires_when_its_models_erasure_publishes_whatever_the_link(api: ApiClient) -> None:
    """Lineages per model: B keeps linking dataset versions that were replaced (retired), yet its
    set trained on the samples B forgets is retired by B's publish, and no set earlier.

    A and B are trained on version 1 (X and Y in it), each with a set on it. A forgets X (the
    latest becomes 2 = 1 - X, A links it; B still links 1): A's set goes, B's stays (B still holds
    X and tests against it). A builds a new set on 2 (holds Y). B forgets Y: B links 1 - Y, a
    retired version that still holds X: B's set (which held Y) goes with B's publish; A's new set
    stays (A still holds Y), until A forgets Y."""
    x, y = "user-3", "user-7"
    _register(api, "a")
    _register(api, "b")
    _build_references(api, "a")
    id_a = _set_id(api, "a")
    set_b = _build_references(api, "b")
    id_b = _set_id(api, "b")

    a_x = _forget(api, "a", x)
    assert a_x["references_retired"] == [id_a] and _retired_by(api, id_a) == a_x["job_id"]
    assert _retired_by(api, id_b) is None, "B still holds X: its job tests against its set"
    a2 = _build_references(api, "a")
    assert a2["n_samples"] == N_TRAIN - 10
    id_a2 = _set_id(api, "a")

    b_y = _forget(api, "b", y)
    assert b_y["lira"]["references_job"] == id_b, "B's own test ran against its set first"
    b_link = api.get("/v1/models/b/versions/latest").json()["training_data"]["version"]
    assert api.get(f"/v1/datasets/train/versions/{b_link}").json()["status"] == "retired"
    assert b_y["references_retired"] == [id_b] and _retired_by(api, id_b) == b_y["job_id"]
    assert not any(api.ctx.storage.exists(k) for k in _keys(set_b) - _keys(a2))
    assert _retired_by(api, id_a2) is None, "A still holds Y"

    a_y = _forget(api, "a", y)
    assert a_y["lira"]["references_job"] == id_a2
    assert a_y["references_retired"] == [id_a2] and _retired_by(api, id_a2) == a_y["job_id"]
    assert not any(api.ctx.storage.exists(k) for k in _keys(a2))
    assert [e.object_id for e in _events(api, "references.retired")] == [id_a, id_b, id_a2]
    assert api.get("/v1/audit/verify").json()["ok"] is True
