"""Lineage across models that share a training set: a request on one model by reference erases the
samples from that model's lineage, never from another model's. In-process on SQLite and PostgreSQL
(the real runner and reconciler, the embedded broker that nobody consumes).

Models A and B are both trained on dataset version 1. A forgets subject X, then B forgets subject
Y: B's new version must link a dataset version that still holds X (B was trained on X and never
forgot it), X can then be erased from B by reference, and the shards holding X are deleted only
once neither model links a version holding them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.datasets import index
from service.db import session_scope
from service.jobs.runner import run_job
from service.jobs.states import RunOutcome
from service.reconciler import reconcile_once
from service.tables import Dataset, DatasetShard, DatasetVersion
from tests.jobs.test_erasure import N_TRAIN, Digits, _setup, digits  # noqa: F401  (fixture)
from tests.service_fixtures import ApiClient, AppPool, make_settings

X, Y = "user-3", "user-7"  # digits' subjects: rows i with i % 40 == 3 (and 7), 10 of each
X_IDS = [f"s{i}" for i in range(N_TRAIN) if i % 40 == 3]
Y_IDS = [f"s{i}" for i in range(N_TRAIN) if i % 40 == 7]


@pytest.fixture
def api(tmp_path: Path, db_url: str, app_pool: AppPool) -> Iterator[ApiClient]:
    # Four shards of 100 samples: every subject has samples in each of them.
    settings = make_settings(
        tmp_path,
        database_url=db_url,
        retired_checkpoint_grace_seconds=0.0,
        erased_data_grace_seconds=0.0,
        dataset_shard_samples=100,
    )
    with app_pool.client(settings, tmp_path) as client:
        yield client


def _forget(api: ApiClient, model: str, subject: str) -> dict[str, Any]:
    r = api.post(f"/v1/models/{model}/deletion-requests", json={"subject": subject})
    assert r.status_code == 202, r.text
    outcome = run_job(api.ctx, r.json()["job_id"], "w1")
    assert outcome == RunOutcome.SUCCEEDED, api.get(f"/v1/jobs/{r.json()['job_id']}").json()["error"]
    done = api.get(f"/v1/deletion-requests/{r.json()['id']}").json()
    assert done["status"] == "completed", done
    return done


def _link(api: ApiClient, model: str) -> int:
    """The dataset version number the model's latest version links."""
    data = api.get(f"/v1/models/{model}/versions/latest").json()["training_data"]
    assert data is not None and data["dataset"] == "train"
    return int(data["version"])


def _holds(api: ApiClient, version: int, ids: list[str]) -> bool:
    """Whether dataset version ``version`` holds every one of ``ids`` (False: none of them)."""
    with session_scope(api.ctx.session_factory) as s:
        dv = s.scalars(
            select(DatasetVersion)
            .join(Dataset)
            .where(Dataset.name == "train", DatasetVersion.version == version)
        ).one()
        n = len(index.positions(s, dv.id, ids))
    assert n in (0, len(ids)), f"version {version} holds {n} of {len(ids)}"
    return n == len(ids)


def _shard_keys_holding(api: ApiClient, ids: list[str]) -> set[str]:
    """The storage keys of every listed shard (of any version not purged) holding one of ``ids``."""
    keys: set[str] = set()
    with session_scope(api.ctx.session_factory) as s:
        for dv in s.scalars(select(DatasetVersion)):
            shard_numbers = {shard for shard, _row in index.positions(s, dv.id, ids).values()}
            if shard_numbers:
                keys.update(
                    s.scalars(
                        select(DatasetShard.storage_key).where(
                            DatasetShard.dataset_version_id == dv.id, DatasetShard.shard.in_(shard_numbers)
                        )
                    )
                )
    return keys


def _n_versions(api: ApiClient) -> int:
    return len(api.get("/v1/datasets/train/versions").json()["items"])


