"""Models and their versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from unlearn_client.models.base import ApiModel


class Exactness(ApiModel):
    """A model's eventual exactness: after this many erasures or hours since the first one not
    yet exact, the service retrains the model exactly on the current data (a training job with
    ``reason == "exactness"``)."""

    after_erasures: int | None = None
    after_hours: float | None = None


class Model(ApiModel):
    """A registered model (``ModelOut``); ``exactness`` is None when eventual exactness is off."""

    name: str
    task: str
    architecture: dict[str, Any]
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    latest_version: int | None = None
    exactness: Exactness | None = None
    created_at: datetime
    updated_at: datetime


class EvalSet(ApiModel):
    sha256: str
    n_samples: int | None = None


class TrainingData(ApiModel):
    """The registered training set (and its version) a model version was trained on."""

    dataset: str
    version: int


class Version(ApiModel):
    """A model version (``VersionOut``); ``created_by_job`` is set on versions a job published.

    A version that still holds erased data is retired when the erasing job publishes
    (``status == "retired"``, ``retired_reason == "erasure"``): its checkpoint answers 410 Gone.
    """

    version: int
    sha256: str
    size_bytes: int
    parent_version: int | None = None
    created_by_job: str | None = None
    status: str
    description: str | None = None
    eval_set: EvalSet | None = None
    metrics: dict[str, Any] | None = None
    training_data: TrainingData | None = None
    recipe: dict[str, Any] | None = None
    retired_at: datetime | None = None
    retired_reason: str | None = None
    created_at: datetime


class CheckpointInfo(ApiModel):
    """What ``HEAD .../checkpoint`` says about a checkpoint, without downloading it."""

    sha256: str
    size_bytes: int
    etag: str
    # The numbered version's URL when the request named an alias such as "latest".
    content_location: str | None = None
    # The file name the server suggests (Content-Disposition), e.g. "digits-v2.safetensors".
    filename: str | None = None
