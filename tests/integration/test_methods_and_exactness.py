"""Every unlearning method, and eventual exactness, through the service with a real Celery worker.

On PostgreSQL + Redis and on the embedded defaults (SQLite + the filesystem broker), a worker
process runs each job. One stack per backend serves the whole module (a worker start and a
migrated database cost seconds, and the machine has two cores): every model the tests use is
registered up front, all trained on version 1 of one registered digits training set, because a
version cannot be uploaded linking a dataset version an erasure has replaced (409). Each test
then erases one subject from its own model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_tensors

import unlearning
from service.storage import content_key
from tests.integration.conftest import Stack
from tests.jobs.test_erasure import ARCH, N_TRAIN, RECIPE, Digits, digits  # noqa: F401  (fixture)
from tests.service_fixtures import make_settings, start_api

# The subject every method erases: its ten samples carry labels of their own (tests/jobs/
# test_erasure.py), which the model can only have memorised, so forgetting them is measurable.
SUBJECT = "user-7"
# The exactness tests erase a second memorised subject, each its own: a by-reference request to
# one model removes the samples from the dataset, and a model that publishes afterwards links the
# dataset's latest version, where a subject another test erased is no longer found (404).
SECOND_SUBJECT = "user-3"
THIRD_SUBJECT = "user-1"
METHODS = unlearning.list_methods()  # a method registered later is covered without an edit
EXACT_MODEL = "exact"
EXACT_RETRAIN_MODEL = "exact-retrain"  # eventual exactness, erased by an exact retrain first
PLAIN_MODEL = "plain"  # no registered training data
DEFAULT_MODEL = "default"
JOB_TIMEOUT = 150.0


def _model(method: str) -> str:
    return f"m-{method}"


def _register(stack: Stack, digits: Digits) -> None:  # noqa: F811
    """The training set, then one model per method (and the default's, the exactness test's)
    whose version 1 names it and the recipe, and one model without registered data."""
    api = stack.api
    assert api.post("/v1/datasets", json={"name": "train", "task": "classification"}).status_code == 201
    r = api.post("/v1/datasets/train/versions", files={"data": ("t.npz", digits.train_npz())})
    assert r.status_code == 201, r.text
    checkpoint, eval_blob = digits.checkpoint(0), digits.eval_blob()
    for name in [*map(_model, METHODS), DEFAULT_MODEL, EXACT_MODEL, EXACT_RETRAIN_MODEL]:
        api.create_model(name, ARCH)
        r = api.post(
            f"/v1/models/{name}/versions",
            files={"checkpoint": ("m", checkpoint), "eval_set": ("e", eval_blob)},
            data={"dataset": "train", "dataset_version": "1", "recipe": json.dumps(RECIPE)},
        )
        assert r.status_code == 201 and r.json()["training_data"] == {"dataset": "train", "version": 1}, (
            r.text
        )
    api.create_model(PLAIN_MODEL, ARCH)
    assert api.upload_version(PLAIN_MODEL, checkpoint, eval_blob).status_code == 201


@pytest.fixture(scope="module", params=["postgres", "embedded"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    digits: Digits,  # noqa: F811
) -> Iterator[Stack]:
    """The API in-process and one worker process on one backend, for the whole module.

    PostgreSQL: a database of the module's own, copied from the session's migrated template,
    and the session's Redis database (flushed before and after). Embedded: a copy of the
    migrated SQLite template and the filesystem broker."""
    from tests.service_fixtures import _sqlite_copy, _template_name

    tmp = tmp_path_factory.mktemp(f"methods-{request.param}")
    with contextlib.ExitStack() as cleanup:
        urls: dict[str, str] = {}
        if request.param == "postgres":
            import redis

            from tests.conftest import REDIS_HOST, REDIS_PORT

            admin = request.getfixturevalue("postgres_admin")
            template = request.getfixturevalue("postgres_template")
            name = admin.create("unlearn_test_methods", template=_template_name(template))
            cleanup.callback(admin.drop, name)
            db = request.getfixturevalue("redis_db")
            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
            cleanup.callback(client.close)
            client.flushdb()
            cleanup.callback(client.flushdb)
            urls = {"database_url": admin.url(name), "broker_url": f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"}
        else:
            template = request.getfixturevalue("sqlite_template")
            urls = {"database_url": _sqlite_copy(template, tmp / "unlearn.db")}
        settings = make_settings(tmp, **urls)
        st = Stack(settings=settings, api=start_api(settings), tmp_path=tmp)
        cleanup.callback(st.api.__exit__, None, None, None)
        cleanup.callback(st.stop_all)  # callbacks run last in, first out: workers first
        _register(st, digits)
        st.start_worker("w").wait_ready()
        yield st


def _wait_job(stack: Stack, job_id: str) -> dict[str, Any]:
    job = stack.wait_job(job_id, timeout=JOB_TIMEOUT)
    assert job["status"] == "succeeded", job
    return job


def _erase(stack: Stack, model: str, subject: str = SUBJECT, **run: Any) -> dict[str, Any]:
    r = stack.api.post(f"/v1/models/{model}/deletion-requests", json={"subject": subject, **run})
    assert r.status_code == 202, r.text
    assert r.json()["by_reference"] is True
    return r.json()


def _check_published(stack: Stack, model: str, req: dict[str, Any], job: dict[str, Any], method: str) -> None:
    """The request completed in version 2 with ``method``, and every answer says so."""
    api = stack.api
    assert job["method"] == method and job["result_version"] == 2 and job["base_version"] == 1, job
    assert job["deletion_requests"] == [req["id"]]
    done = api.get(f"/v1/deletion-requests/{req['id']}").json()
    assert done["status"] == "completed" and done["method"] == method and done["result_version"] == 2, done
    stage = "exact" if method == "retrain" else "approximate"
    assert done["stages"] == [{"stage": stage, "version": 2}]
    v2 = api.get(f"/v1/models/{model}/versions/2").json()
    assert v2["created_by_job"] == job["id"] and v2["parent_version"] == 1 and v2["status"] == "ready"
    assert method in v2["description"]
    # The new version links the data without the subject, and keeps the recipe.
    assert v2["training_data"]["dataset"] == "train" and v2["training_data"]["version"] >= 2
    assert v2["recipe"] == api.get(f"/v1/models/{model}/versions/1").json()["recipe"]
    data = api.get(f"/v1/datasets/train/versions/{v2['training_data']['version']}").json()
    assert data["n_samples"] <= N_TRAIN - 10
    assert api.get(f"/v1/models/{model}/versions/1/checkpoint").status_code == 410
    ckpt = api.get(f"/v1/models/{model}/versions/2/checkpoint")
    assert ckpt.status_code == 200 and hashlib.sha256(ckpt.content).hexdigest() == v2["sha256"]
    receipt = api.get(f"/v1/deletion-requests/{req['id']}/receipt").json()
    assert receipt["method"] == method and receipt["method_reason"] == job["method_reason"]
    assert receipt["exactness"] == {"stage": stage, "stages": done["stages"]}
    assert receipt["model_versions"]["after"]["version"] == 2 and receipt["retired_versions"] == [1]
    assert receipt["n_samples"] == 10 and len(receipt["sample_digests"]) == 10
    assert receipt["policy"]["accepted"] is True, receipt["policy"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_through_the_service(stack: Stack, method: str) -> None:
    model = _model(method)
    # The default acceptance policy: every registered method passes it on this problem.
    req = _erase(stack, model, method=method)
    assert req["method"] == method and req["status"] == "queued"
    job = _wait_job(stack, req["job_id"])
    assert job["method_reason"] == "asked for by the request"
    _check_published(stack, model, req, job, method)
    # The engine's report names the method that ran, and the new checkpoint differs from v1's
    # exactly when the method moved the parameters. (On ten memorised samples the retain-free
    # ascent methods may find the forget set already within noise of unseen data, by the sized
    # margins, and take no step: the policy accepts that, and so does this test.)
    metrics = job["metrics"]
    assert metrics["method"] == method
    v1, v2 = (stack.api.get(f"/v1/models/{model}/versions/{v}").json() for v in (1, 2))
    moved = v1["sha256"] != v2["sha256"]
    assert moved == (metrics["param_l2_change"] > 0), metrics["param_l2_change"]
    # No method makes the model recognise the forget set better than before.
    assert metrics["after"]["forget_accuracy"] <= metrics["before"]["forget_accuracy"]
    if method == "retrain":
        # Exact: retrained without the subject, the model never saw its memorised labels.
        assert metrics["after"]["forget_accuracy"] < 0.5, metrics["after"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_default_method_follows_what_is_registered(stack: Stack, digits: Digits) -> None:  # noqa: F811
    settings = stack.settings
    # Registered training data: the retain-aware default, and the job says why.
    req = _erase(stack, DEFAULT_MODEL)
    job = _wait_job(stack, req["job_id"])
    assert job["method"] == settings.default_retain_method
    assert job["method_reason"].startswith("default: the model's training data is registered"), job
    _check_published(stack, DEFAULT_MODEL, req, job, settings.default_retain_method)
    # No registered data (the samples uploaded): the retain-free default, and why.
    index = [i for i in range(N_TRAIN) if digits.subjects[i] == SUBJECT]
    r = stack.submit(PLAIN_MODEL, samples=digits_samples(digits, index), subject=SUBJECT)
    assert r.status_code == 202 and r.json()["by_reference"] is False, r.text
    job = _wait_job(stack, r.json()["job_id"])
    assert job["method"] == settings.default_method
    assert job["method_reason"].startswith("default: no registered training data"), job
    receipt = stack.api.get(f"/v1/deletion-requests/{r.json()['id']}/receipt").json()
    assert receipt["method"] == settings.default_method and receipt["method_reason"] == job["method_reason"]


def digits_samples(digits: Digits, index: list[int]) -> dict[str, list[Any]]:  # noqa: F811
    return {"inputs": digits.x[index].tolist(), "labels": digits.y[index].tolist()}


def _eval_set(digits: Digits) -> dict[str, torch.Tensor]:  # noqa: F811
    return load_tensors(digits.eval_blob())


def _net(blob: bytes) -> torch.nn.Module:
    net = unlearning.build_model(ARCH)
    unlearning.load_checkpoint(net, blob)
    return net.eval()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_eventual_exactness_with_a_worker(stack: Stack, digits: Digits) -> None:  # noqa: F811
    api = stack.api
    r = api.patch(f"/v1/models/{EXACT_MODEL}", json={"exactness": {"after_erasures": 2}})
    assert r.status_code == 200 and r.json()["exactness"] == {"after_erasures": 2}, r.text

    # First erasure: approximately forgotten in v2; one erasure is not yet due.
    first = _erase(stack, EXACT_MODEL)
    _wait_job(stack, first["job_id"])
    jobs = api.get("/v1/jobs", params={"model": EXACT_MODEL}).json()["items"]
    assert [j["kind"] for j in jobs] == ["unlearn"], "no exact retrain after one erasure of two"

    # Second erasure: approximately forgotten in v3, which makes the exact retrain due; the
    # worker runs it by itself (the publish queued it) and publishes v4.
    second = _erase(stack, EXACT_MODEL, SECOND_SUBJECT)
    _wait_job(stack, second["job_id"])
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        jobs = api.get("/v1/jobs", params={"model": EXACT_MODEL}).json()["items"]
        train = [j for j in jobs if j["kind"] == "train"]
        if train:
            break
        assert time.monotonic() < deadline, f"no exact retrain was queued: {jobs}"
        time.sleep(0.3)
    [exact_job] = train
    assert exact_job["reason"] == "exactness" and exact_job["base_version"] in (None, 3), exact_job
    exact_job = _wait_job(stack, exact_job["id"])
    assert exact_job["base_version"] == 3 and exact_job["result_version"] == 4, exact_job

    # Each request shows both stages: approximately forgotten in vN, exactly erased in v4.
    for req, approx in ((first, 2), (second, 3)):
        done = api.get(f"/v1/deletion-requests/{req['id']}").json()
        assert done["stages"] == [
            {"stage": "approximate", "version": approx},
            {"stage": "exact", "version": 4},
        ]
        assert done["exact_version"] == 4
    # The model's history: v4 retrained on the data without both subjects, with the recipe; the
    # approximate versions retired (they still carry some influence of what they forgot).
    history = {v["version"]: v for v in api.get(f"/v1/models/{EXACT_MODEL}/versions").json()["items"]}
    assert sorted(history) == [1, 2, 3, 4]
    v4 = history[4]
    assert (
        v4["status"] == "ready"
        and v4["created_by_job"] == exact_job["id"]
        and v4["recipe"] == history[1]["recipe"]
    )
    data = api.get(f"/v1/datasets/train/versions/{v4['training_data']['version']}").json()
    assert data["n_samples"] <= N_TRAIN - 20, "retrained without either subject"
    assert v4["metrics"]["n_train"] == data["n_samples"]
    for v in (1, 2, 3):
        assert history[v]["status"] == "retired" and history[v]["retired_reason"] == "erasure", history[v]

    # The gap is computed from the two versions: recompute it from their bytes. The approximate
    # v3 is retired (410), so its bytes come from the service's content-addressed store while
    # the retired-checkpoint grace period keeps them, checked against the version's sha256.
    gap = v4["metrics"]["approximate_vs_exact"]
    assert exact_job["metrics"]["approximate_vs_exact"] == gap
    v3_blob = api.ctx.storage.read_bytes(content_key("checkpoints", history[3]["sha256"]))
    assert hashlib.sha256(v3_blob).hexdigest() == history[3]["sha256"]
    v4_blob = api.get(f"/v1/models/{EXACT_MODEL}/versions/4/checkpoint").content
    assert hashlib.sha256(v4_blob).hexdigest() == v4["sha256"]
    ev = _eval_set(digits)
    with torch.no_grad():
        pa, pe = _net(v3_blob)(ev["inputs"]).argmax(-1), _net(v4_blob)(ev["inputs"]).argmax(-1)
    acc_a = float((pa == ev["labels"]).double().mean())
    acc_e = float((pe == ev["labels"]).double().mean())
    assert gap["agreement"] == pytest.approx(float((pa == pe).double().mean()), abs=1e-9)
    assert gap["approximate"]["accuracy"] == pytest.approx(acc_a, abs=1e-9)
    assert gap["exact"]["accuracy"] == pytest.approx(acc_e, abs=1e-9)
    assert gap["eval_accuracy_gap_points"] == pytest.approx(100 * abs(acc_a - acc_e), abs=1e-6)
    assert v4["metrics"]["eval"]["accuracy"] == pytest.approx(acc_e, abs=1e-9)
    # The exact version never saw the subjects' memorised labels: it does not reproduce them.
    erased = [i for i in range(N_TRAIN) if digits.subjects[i] in (SUBJECT, SECOND_SUBJECT)]
    with torch.no_grad():
        hits = _net(v4_blob)(digits.x[erased]).argmax(-1) == digits.y[erased]
    assert float(hits.double().mean()) < 0.5, hits


def _train_jobs(stack: Stack, model: str) -> list[dict[str, Any]]:
    return [
        j for j in stack.api.get("/v1/jobs", params={"model": model}).json()["items"] if j["kind"] == "train"
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_exact_erasure_does_not_count_toward_exactness(stack: Stack) -> None:
    """A request run with ``retrain`` is exact already: it neither makes an exact retrain due nor
    is marked as erased again by a later one."""
    api = stack.api
    r = api.patch(f"/v1/models/{EXACT_RETRAIN_MODEL}", json={"exactness": {"after_erasures": 1}})
    assert r.status_code == 200, r.text
    exact = _erase(stack, EXACT_RETRAIN_MODEL, method="retrain")
    _wait_job(stack, exact["job_id"])
    # The publish that completed it would have queued the retrain in its own transaction.
    assert _train_jobs(stack, EXACT_RETRAIN_MODEL) == []
    # An approximate erasure after it is due at once (N = 1), and only it is made exact.
    # What counts toward exactness is under test here, not the default method's quality: on this
    # 10-sample subject neggrad_plus (the default with registered data) over-forgets, and its
    # eval-accuracy drop on the 98-sample check half sits around the default 0.05 budget (0.08
    # seen), moved by its retain sample, which this module's earlier erasures change. A wider
    # budget keeps the test about bookkeeping.
    approx = _erase(stack, EXACT_RETRAIN_MODEL, THIRD_SUBJECT, policy={"max_eval_accuracy_drop": 0.25})
    _wait_job(stack, approx["job_id"])
    [train] = _train_jobs(stack, EXACT_RETRAIN_MODEL)
    assert _wait_job(stack, train["id"])["result_version"] == 4
    stages = {r: api.get(f"/v1/deletion-requests/{r}").json()["stages"] for r in (exact["id"], approx["id"])}
    assert stages == {
        exact["id"]: [{"stage": "exact", "version": 2}],
        approx["id"]: [{"stage": "approximate", "version": 3}, {"stage": "exact", "version": 4}],
    }