def test_a_request_on_one_model_never_erases_from_another_models_lineage(
    api: ApiClient,
    digits: Digits,  # noqa: F811
) -> None:
    _setup(api, digits)
    x_keys = _shard_keys_holding(api, X_IDS)
    assert len(x_keys) == 4, "X has samples in each of the four shards"

    # 1. A forgets X: the dataset loses X as version 2, which A links. B still links version 1.
    _forget(api, "a", X)
    assert _link(api, "a") == 2 and not _holds(api, 2, X_IDS) and _holds(api, 2, Y_IDS)
    assert _link(api, "b") == 1
    reconcile_once(api.ctx)
    stored = set(api.ctx.storage.keys("dataset-shards"))
    assert x_keys <= stored, "B's version still links the data holding X"

    # 2. B forgets Y: B's new version links version 1 minus Y, which still holds X (B never forgot
    # X); the dataset's latest version lacks both.
    _forget(api, "b", Y)
    b_link = _link(api, "b")
    assert _holds(api, b_link, X_IDS) and not _holds(api, b_link, Y_IDS)
    assert api.get(f"/v1/datasets/train/versions/{b_link}").json()["n_samples"] == N_TRAIN - 10
    latest = api.get("/v1/datasets/train").json()["latest_version"]
    assert latest != b_link and not _holds(api, latest, X_IDS) and not _holds(api, latest, Y_IDS)
    assert _link(api, "a") == 2, "A's lineage is untouched by B's request"
    reconcile_once(api.ctx)
    x_keys |= _shard_keys_holding(api, X_IDS)
    stored = set(api.ctx.storage.keys("dataset-shards"))
    assert _shard_keys_holding(api, X_IDS) <= stored, "B links a version holding X: its shards stay"

    # 3. X is found in B's training data (not in the dataset's latest version) and erased from B:
    # B's next version links the version without X and Y, which exists already (the latest).
    n_versions = _n_versions(api)
    _forget(api, "b", X)
    assert _link(api, "b") == latest and _n_versions(api) == n_versions, "an equal version is reused"
    reconcile_once(api.ctx)
    # Neither A nor B links a version holding X any more: every shard that held X is gone.
    assert _shard_keys_holding(api, X_IDS) == set()
    assert x_keys.isdisjoint(api.ctx.storage.keys("dataset-shards"))
    for model in ("a", "b"):  # every version each model links can still be read
        assert api.get(f"/v1/datasets/train/versions/{_link(api, model)}").json()["status"] != "purged"
    assert api.get("/v1/audit/verify").json()["ok"] is True


def test_a_dataset_erasure_still_fans_out_to_every_model(
    api: ApiClient,
    digits: Digits,  # noqa: F811
) -> None:
    _setup(api, digits)
    r = api.post("/v1/datasets/train/erasures", json={"subject": Y})
    assert r.status_code == 202, r.text
    erasure = r.json()
    assert sorted(d["model"] for d in erasure["deletion_requests"]) == ["a", "b"]
    for d in erasure["deletion_requests"]:
        assert run_job(api.ctx, d["job_id"], "w1") == RunOutcome.SUCCEEDED
    done = api.get(f"/v1/erasures/{erasure['id']}").json()
    assert done["status"] == "completed" and done["result_dataset_version"] == 2
    # One new dataset version, linked by both models: nothing made for either lineage alone.
    assert _link(api, "a") == _link(api, "b") == 2 and _n_versions(api) == 2
    assert not _holds(api, 2, Y_IDS) and _holds(api, 2, X_IDS)
    reconcile_once(api.ctx)
    assert _shard_keys_holding(api, Y_IDS) == set()
    assert api.get("/v1/datasets/train/versions/1").json()["status"] == "purged"


def test_a_dataset_erasure_after_a_model_request_keeps_each_lineage(
    api: ApiClient,
    digits: Digits,  # noqa: F811
) -> None:
    _setup(api, digits)
    _forget(api, "a", X)  # A links version 2 (without X), B version 1
    r = api.post("/v1/datasets/train/erasures", json={"subject": Y})
    assert r.status_code == 202, r.text
    for d in r.json()["deletion_requests"]:
        assert run_job(api.ctx, d["job_id"], "w1") == RunOutcome.SUCCEEDED
    assert api.get(f"/v1/erasures/{r.json()['id']}").json()["status"] == "completed"
    a_link, b_link = _link(api, "a"), _link(api, "b")
    assert a_link == api.get("/v1/datasets/train").json()["latest_version"]
    assert not _holds(api, a_link, X_IDS) and not _holds(api, a_link, Y_IDS)
    assert _holds(api, b_link, X_IDS) and not _holds(api, b_link, Y_IDS)


