"""Example values for the OpenAPI document (``service/openapi.py`` puts them in place).

They are answers the service really gave (the quickstart's digits model, trimmed), so a reader of
``/docs`` sees realistic values, and schemathesis sends the request examples and checks the
answers (tests/service/test_schemathesis.py). Bodies are keyed by the name of their component
schema, so one example serves every operation that answers that shape; what has no component
(receipts, health, multipart forms) is keyed by operation. A schema that has no example here gets
one made from the schema itself (``sample``), so a new route is never left without one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from service.errors import status_title
from service.jobs.policy import AcceptancePolicy
from service.pagination import encode_cursor

MODEL = "digits"
DATASET = "digits-train"
REQUEST_ID = "del_b2ec44d6f6594ac88bcdafc7f91ac7c8"
JOB_ID = "job_2dfcb9c8f8cf475f99e1bb451d969934"
ERASURE_ID = "era_5946f419a5af4ab4a48bcedd3b39269f"
KEY_ID = "key_5104b86199774a9f99981df05352d212"
TENANT_ID = "ten_b0474b26d1d94a548dd87482b16641f0"
SIGNING_KEY_ID = "r2jLMEzGG2xIdhAIJT4og2aGBJ-5yqJzvfrrVgKtzQI"
SHA256 = "7112edbc12b81b1f0e332669ad749695825ea6e40084714982ec6768c2acb388"
CREATED = "2026-01-31T10:52:28.331677Z"
FINISHED = "2026-01-31T10:53:02.118402Z"

# The first "3" of sklearn's digits, scaled to [0, 1] as `unlearn train --data digits` does:
# an inline forget sample the quickstart's model really accepts.
_DIGIT_3_PIXELS = (
    0, 0, 7, 15, 13, 1, 0, 0, 0, 8, 13, 6, 15, 4, 0, 0, 0, 2, 1, 13, 13, 0, 0, 0, 0, 0, 2, 15, 11, 1, 0, 0,
    0, 0, 0, 1, 12, 12, 1, 0, 0, 0, 0, 0, 1, 10, 8, 0, 0, 0, 8, 4, 5, 14, 9, 0, 0, 0, 7, 13, 13, 9, 0, 0,
)  # fmt: skip
DIGIT_3 = [p / 16 for p in _DIGIT_3_PIXELS]

_ARCHITECTURE = {"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [128], "num_classes": 10}}
# The policy's own defaults (the margins unset: sized to each job's sample sizes).
_POLICY = AcceptancePolicy.model_validate({}).model_dump(mode="json")
_PARAMS = {"preset": "anchored", "optimizer": "adam", "lr": 0.001, "epochs": 2, "scope": "samples"}

_MODEL_OUT = {
    "name": MODEL,
    "task": "classification",
    "architecture": _ARCHITECTURE,
    "description": "MLP on sklearn digits",
    "tags": ["demo"],
    "latest_version": 2,
    "created_at": CREATED,
    "updated_at": FINISHED,
}
_VERSION_OUT = {
    "version": 2,
    "sha256": SHA256,
    "size_bytes": 5160,
    "parent_version": 1,
    "created_by_job": JOB_ID,
    "status": "ready",
    "description": "unlearned: 4 samples of request " + REQUEST_ID,
    "eval_set": {
        "sha256": "85d592818985de712b52eb68b2539217a8aade922d03e9a2aa769d276d7bff5c",
        "n_samples": 360,
    },
    "metrics": {"forget_accuracy": 0.25, "eval_accuracy": 0.947, "mia_auc": 0.52},
    "training_data": {"dataset": DATASET, "version": 1},
    "recipe": {"epochs": 5, "lr": 0.001, "batch_size": 64, "optimizer": "adam", "seed": 0},
    "retired_at": None,
    "retired_reason": None,
    "created_at": FINISHED,
}
_DATASET_OUT = {
    "name": DATASET,
    "task": "classification",
    "description": "the training split of sklearn digits",
    "latest_version": 1,
    "created_at": CREATED,
    "updated_at": CREATED,
}
_DATASET_VERSION_OUT = {
    "version": 1,
    "status": "ready",
    "source": "upload",
    "parent_version": None,
    "n_samples": 1437,
    "n_shards": 2,
    "shard_samples": 1024,
    "size_bytes": 384_704,
    "data_sha256": "598daefb37e2195e16b2263c001f573acf791df77605ee96007847bab5798ada",
    "columns": {"inputs": {"dtype": "float32", "shape": [64]}, "labels": {"dtype": "int64", "shape": []}},
    "sample_id_type": "int",
    "has_subjects": True,
    "n_subjects": 180,
    "upload": {"format": "npz", "sha256": "6b0df81c4f7294639fc1326ba20ec003b668db3eced803b69f6adce6f30fc091"},
    "erasure": None,
    "description": None,
    "created_at": CREATED,
    "retired_at": None,
}
_DELETION_REQUEST_OUT = {
    "id": REQUEST_ID,
    "model": MODEL,
    "status": "queued",
    "job_id": JOB_ID,
    "subject_digest": "96f3989f839dd68eb8f53795234b79eaaaa4895fc8fc221bd8fe25b8a0cd0d64",
    "method": "imu",
    "params": _PARAMS,
    "policy": _POLICY,
    "base_version": None,
    "result_version": None,
    "n_samples": 4,
    "forget_set_sha256": "c56b5ffe801a4ee782da9f4471559f34fc828f4487a2ac78ee80f3af755dc831",
    "forget_set_purged": False,
    "by_reference": False,
    "erasure_id": None,
    "outcome": None,
    "error": None,
    "created_at": CREATED,
    "updated_at": CREATED,
    "finished_at": None,
}
_ERASURE_OUT = {
    "id": ERASURE_ID,
    "dataset": DATASET,
    "status": "queued",
    "subject_digest": "5246ef8e617179bd6b8867d87beb61927700cbb9c777c3e322cabb132df4f65e",
    "n_samples": 5,
    "dataset_version": 1,
    "result_dataset_version": None,
    "outcome": None,
    "deletion_requests": [
        {
            "id": "del_4d031e0354de4bbea05efa8f3e91687f",
            "model": MODEL,
            "status": "queued",
            "job_id": JOB_ID,
            "result_version": None,
            "outcome": None,
        }
    ],
    "created_at": CREATED,
}
_JOB_OUT = {
    "id": JOB_ID,
    "model": MODEL,
    "method": "imu",
    "params": _PARAMS,
    "policy": _POLICY,
    "seed": 0,
    "status": "succeeded",
    "stage": "published",
    "progress": 1.0,
    "base_version": 1,
    "result_version": 2,
    "deletion_requests": [REQUEST_ID],
    "n_requests": 1,
    "n_samples": 4,
    "attempts": 1,
    "max_attempts": 3,
    "cancel_requested": False,
    "error": None,
    "metrics": {
        "before": {"forget_accuracy": 1.0, "forget_loss": 0.04, "eval_accuracy": 0.953, "mia_auc": 0.61},
        "after": {"forget_accuracy": 0.25, "forget_loss": 2.31, "eval_accuracy": 0.947, "mia_auc": 0.52},
        "elapsed_s": 3.8,
    },
    "created_at": CREATED,
    "started_at": "2026-01-31T10:52:58.701120Z",
    "finished_at": FINISHED,
}
_SIGNED_HEAD = {
    "document": {
        "type": "unlearn.audit-head",
        "version": 1,
        "chain": TENANT_ID,
        "seq": 12,
        "hash": "2bd74da42ee9a88970e73bf08afcc4bb59735157ca3e8e932b1682303bcaf9c6",
        "signed_at": "2026-01-31T10:55:00.000000+00:00",
    },
    "signature": "cEWtq6iG-h6SfHyb4YTfIM00axjY5JRWZHALT6H7bD6QQ631RIztkYBnVXxhtSiwcRuQudX9PxGviPfSR2dkBg",
    "key_id": SIGNING_KEY_ID,
    "alg": "Ed25519",
    "canonicalization": "RFC 8785",
}
_CHAIN = {
    "chain": TENANT_ID,
    "ok": True,
    "length": 12,
    "head_hash": "2bd74da42ee9a88970e73bf08afcc4bb59735157ca3e8e932b1682303bcaf9c6",
    "first_bad_seq": None,
    "reason": None,
    "signed_head": {
        "seq": 12,
        "hash": "2bd74da42ee9a88970e73bf08afcc4bb59735157ca3e8e932b1682303bcaf9c6",
        "signed_at": "2026-01-31T10:55:00.000000+00:00",
        "key_id": SIGNING_KEY_ID,
    },
}
_KEY_OUT = {
    "id": KEY_ID,
    "name": "ci-reader",
    "tenant": "default",
    "prefix": "7a829b1e",
    "scopes": ["jobs:read", "models:read"],
    "created_at": CREATED,
    "revoked_at": None,
    "last_used_at": None,
}
_DELETION_RECEIPT = {
    "type": "deletion-receipt",
    "receipt_version": 1,
    "issued_at": "2026-01-31T10:53:10.820214+00:00",
    "request": {
        "id": REQUEST_ID,
        "status": "completed",
        "outcome": None,
        "erasure_id": None,
        "created_at": CREATED,
        "finished_at": FINISHED,
    },
    "model": MODEL,
    "subject_digest": "96f3989f839dd68eb8f53795234b79eaaaa4895fc8fc221bd8fe25b8a0cd0d64",
    "digests": "HMAC-SHA256 of each sample's sha256 under the tenant's key",
    "sample_digests": ["66a028a56171d79e6b782ad8247b6035463b00a8cdd539d8cd2a9fdc3125cf24"],
    "n_samples": 1,
    "method": "imu",
}


def _page(item: dict[str, Any]) -> dict[str, Any]:
    return {"items": [item], "next_cursor": None}  # the last page (cursors differ per list)


# Keyed by component schema name (FastAPI's: the pydantic class name, module-qualified when two
# classes share a name; ``component_example`` strips the qualification).
SCHEMAS: dict[str, Any] = {
    # models and versions
    "ModelCreate": {
        "name": MODEL,
        "task": "classification",
        "architecture": _ARCHITECTURE,
        "description": "MLP on sklearn digits",
        "tags": ["demo"],
    },
    "ModelOut": _MODEL_OUT,
    "VersionOut": _VERSION_OUT,
    "RollbackIn": {"to_version": 1},
    # data sets
    "DatasetCreate": {"name": DATASET, "task": "classification", "description": "the training split"},
    "DatasetOut": _DATASET_OUT,
    "DatasetVersionOut": _DATASET_VERSION_OUT,
    # deletion requests
    "DeletionRequestIn": {"samples": {"inputs": [DIGIT_3], "labels": [3]}, "subject": "user-42"},
    "DeletionRequestOut": _DELETION_REQUEST_OUT,
    "DeletionRequestPage": _page(_DELETION_REQUEST_OUT),
    "BulkDeletionIn": {
        "requests": [
            {"samples": {"inputs": [DIGIT_3], "labels": [3]}, "subject": "user-42"},
            {"samples": {"inputs": [DIGIT_3], "labels": [3]}, "subject": "user-43"},
        ],
        "method": "imu",
    },
    "BulkDeletionOut": {"items": [_DELETION_REQUEST_OUT]},
    "SampleDigestsOut": {
        "request_id": REQUEST_ID,
        "n_samples": 2,
        "sample_digests": [
            "66a028a56171d79e6b782ad8247b6035463b00a8cdd539d8cd2a9fdc3125cf24",
            "1ca2995f07698ed58881a5058af021048d34e66438edca7f16904b0141858e3a",
        ],
    },
    # erasures
    "ErasureIn": {"subject": "user-42"},
    "ErasureOut": _ERASURE_OUT,
    "ErasurePage": _page(_ERASURE_OUT),
    # jobs
    "JobOut": _JOB_OUT,
    "JobPage": _page(_JOB_OUT),
    # audit and signatures
    "AuditEventOut": {
        "seq": 2,
        "ts": "2026-01-31T10:52:28.332488+00:00",
        "tenant_id": TENANT_ID,
        "actor": "key:key_841ba6d2da9e4c26b92e3821bcb414a5",
        "action": "model.created",
        "model": MODEL,
        "object_id": "mdl_f0a59fc6460d4a6d892624d2396400dc",
        "payload": {"task": "classification", "architecture": _ARCHITECTURE},
        "prev_hash": "bafaf6f40c990bc06a7ee06906bc0b09b9ea95aeaea86bdf357927c55b6b190e",
        "hash": "8a0ee67b6552a66293a419f4d66e50afd941df7120a337795ca04644e63cca1d",
    },
    "ChainVerification": _CHAIN,
    "ChainOut": {**_CHAIN, "tenant": "default"},
    "SignedDocumentOut": _SIGNED_HEAD,
    "PublicKeyOut": {
        "key_id": SIGNING_KEY_ID,
        "alg": "Ed25519",
        "canonicalization": "RFC 8785",
        "jwk": {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "Pnj6Amid277qU3OU1KxsntP5DYh2zlLZXLhG7FmTkWM",
            "kid": SIGNING_KEY_ID,
            "alg": "EdDSA",
            "use": "sig",
        },
        "pem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAPnj6Amid277qU3OU1KxsntP5DYh2zlLZXLhG7FmTkWM=\n"
        "-----END PUBLIC KEY-----\n",
    },
    # keys
    "KeyCreate": {"name": "ci-reader", "scopes": ["models:read", "jobs:read"]},
    "KeyOut": _KEY_OUT,
    "KeyCreated": {**_KEY_OUT, "key": "ulk_7a829b1e_FJudOXoGL3s0aYOILFtuZnNxSpMD9udwGUN0StLOrJw"},
}

# Several named examples where one body has several forms worth showing.
NAMED_REQUESTS: dict[str, dict[str, dict[str, Any]]] = {
    "DeletionRequestIn": {
        "inline": {
            "summary": "The forget samples inline (small sets)",
            "value": SCHEMAS["DeletionRequestIn"],
        },
        "by_reference": {
            "summary": "Every sample of a data subject in the model's registered training set",
            "value": {"subject": "user-42"},
        },
        "sample_ids": {
            "summary": "Samples of the registered training set, by id",
            "value": {"sample_ids": [17, 256], "method": "scrub"},
        },
    },
    "ErasureIn": {
        "subject": {"summary": "Every sample of a data subject", "value": {"subject": "user-42"}},
        "sample_ids": {"summary": "Samples by id", "value": {"sample_ids": [17, 256]}},
    },
}

# Bodies that have no component of their own, keyed by (method, path, media type).
OPERATIONS: dict[tuple[str, str, str], Any] = {
    ("GET", "/healthz", "application/json"): {"status": "ok"},
    ("GET", "/readyz", "application/json"): {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
    },
    ("GET", "/metrics", "text/plain"): (
        "# HELP unlearn_http_requests_total HTTP requests\n"
        "# TYPE unlearn_http_requests_total counter\n"
        'unlearn_http_requests_total{method="GET",route="/v1/models",status="200"} 42.0\n'
    ),
    ("GET", "/v1/jobs/{job_id}/events", "text/event-stream"): (
        'event: progress\ndata: {"status": "running", "stage": "unlearning", "progress": 0.4}\n\n'
        'event: end\ndata: {"status": "succeeded", "stage": "published", "progress": 1.0}\n\n'
    ),
    ("GET", "/v1/deletion-requests/{request_id}/receipt", "application/json"): _DELETION_RECEIPT,
    ("GET", "/v1/erasures/{erasure_id}/receipt", "application/json"): {
        "type": "erasure-receipt",
        "receipt_version": 1,
        "issued_at": "2026-01-31T11:20:00.133121+00:00",
        "erasure": {"id": ERASURE_ID, "status": "completed", "outcome": None},
        "subject_digest": "5246ef8e617179bd6b8867d87beb61927700cbb9c777c3e322cabb132df4f65e",
        "n_samples": 5,
        "training_data": {
            "dataset": DATASET,
            "before": {"version": 1, "n_samples": 1437},
            "after": {"version": 2, "n_samples": 1432},
        },
        "models": [_DELETION_RECEIPT],
    },
    # Multipart forms: a file part is shown as its file name (Swagger UI offers a file picker).
    ("POST", "/v1/models/{name}/versions", "multipart/form-data"): {
        "checkpoint": "model.safetensors",
        "eval_set": "eval.safetensors",
        "description": "trained on sklearn digits",
    },
    ("POST", "/v1/datasets/{name}/versions", "multipart/form-data"): {
        "data": "train.npz",
        "description": "sklearn digits, training split, with subject ids",
    },
    ("POST", "/v1/models/{name}/deletion-requests", "multipart/form-data"): {
        "forget_set": "forget.safetensors",
        "subject": "user-42",
        "params": '{"scope": "class"}',
    },
}

# Parameters by name; (path prefix, name) first where a name means different things.
PARAMETERS: dict[str | tuple[str, str], Any] = {
    ("/v1/datasets", "name"): DATASET,
    ("/v1/erasures", "dataset"): DATASET,
    "name": MODEL,
    "v": "latest",
    "request_id": REQUEST_ID,
    "job_id": JOB_ID,
    "erasure_id": ERASURE_ID,
    "key_id": KEY_ID,
    "model": MODEL,
    "dataset": DATASET,
    "status": "queued",
    "subject": "user-42",
    "action": "deletion.requested",
    "since": "2026-01-31T00:00:00Z",
    "tenant": "default",
    "limit": 50,
    "signed": True,
    "Idempotency-Key": "0f6d3c1e-5b0a-4c55-9d8e-2f4c6a1b7e90",
    "if-none-match": f'"{SHA256}"',
    "Range": "bytes=0-1023",
    "if-range": f'"{SHA256}"',
}


# A cursor holds the sort key of the last item of a page (service/pagination.py), so a valid one
# differs per list: by number, by name, or (the rest) by creation time and id.
_CURSOR_KEYS: dict[str, list[Any]] = {
    "/v1/audit": [2],
    "/v1/audit/checkpoints": [12],
    "/v1/audit/chains": [TENANT_ID],
    "/v1/models": [MODEL],
    "/v1/models/{name}/versions": [1],
    "/v1/datasets": [DATASET],
    "/v1/datasets/{name}/versions": [1],
}
_CREATED_AND_ID = [datetime(2026, 1, 31, 10, 52, 28, 331677, tzinfo=UTC), JOB_ID]


def parameter_example(path: str, name: str) -> Any:
    if name == "cursor":
        return encode_cursor(_CURSOR_KEYS.get(path, _CREATED_AND_ID))
    for key, value in PARAMETERS.items():
        if isinstance(key, tuple) and path.startswith(key[0]) and name == key[1]:
            return value
    return PARAMETERS.get(name)


def component_example(name: str) -> Any:
    """The curated example of a component schema, or None."""
    short = name.rsplit("__", 1)[-1]  # "service__erasures__schemas__ErasureOut" -> "ErasureOut"
    if short in SCHEMAS:
        return SCHEMAS[short]
    page = re.fullmatch(r"Page_(\w+?)_", short)
    if page and page.group(1) in SCHEMAS:
        return _page(SCHEMAS[page.group(1)])
    return None


def allowed(value: Any, schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """False when ``schema`` (or an option of it) lists the values it takes and ``value`` is not
    one: a parameter name ("status") means different things on different routes."""
    if "$ref" in schema:
        schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
    options = schema.get("anyOf", schema.get("oneOf"))
    if options:
        return any(allowed(value, option, components) for option in options if option.get("type") != "null")
    return value in schema["enum"] if "enum" in schema else True


# --- problem details ------------------------------------------------------------------------

# What the service says for the statuses every route may answer (service/deps.py, errors.py,
# ops/bodylimit.py, deletions/limits.py), with the members it adds.
_PROBLEMS: dict[int, dict[str, Any]] = {
    401: {"detail": "missing API key: send 'Authorization: Bearer <key>'"},
    403: {"detail": "this API key lacks the 'models:write' scope", "required_scope": "models:write"},
    413: {"detail": "the request body exceeds the limit of 268435456 bytes", "max_body_bytes": 268435456},
    422: {
        "detail": "query.limit: Input should be less than or equal to 200",
        "errors": [
            {
                "loc": ["query", "limit"],
                "msg": "Input should be less than or equal to 200",
                "type": "less_than_equal",
            }
        ],
    },
    429: {
        "detail": "this tenant has 9990 samples waiting to be forgotten; 20 more would pass its limit "
        "of 10000",
        "limit": 10000,
    },
    500: {"detail": "an unexpected error occurred"},
}
# A 404 names what was not found: the object of the path's first segment.
_NOT_FOUND = {
    "/v1/datasets": f"dataset {DATASET}",
    "/v1/models": f"model {MODEL}",
    "/v1/jobs": f"job {JOB_ID}",
    "/v1/deletion-requests": f"deletion request {REQUEST_ID}",
    "/v1/erasures": f"erasure {ERASURE_ID}",
    "/v1/keys": f"API key {KEY_ID}",
}


def problem(status: int, description: str, path: str) -> dict[str, Any]:
    example: dict[str, Any] = {"type": "about:blank", "title": status_title(status), "status": status}
    example.update(_PROBLEMS.get(status, {"detail": description}))
    if status == 404:
        prefix = "/".join(path.split("/")[:3])
        what = _NOT_FOUND.get(prefix)
        example["detail"] = f"{what} not found" if what else description
    return example


# --- examples made from a schema, for what has no curated one --------------------------------

_FORMATS = {
    "date-time": CREATED,
    "date": "2026-01-31",
    "uri": "https://example.org/unlearn",
    "email": "dpo@example.org",
    "binary": "",
}


# Plain string properties whose name says what a realistic value is.
_BY_NAME = {
    "url": "https://hooks.example.org/unlearn",
    "model": MODEL,
    "dataset": DATASET,
    "subject": "user-42",
    "description": "retrain monthly",
}


def sample(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """A value that fits ``schema``: its own example, default or first option where it has
    one, else the smallest plausible value of its type (objects: their required properties)."""
    if depth > 12:  # a recursive schema: stop rather than loop
        return None
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        curated = component_example(name)
        if curated is not None:
            return curated
        return sample(components.get(name, {}), components, depth + 1)
    for key in ("example", "const"):
        if key in schema:
            return schema[key]
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("default") is not None:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key, []) if o.get("type") != "null"]
        if options:
            return sample(options[0], components, depth + 1)
        if key in schema:
            return None
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = sample(part, components, depth + 1)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {
            name: _BY_NAME[name]
            if name in _BY_NAME and props[name].get("type") == "string" and "pattern" not in props[name]
            else sample(props[name], components, depth + 1)
            for name in schema.get("required", [])
        }
    if kind == "array":
        count = schema.get("minItems", 1)
        return [sample(schema.get("items", {}), components, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get(
            "minimum", schema.get("exclusiveMinimum", 0) + 1 if "exclusiveMinimum" in schema else 1
        )
        return int(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "string":
        return _FORMATS.get(schema.get("format", ""), "x" * max(schema.get("minLength", 0), 1))
    return None
