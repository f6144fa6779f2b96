"""What the in-process job tests share: a publisher that records messages, and a model, a
deletion request and a job row made or read through the API's own context."""

from __future__ import annotations

from typing import Any

from service.db import session_scope
from service.tables import Job
from tests.service_fixtures import ApiClient, make_checkpoint, make_dataset


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((topic, payload))

    def job_ids(self) -> list[str]:
        return [p["job_id"] for _, p in self.sent]


def register_model(api: ApiClient, name: str = "m", *, n_eval: int = 64) -> str:
    """A model with one version (the test MLP) and an eval set of ``n_eval`` samples."""
    api.create_model(name)
    r = api.upload_version(name, make_checkpoint(), eval_set=make_dataset(n_eval, seed=1))
    assert r.status_code == 201, r.text
    return name


def submit(api: ApiClient, model: str, seed: int = 2, *, n_forget: int = 8, **form: str) -> dict[str, Any]:
    """A deletion request of ``n_forget`` uploaded samples; the 202's body."""
    files = {"forget_set": ("f.safetensors", make_dataset(n_forget, seed=seed), "application/octet-stream")}
    r = api.post(f"/v1/models/{model}/deletion-requests", files=files, data=form)
    assert r.status_code == 202, r.text
    return dict(r.json())


def job_row(api: ApiClient, job_id: str) -> Job:
    with session_scope(api.ctx.session_factory) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job