def test_a_dataset_erasure_finds_a_subject_a_model_request_already_erased_from_the_latest(
    api: ApiClient,
    digits: Digits,  # noqa: F811
) -> None:
    """ "Erase X everywhere" reaches every model still holding X, though the dataset's latest
    version lost X to a request on one model: X is looked up in the versions models link too."""
    _setup(api, digits)
    x_keys = _shard_keys_holding(api, X_IDS)
    _forget(api, "a", X)  # the latest (2) lacks X; A links it, B still links 1
    assert not _holds(api, 2, X_IDS) and _link(api, "b") == 1

    r = api.post("/v1/datasets/train/erasures", json={"subject": X}, headers={"Idempotency-Key": "x"})
    assert r.status_code == 202, r.text
    erasure = r.json()
    assert [d["model"] for d in erasure["deletion_requests"]] == ["b"], "A forgot X already"
    assert erasure["n_samples"] == 10 and erasure["outcome"] is None
    # The dataset's latest version (2) already lacks X: it is both the version before and after.
    assert erasure["dataset_version"] == 2 and erasure["result_dataset_version"] == 2
    again = api.post("/v1/datasets/train/erasures", json={"subject": X}, headers={"Idempotency-Key": "x"})
    assert again.status_code == 202 and again.json() == erasure
    # By sample ids too (a few of X's): the same fan-out, B only.
    by_ids = api.post("/v1/datasets/train/erasures", json={"sample_ids": X_IDS[:3]})
    assert by_ids.status_code == 202, by_ids.text
    assert [d["model"] for d in by_ids.json()["deletion_requests"]] == ["b"]
    assert by_ids.json()["n_samples"] == 3

    [request] = erasure["deletion_requests"]
    assert run_job(api.ctx, request["job_id"], "w1") == RunOutcome.SUCCEEDED
    done = api.get(f"/v1/erasures/{erasure['id']}").json()
    assert done["status"] == "completed", done
    assert by_ids.json()["deletion_requests"][0]["job_id"] == request["job_id"], "one batch on B's queue"
    assert api.get(f"/v1/erasures/{by_ids.json()['id']}").json()["status"] == "completed"
    assert _link(api, "b") == 2 and _n_versions(api) == 2, "1 - X equals 2: reused"
    receipt = api.get(f"/v1/erasures/{erasure['id']}/receipt").json()
    data = receipt["training_data"]
    assert data["before"]["version"] == 2 and data["after"]["version"] == 2
    assert [v["version"] for v in data["lineage"]] == [1] and data["lineage"][0]["n_samples"] == N_TRAIN
    assert [m["model"] for m in receipt["models"]] == ["b"]

    # No ready model version links a version holding X any more: every shard that held X goes.
    reconcile_once(api.ctx)
    assert api.get("/v1/datasets/train/versions/1").json()["status"] == "purged"
    assert _shard_keys_holding(api, X_IDS) == set()
    assert x_keys.isdisjoint(api.ctx.storage.keys("dataset-shards"))

    # Now no model holds X and the data lacks it: a no-op that says so; an unknown subject is 404.
    r = api.post("/v1/datasets/train/erasures", json={"subject": X})
    assert r.status_code == 200 and r.json()["outcome"] == "already_erased", r.text
    assert r.json()["deletion_requests"] == []
    r = api.post("/v1/datasets/train/erasures", json={"sample_ids": X_IDS[:2]})
    assert r.status_code == 200 and r.json()["outcome"] == "already_erased", r.text
    assert api.post("/v1/datasets/train/erasures", json={"subject": "user-999"}).status_code == 404
    r = api.post("/v1/datasets/train/erasures", json={"sample_ids": ["nope"]})
    assert r.status_code == 422 and r.json()["missing_sample_ids"] == ["nope"]
    assert api.get("/v1/audit/verify").json()["ok"] is True


def test_a_dataset_erasure_already_erased_by_model_requests_is_a_no_op(
    api: ApiClient,
    digits: Digits,  # noqa: F811
) -> None:
    """Both models forgot X by requests on each: no erasure was ever made, yet the answer is the
    no-op "already_erased", not a 404."""
    _setup(api, digits)
    _forget(api, "a", X)
    _forget(api, "b", X)
    r = api.post("/v1/datasets/train/erasures", json={"subject": X})
    assert r.status_code == 200 and r.json()["outcome"] == "already_erased", r.text
    assert r.json()["deletion_requests"] == [] and r.json()["status"] == "completed"


def test_a_dataset_erasure_by_ids_asks_each_model_for_what_its_data_holds(
    api: ApiClient,
    digits: Digits,  # noqa: F811
) -> None:
    _setup(api, digits)
    _forget(api, "a", X)  # A's data lacks X's samples, B's holds them
    r = api.post("/v1/datasets/train/erasures", json={"sample_ids": [X_IDS[0], Y_IDS[0]]})
    assert r.status_code == 202, r.text
    assert r.json()["n_samples"] == 2
    asked = {
        d["model"]: api.get(f"/v1/deletion-requests/{d['id']}").json()["n_samples"]
        for d in r.json()["deletion_requests"]
    }
    assert asked == {"a": 1, "b": 2}
