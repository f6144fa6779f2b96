"""The API's routes as the SDK knows them: method, path template (spelled as in the service's
OpenAPI), the model the answer parses into, and how safe a retry is.

One table: the operations build their requests from it, and a test checks it against the
service's OpenAPI both ways (every route has an endpoint here, every endpoint a route, every
model field a schema property).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from unlearn_client.models import (
    ApiKey,
    AuditEvent,
    BulkDeletion,
    ChainStatus,
    ChainVerification,
    CreatedApiKey,
    CreatedWebhook,
    Dataset,
    DatasetVersion,
    DeletionRequest,
    Delivery,
    Erasure,
    Health,
    Job,
    Model,
    Page,
    PublicKey,
    Readiness,
    Receipt,
    SampleDigests,
    SignedDocument,
    Version,
    Webhook,
)
from unlearn_client.spec import RequestSpec, Upload

_SAFE_METHODS = frozenset({"GET", "HEAD", "DELETE"})

R = TypeVar("R")


@dataclass(frozen=True)
class Call(Generic[R]):
    """A request ready to send, and the model its JSON answer parses into."""

    spec: RequestSpec
    response: type[R] | None


@dataclass(frozen=True)
class Endpoint(Generic[R]):
    method: str
    path: str
    # The model of a JSON answer; None for answers that are not JSON (bytes, events, metrics).
    response: type[R] | None
    # A POST that creates something: it carries an Idempotency-Key, made here unless given.
    creates: bool = False
    # The server answers a replay of this POST with the same key from its record instead of
    # acting twice (API.md: deletion requests), so it may be retried like a GET.
    honours_idempotency_key: bool = False
    retries: bool = True

    @property
    def replay_safe(self) -> bool:
        return self.method in _SAFE_METHODS or self.honours_idempotency_key

    def request(
        self,
        path_params: Mapping[str, str | int] | None = None,
        *,
        params: Mapping[str, str | int | None] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, Upload] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Call[R]:
        # Path parameters are user input (model names, ids): quoted so they stay one segment.
        path = self.path.format_map({k: quote(str(v), safe="") for k, v in (path_params or {}).items()})
        all_headers = dict(headers or {})
        if self.creates:
            # Made once, here: every retry of this spec then sends the same key.
            all_headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        spec = RequestSpec(
            method=self.method,
            path=path,
            params={k: v for k, v in (params or {}).items() if v is not None},
            json=json,
            data=data,
            files=files,
            headers=all_headers,
            replay_safe=self.replay_safe,
            retries=self.retries,
        )
        return Call(spec, self.response)


HEALTH = Endpoint("GET", "/healthz", Health)
# A probe: a 503 is the answer wanted, not a failure to retry.
READY = Endpoint("GET", "/readyz", Readiness, retries=False)
METRICS: Endpoint[None] = Endpoint("GET", "/metrics", None)

CREATE_MODEL = Endpoint("POST", "/v1/models", Model, creates=True)
LIST_MODELS = Endpoint("GET", "/v1/models", Page[Model])
GET_MODEL = Endpoint("GET", "/v1/models/{name}", Model)
UPDATE_MODEL = Endpoint("PATCH", "/v1/models/{name}", Model)

UPLOAD_VERSION = Endpoint("POST", "/v1/models/{name}/versions", Version, creates=True)
LIST_VERSIONS = Endpoint("GET", "/v1/models/{name}/versions", Page[Version])
GET_VERSION = Endpoint("GET", "/v1/models/{name}/versions/{v}", Version)
RETIRE_VERSION = Endpoint("DELETE", "/v1/models/{name}/versions/{v}", Version)
ROLLBACK = Endpoint("POST", "/v1/models/{name}/rollback", Version, creates=True)
DOWNLOAD_CHECKPOINT: Endpoint[None] = Endpoint("GET", "/v1/models/{name}/versions/{v}/checkpoint", None)
HEAD_CHECKPOINT: Endpoint[None] = Endpoint("HEAD", "/v1/models/{name}/versions/{v}/checkpoint", None)

SUBMIT_DELETION = Endpoint(
    "POST", "/v1/models/{name}/deletion-requests", DeletionRequest, creates=True, honours_idempotency_key=True
)
SUBMIT_DELETIONS_BULK = Endpoint(
    "POST",
    "/v1/models/{name}/deletion-requests/bulk",
    BulkDeletion,
    creates=True,
    honours_idempotency_key=True,
)
# Queues a request the acceptance policy rejected again; the server replays a repeated key.
RETRY_DELETION = Endpoint(
    "POST",
    "/v1/deletion-requests/{request_id}/retry",
    DeletionRequest,
    creates=True,
    honours_idempotency_key=True,
)
DELETION_RECEIPT = Endpoint("GET", "/v1/deletion-requests/{request_id}/receipt", Receipt)
SIGNED_DELETION_RECEIPT = Endpoint("GET", "/v1/deletion-requests/{request_id}/receipt", SignedDocument)
DELETION_CERTIFICATE = Endpoint("GET", "/v1/deletion-requests/{request_id}/certificate", SignedDocument)
LIST_DELETIONS = Endpoint("GET", "/v1/deletion-requests", Page[DeletionRequest])
GET_DELETION = Endpoint("GET", "/v1/deletion-requests/{request_id}", DeletionRequest)
GET_SAMPLE_DIGESTS = Endpoint("GET", "/v1/deletion-requests/{request_id}/sample-digests", SampleDigests)

CREATE_DATASET = Endpoint("POST", "/v1/datasets", Dataset, creates=True)
LIST_DATASETS = Endpoint("GET", "/v1/datasets", Page[Dataset])
GET_DATASET = Endpoint("GET", "/v1/datasets/{name}", Dataset)
UPLOAD_DATASET_VERSION = Endpoint("POST", "/v1/datasets/{name}/versions", DatasetVersion, creates=True)
LIST_DATASET_VERSIONS = Endpoint("GET", "/v1/datasets/{name}/versions", Page[DatasetVersion])
GET_DATASET_VERSION = Endpoint("GET", "/v1/datasets/{name}/versions/{v}", DatasetVersion)

SUBMIT_ERASURE = Endpoint(
    "POST", "/v1/datasets/{name}/erasures", Erasure, creates=True, honours_idempotency_key=True
)
LIST_ERASURES = Endpoint("GET", "/v1/erasures", Page[Erasure])
GET_ERASURE = Endpoint("GET", "/v1/erasures/{erasure_id}", Erasure)
ERASURE_RECEIPT = Endpoint("GET", "/v1/erasures/{erasure_id}/receipt", Receipt)
SIGNED_ERASURE_RECEIPT = Endpoint("GET", "/v1/erasures/{erasure_id}/receipt", SignedDocument)

LIST_JOBS = Endpoint("GET", "/v1/jobs", Page[Job])
GET_JOB = Endpoint("GET", "/v1/jobs/{job_id}", Job)
CANCEL_JOB = Endpoint("POST", "/v1/jobs/{job_id}/cancel", Job)
JOB_EVENTS: Endpoint[None] = Endpoint("GET", "/v1/jobs/{job_id}/events", None)
CREATE_TRAINING_JOB = Endpoint("POST", "/v1/models/{name}/training-jobs", Job, creates=True)

LIST_AUDIT = Endpoint("GET", "/v1/audit", Page[AuditEvent])
VERIFY_AUDIT = Endpoint("GET", "/v1/audit/verify", ChainVerification)
LIST_AUDIT_CHECKPOINTS = Endpoint("GET", "/v1/audit/checkpoints", Page[SignedDocument])
LIST_AUDIT_CHAINS = Endpoint("GET", "/v1/audit/chains", Page[ChainStatus])
SIGNING_KEY = Endpoint("GET", "/.well-known/unlearn-signing-key", PublicKey)

CREATE_KEY = Endpoint("POST", "/v1/keys", CreatedApiKey, creates=True)
LIST_KEYS = Endpoint("GET", "/v1/keys", Page[ApiKey])
REVOKE_KEY = Endpoint("DELETE", "/v1/keys/{key_id}", ApiKey)

CREATE_WEBHOOK = Endpoint("POST", "/v1/webhooks", CreatedWebhook, creates=True)
LIST_WEBHOOKS = Endpoint("GET", "/v1/webhooks", Page[Webhook])
GET_WEBHOOK = Endpoint("GET", "/v1/webhooks/{webhook_id}", Webhook)
# 204, no body.
DELETE_WEBHOOK: Endpoint[None] = Endpoint("DELETE", "/v1/webhooks/{webhook_id}", None)
LIST_DELIVERIES = Endpoint("GET", "/v1/webhooks/{webhook_id}/deliveries", Page[Delivery])
GET_DELIVERY = Endpoint("GET", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}", Delivery)
# A dead delivery back to pending; a second one answers 409, so not replayed blindly.
RETRY_DELIVERY = Endpoint("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", Delivery)

ALL: tuple[Endpoint[Any], ...] = tuple(v for v in list(globals().values()) if isinstance(v, Endpoint))
