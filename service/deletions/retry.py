"""Retrying a deletion request the acceptance policy rejected, without uploading its samples again.

``POST /v1/deletion-requests/{id}/retry`` puts the same request back on the model's queue (a new
job, or the open batch with the same settings), optionally with another method, params or
policy, validated as at intake. The samples are those kept for the retry (an upload: its forget
set, kept for ``failed_forget_set_retention_seconds``, service/deletions/purge.py) or read again
from the registered training set (a request by reference). Refusals change nothing: 404 (not
found, another tenant's), 409 (not a policy rejection, or no longer failed), 410 (the forget set
is gone). The state change is one conditional UPDATE that states what it expects, so of two
racing retries, or a retry and the purge of its forget set, exactly one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.orm import Session

from service import idempotency
from service.context import ServiceContext
from service.datasets.logic import read_samples
from service.db import read_scope, utcnow
from service.deletions.logic import (
    FORGET_SET_KIND,
    Answer,
    Intake,
    audit,
    one_request,
    queue_job,
    replay,
    resolve_policy,
    resolve_run,
    validate_forget_set,
    write_once,
)
from service.deletions.purge import retry_window
from service.deletions.reference import Reference, find_in_training_set
from service.deletions.schemas import RetryIn
from service.deps import Principal
from service.errors import Problem, conflict
from service.jobs.lifecycle import rowcount
from service.jobs.policy import AcceptancePolicy
from service.jobs.states import RequestOutcome, RequestStatus
from service.listing import get_owned
from service.outbox import enqueue_job
from service.privacy import keyed_digests
from service.registry.logic import get_model, get_version
from service.storage import StoredObject
from service.tables import DeletionRequest, Model
from service.unit_of_work import call_after_commit

log = structlog.get_logger("service.deletions")


@dataclass
class RetryPlan:
    """A retry validated against the model, its samples at hand: ready to be written."""

    request_id: str
    model: Model  # detached snapshot
    previous_job_id: str | None
    by_reference: bool
    kept_key: str | None  # an upload: the forget set kept for the retry
    method: str
    method_reason: str
    params: dict[str, Any]
    policy: AcceptancePolicy
    overrides: list[str]  # the fields the retry changed
    n_samples: int
    sample_digests: list[str]
    stored: StoredObject | None = None  # by reference: the samples read again, stored anew
    blob: bytes = b""


def refusal(ctx: ServiceContext, req: DeletionRequest) -> Problem | None:
    """Why ``req`` cannot be retried now (409 or 410), or None."""
    window = retry_window(req, ctx.settings.failed_forget_set_retention_seconds, utcnow())
    if window.retryable:
        return None
    if req.status == RequestStatus.FAILED and req.outcome == RequestOutcome.POLICY_REJECTED:
        return Problem(
            410,
            "Gone",
            f"deletion request {req.id} cannot be retried: {window.reason}",
            type="urn:unlearn:problem:retry-window-ended",
            retry_until=window.until,
        )
    return conflict(
        f"deletion request {req.id} is {req.status}"
        + (f" ({req.outcome})" if req.outcome else "")
        + f": {window.reason}",
        type="urn:unlearn:problem:not-retryable",
        request_status=req.status,
        outcome=req.outcome,
    )


def _params(
    req: DeletionRequest, body: RetryIn, method: str, policy: AcceptancePolicy
) -> dict[str, Any] | None:
    """The params to resolve: the retry's, none for another method, else the request's own. The
    request's utility guard (``max_eval_drop``) was the old policy's budget unless asked for; it
    follows a new policy, as it would have at intake."""
    if body.params is not None:
        return dict(body.params)
    if method != req.method:
        return None
    params = dict(req.params or {})
    old_budget = (req.policy or {}).get("max_eval_accuracy_drop")
    if body.policy is not None and params.get("max_eval_drop") == old_budget:
        params.pop("max_eval_drop", None)
    return params


def plan(ctx: ServiceContext, principal: Principal, request_id: str, body: RetryIn) -> RetryPlan:
    """Validate the retry against the request and its model; reads, stores the samples of a
    request by reference, writes no row."""
    settings = ctx.settings
    with read_scope(ctx.session_factory) as read:
        req, model_name = get_owned(
            read, DeletionRequest, principal.tenant_id, request_id, "deletion request"
        )
        if (problem := refusal(ctx, req)) is not None:
            raise problem
        model = get_model(read, principal.tenant_id, model_name)
        latest = get_version(read, model, "latest")
        by_reference = req.dataset_id is not None
        found = None
        if by_reference:
            # The same samples (by id) in the data the model's latest version reflects.
            ids = tuple(req.sample_ids or [])
            found = find_in_training_set(
                read, ctx, principal.tenant_id, model, latest, Reference(sample_ids=ids)
            )
        requested = {
            **(req.policy or {}),
            **(body.policy.model_dump(exclude_unset=True) if body.policy else {}),
        }
        policy = resolve_policy(settings, AcceptancePolicy.model_validate(requested))
        method = body.method or req.method
        method, params = resolve_run(
            settings, model_name, latest, method, _params(req, body, method, policy), policy, by_reference
        )
    overrides = sorted(body.model_dump(exclude_none=True))
    reason = f"retry of a request the acceptance policy rejected (job {req.job_id}); " + (
        "method asked for by the retry" if body.method else f"the request's method ({req.method})"
    )
    p = RetryPlan(
        request_id=req.id,
        model=model,
        previous_job_id=req.job_id,
        by_reference=by_reference,
        kept_key=req.forget_set_key,
        method=method,
        method_reason=reason,
        params=params,
        policy=policy,
        overrides=overrides,
        n_samples=req.n_samples,
        sample_digests=list(req.sample_digests or []),
    )
    if found is not None:
        # Read and validated outside the transaction above: the dataset reader opens its own, and
        # parsing tensors is CPU work (on SQLite a transaction holds the write lock).
        source = read_samples(ctx, found.dataset_version_id, found.selection.sample_ids)
        _data, p.blob, digests = validate_forget_set(settings, model, Intake(source=source, inline=False))
        if sorted(digests) != sorted(p.sample_digests):
            raise conflict(
                f"the samples of deletion request {req.id} changed in the registered training set: "
                "submit the request again",
                type="urn:unlearn:problem:not-retryable",
            )
        p.stored = ctx.storage.put_bytes(p.blob, kind=FORGET_SET_KIND)  # content-addressed
    return p


def _reopen(ctx: ServiceContext, db: Session, p: RetryPlan) -> None:
    """The request back to queued, if it still is as the plan found it (else 409/410, nothing
    written): failed by the policy, same job, the kept forget set still stored and in its window."""
    now = utcnow()
    stmt = update(DeletionRequest).where(
        DeletionRequest.id == p.request_id,
        DeletionRequest.status == RequestStatus.FAILED,
        DeletionRequest.outcome == RequestOutcome.POLICY_REJECTED,
    )
    stmt = stmt.where(
        DeletionRequest.job_id.is_(None)
        if p.previous_job_id is None
        else DeletionRequest.job_id == p.previous_job_id
    )
    values: dict[str, Any] = {}
    if p.stored is not None:
        values = {"forget_set_key": p.stored.key, "forget_set_purged_at": None}
    else:
        stmt = stmt.where(DeletionRequest.forget_set_key == p.kept_key)
    res = db.execute(
        stmt.values(
            status=RequestStatus.QUEUED,
            outcome=None,
            error=None,
            finished_at=None,
            result_version=None,
            method=p.method,
            params=p.params,
            policy=p.policy.model_dump(mode="json"),
            updated_at=now,
            **values,
        ).execution_options(synchronize_session=False)
    )
    if rowcount(res) == 1:
        return
    req = db.get(DeletionRequest, p.request_id, populate_existing=True)
    assert req is not None  # rows are never deleted
    problem = refusal(ctx, req)
    # Same state as planned but the UPDATE missed: the forget set moved under us (a purge).
    raise problem or Problem(410, "Gone", f"the forget set of deletion request {req.id} was purged")


def record(ctx: ServiceContext, db: Session, principal: Principal, p: RetryPlan) -> DeletionRequest:
    """The request back on the queue in the caller's transaction: reopened, in a job (new or an
    open batch), announced after commit, audited."""
    _reopen(ctx, db, p)
    policy_json = p.policy.model_dump(mode="json")
    job_id, joined = queue_job(
        ctx, db, principal.tenant_id, p.model, p.method, p.params, policy_json, p.n_samples, p.method_reason
    )
    db.execute(
        update(DeletionRequest)
        .where(DeletionRequest.id == p.request_id)
        .values(job_id=job_id)
        .execution_options(synchronize_session=False)
    )
    if not joined:
        enqueue_job(db, job_id)
    req = db.get(DeletionRequest, p.request_id, populate_existing=True)
    assert req is not None
    audit(
        db,
        principal,
        "deletion.retried",
        req.id,
        model=p.model.name,
        payload={
            "previous_job_id": p.previous_job_id,
            "job_id": job_id,
            "joined_batch": joined,
            "method": p.method,
            "method_reason": p.method_reason,
            "changed": p.overrides,
            "policy": policy_json,
            "n_samples": p.n_samples,
            "by_reference": p.by_reference,
            "erasure_id": req.erasure_id,
            "forget_set_sha256": req.forget_set_sha256,
            "sample_digests": keyed_digests(ctx.tenant_key(principal.tenant_id), p.sample_digests),
        },
    )
    stored, blob = p.stored, p.blob
    if stored is not None:

        def ensure_stored() -> None:
            # As at intake: a purge may have removed the same content-addressed blob just before
            # this commit made it referenced again.
            if not ctx.storage.exists(stored.key):
                ctx.storage.put_bytes(blob, kind=FORGET_SET_KIND)

        call_after_commit(db, ensure_stored)
    log.info("deletion_retried", request_id=req.id, job_id=job_id, joined=joined, previous=p.previous_job_id)
    return req


def retry(
    ctx: ServiceContext,
    principal: Principal,
    request_id: str,
    body: RetryIn,
    idem: idempotency.IdempotencyContext | None,
) -> Answer:
    """Queue a rejected request again (202 + Location); a replay of the Idempotency-Key answers
    as the first call did and queues nothing."""
    if idem is not None and (replayed := replay(ctx, idem)) is not None:
        return replayed
    p = plan(ctx, principal, request_id, body)
    write = one_request(ctx, p.model.name, lambda db: record(ctx, db, principal, p))
    return write_once(ctx, idem, [p.stored.key] if p.stored is not None else [], write)
