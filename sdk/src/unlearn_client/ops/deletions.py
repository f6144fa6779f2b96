"""Deletion requests: submit (a forget-set file or inline samples), retry, list, get."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from unlearn_client import endpoints as api
from unlearn_client.calls import Options, fetch
from unlearn_client.flow import EmittingFlow, Flow
from unlearn_client.models import DeletionRequest, Page, Receipt, SampleDigests, SignedDocument
from unlearn_client.ops.paging import every_item
from unlearn_client.spec import FileInput, Upload


def submit(
    options: Options,
    model: str,
    forget_set: FileInput | None = None,
    *,
    samples: Mapping[str, Sequence[Any]] | None = None,
    sample_ids: Sequence[str | int] | None = None,
    subject: str | None = None,
    method: str | None = None,
    params: Mapping[str, Any] | None = None,
    base_version: int | None = None,
    policy: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Flow[DeletionRequest]:
    """Ask the service to forget samples, given one of three ways:

    - ``forget_set``: a file (safetensors or .npz: a path, bytes or a binary file);
    - ``samples``: inline, ``{"inputs": [...], "labels": [...]}``;
    - by reference to the model's registered training set: ``sample_ids`` and/or ``subject``
      (every sample of that data subject). With a file or samples, ``subject`` is a label only.

    Answered 202 at once: the request is queued; follow it with ``wait(request)``. Samples that
    were already erased make a request completed at once (``outcome == "already_erased"``). The
    request carries an Idempotency-Key (``idempotency_key`` or one made here), so a retry after a
    lost answer gets the same request back instead of a second one.
    """
    given = [forget_set is not None, samples is not None, sample_ids is not None]
    by_reference = not any(given) and subject is not None
    if sum(given) + by_reference != 1:
        raise ValueError("pass one of forget_set (a file), samples (inline), or sample_ids/subject")
    options_fields: dict[str, Any] = {
        "sample_ids": list(sample_ids) if sample_ids is not None else None,
        "subject": subject,
        "method": method,
        "params": dict(params) if params is not None else None,
        "base_version": base_version,
        "policy": dict(policy) if policy is not None else None,
    }
    fields = {k: v for k, v in options_fields.items() if v is not None}
    path = {"name": model}
    if forget_set is None:
        body = dict(fields)
        if samples is not None:
            body["samples"] = {k: list(v) for k, v in samples.items()}
        request = api.SUBMIT_DELETION.request(path, json=body, idempotency_key=idempotency_key)
    else:
        # Multipart text fields: objects as JSON, numbers as decimal text (what the server parses).
        data = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in fields.items()}
        files = {"forget_set": Upload.of(forget_set, "forget.safetensors")}
        request = api.SUBMIT_DELETION.request(path, data=data, files=files, idempotency_key=idempotency_key)
    return (yield from fetch(options, request))


def submit_bulk(
    options: Options,
    model: str,
    requests: Sequence[Mapping[str, Any]],
    *,
    method: str | None = None,
    params: Mapping[str, Any] | None = None,
    policy: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Flow[list[DeletionRequest]]:
    """Many requests in one call and one transaction (all stored, or none): each item is
    ``{"samples": {...}, "subject": ...}``; method, params and policy apply to all of them."""
    body: dict[str, Any] = {"requests": [dict(item) for item in requests]}
    for name, value in (("method", method), ("params", params), ("policy", policy)):
        if value is not None:
            body[name] = value if isinstance(value, str) else dict(value)
    request = api.SUBMIT_DELETIONS_BULK.request({"name": model}, json=body, idempotency_key=idempotency_key)
    answer = yield from fetch(options, request)
    return answer.items


def retry(
    options: Options,
    request_id: str,
    *,
    method: str | None = None,
    params: Mapping[str, Any] | None = None,
    policy: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Flow[DeletionRequest]:
    """Queue a request the acceptance policy rejected again (``outcome == "policy_rejected"``,
    ``retryable``), without sending its samples again: the service kept an uploaded forget set
    until ``retry_until``, and reads a request by reference from the registered training set.

    ``method`` and ``params`` as at submission (omitted: the request's own); ``policy`` refines
    the request's policy. Answered 202 with the request queued again; a retry of this call (same
    Idempotency-Key) queues nothing more. Raises on 409 (not a policy rejection, or queued again
    already) and 410 (the retry window ended: submit the samples again).
    """
    body = {
        name: dict(value) if isinstance(value, Mapping) else value
        for name, value in (("method", method), ("params", params), ("policy", policy))
        if value is not None
    }
    path = {"request_id": request_id}
    request = api.RETRY_DELETION.request(path, json=body, idempotency_key=idempotency_key)
    return (yield from fetch(options, request))


def list_page(
    options: Options,
    *,
    model: str | None = None,
    status: str | None = None,
    subject: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Flow[Page[DeletionRequest]]:
    """One page of deletion requests, newest first; ``model``, ``status`` and ``subject`` (the
    reference given at submission) filter."""
    params = {"model": model, "status": status, "subject": subject, "limit": limit, "cursor": cursor}
    return (yield from fetch(options, api.LIST_DELETIONS.request(params=params)))


def iterate(
    options: Options, *, model: str | None = None, status: str | None = None, subject: str | None = None
) -> EmittingFlow[DeletionRequest, None]:
    yield from every_item(
        lambda cursor: list_page(options, model=model, status=status, subject=subject, cursor=cursor)
    )


def get(options: Options, request_id: str) -> Flow[DeletionRequest]:
    return (yield from fetch(options, api.GET_DELETION.request({"request_id": request_id})))


def receipt(options: Options, request_id: str) -> Flow[Receipt]:
    """What the request did, as the service reports it (a free-form document)."""
    return (yield from fetch(options, api.DELETION_RECEIPT.request({"request_id": request_id})))


def signed_receipt(options: Options, request_id: str) -> Flow[SignedDocument]:
    """The receipt with the service's Ed25519 signature, to keep and check offline."""
    request = api.SIGNED_DELETION_RECEIPT.request({"request_id": request_id}, params={"signed": "true"})
    return (yield from fetch(options, request))


def certificate(options: Options, request_id: str) -> Flow[SignedDocument]:
    """The signed erasure certificate of a completed request."""
    return (yield from fetch(options, api.DELETION_CERTIFICATE.request({"request_id": request_id})))


def sample_digests(options: Options, request_id: str) -> Flow[SampleDigests]:
    """The keyed digest of every sample the request asked to forget."""
    return (yield from fetch(options, api.GET_SAMPLE_DIGESTS.request({"request_id": request_id})))
