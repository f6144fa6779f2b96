"""Deletion requests: intake (validate → store → one transaction), reads, and forget-set purging."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import idempotency
from service.audit.logic import append_event
from service.context import ServiceContext
from service.datasets.logic import read_samples
from service.db import AfterFlush, flush_deferred, group_commit, read_scope, utcnow
from service.deletions.limits import check_backlog, check_param_bounds
from service.deletions.purge import key_referenced, retry_window
from service.deletions.reference import (
    Found,
    Reference,
    already_erased,
    find_in_training_set,
    not_in_training_set,
)
from service.deletions.schemas import DeletionRequestOut, SampleDigestsOut
from service.deps import Principal
from service.errors import Problem, conflict, unprocessable
from service.jobs.exactness import stages
from service.jobs.policy import AcceptancePolicy, PolicyLimitError
from service.jobs.states import JobStatus, RequestOutcome, RequestStatus
from service.jsonbody import parse_model
from service.listing import ModelListQuery, get_owned, page_model_rows
from service.outbox import enqueue_job
from service.privacy import keyed_digest, keyed_digests
from service.registry.logic import get_model, get_version
from service.settings import Settings
from service.storage import StoredObject
from service.tables import DeletionRequest, Job, Model, ModelVersion, new_id
from service.unit_of_work import call_after_commit

log = structlog.get_logger("service.deletions")

FORGET_SET_KIND = "forget-sets"


@dataclass
class Intake:
    """A parsed deletion request, before validation against the model."""

    source: bytes | dict[str, Any] | None  # file bytes (safetensors / npz), inline samples, or
    inline: bool  # None with ``reference``: the samples are read from the registered training set
    subject: str | None = None
    reference: Reference | None = None
    erasure_id: str | None = None
    method: str | None = None
    params: dict[str, Any] | None = None
    base_version: int | None = None
    policy: AcceptancePolicy | None = None


@dataclass
class Answer:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


# -- validation ------------------------------------------------------------------------------


def choose_method(settings: Settings, method: str | None, has_retain: bool) -> tuple[str, str]:
    """The method to run and why: asked for, or the default for what the model has registered."""
    if method is not None:
        return method, "asked for by the request"
    if has_retain:
        return (
            settings.default_retain_method,
            "default: the model's training data is registered, so a retain-aware method runs",
        )
    return settings.default_method, "default: no registered training data, so the retain-free method runs"


def resolve_method(
    settings: Settings,
    method: str | None,
    params: dict[str, Any] | None,
    policy: AcceptancePolicy,
    *,
    has_retain: bool = False,
    recipe: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The method name and its fully resolved params (so equal settings batch together).

    The engine's utility guard (``max_eval_drop``: stop ascending once eval accuracy fell that
    far) defaults to the acceptance policy's budget, so the method stops where the policy would
    still accept instead of overshooting and having the job rejected. ``retrain`` starts from
    the version's recorded recipe.
    """
    from unlearning import ParamsError, get_method
    from unlearning.methods import recommended_params

    name = method or settings.default_method
    try:
        spec = get_method(name)
        if spec.requires_retain and not has_retain:
            raise ParamsError(
                f"method {name!r} needs the retain set: register the model's training set, name it "
                "when uploading the version, and ask by subject or sample ids; or use 'imu' or 'ga'"
            )
        if name == "retrain" and recipe is not None:
            params = {**{k: v for k, v in recipe.items() if k != "seed"}, **(params or {})}
        # Request params refine the method's recommended defaults, the engine's and the CLI's too
        # (imu, ga, npo: the holdout-anchored preset; {"preset": "official"} is the paper's recipe).
        given = recommended_params(name, params)
        if "max_eval_drop" in spec.params_model.model_fields and "max_eval_drop" not in given:
            given["max_eval_drop"] = policy.max_eval_accuracy_drop
        resolved = spec.parse_params(given).model_dump(mode="json")
    except ParamsError as exc:
        raise unprocessable(str(exc), error="ParamsError") from exc
    return name, resolved


def resolve_policy(settings: Settings, policy: AcceptancePolicy | None) -> AcceptancePolicy:
    try:
        return AcceptancePolicy.resolve(settings, policy)
    except PolicyLimitError as exc:
        raise unprocessable(str(exc)) from exc


def parse_policy(raw: Any) -> AcceptancePolicy | None:
    return None if raw is None else parse_model(raw, AcceptancePolicy, prefix="policy")


def resolve_run(
    settings: Settings,
    model_name: str,
    latest: ModelVersion,
    method: str,
    params: dict[str, Any] | None,
    policy: AcceptancePolicy,
    has_retain: bool,
) -> tuple[str, dict[str, Any]]:
    """The method and resolved params a job of the model's latest version would run (422 if the
    params are bad, out of this service's bounds, or need an eval set the version lacks)."""
    method, resolved = resolve_method(
        settings, method, params, policy, has_retain=has_retain, recipe=latest.recipe
    )
    check_param_bounds(settings, resolved)
    if resolved.get("early_stop") in ("eval_accuracy", "mia") and latest.eval_set_key is None:
        raise unprocessable(
            f"params.early_stop={resolved['early_stop']!r} needs an eval set, and version "
            f"{latest.version} of model {model_name} has none",
            error="ParamsError",
        )
    return method, resolved


def validate_forget_set(
    settings: Settings, model: Model, intake: Intake
) -> tuple[dict[str, Any], bytes, list[str]]:
    """Normalised tensors, their canonical safetensors bytes and per-sample digests (422 if bad).

    Uploads are parsed as safetensors or npz (allow_pickle=False) only: nothing is unpickled.
    """
    from unlearning import DataError, InvalidInputError, sample_digests, validate_dataset
    from unlearning.data import dataset_bytes

    limit = settings.max_inline_samples if intake.inline else settings.max_forget_samples
    assert intake.source is not None, "by reference, prepare() reads the samples first"
    try:
        data = validate_dataset(
            intake.source, model.architecture, max_samples=limit, max_bytes=settings.max_body_bytes
        )
        blob = dataset_bytes(data)
        digests = sample_digests(data)
    except (DataError, InvalidInputError) as exc:
        raise unprocessable(f"forget_set: {exc}", error=type(exc).__name__) from exc
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. ragged inline lists
        raise unprocessable(f"forget_set: cannot read the samples: {exc}", error="DataError") from exc
    return data, blob, digests


# -- intake ----------------------------------------------------------------------------------


def _find_open_job(
    session: Session, model_id: str, method: str, params: dict[str, Any], policy: dict[str, Any]
) -> list[str]:
    """Queued jobs of the model with the same settings (JSON columns compare in Python)."""
    rows = session.execute(
        select(Job.id, Job.params, Job.policy)
        .where(Job.model_id == model_id, Job.status == JobStatus.QUEUED, Job.method == method)
        .order_by(Job.created_at.desc())
        .limit(20)
    ).all()
    return [r.id for r in rows if r.params == params and r.policy == policy]


def _join_or_create_job(
    session: Session,
    settings: Settings,
    model: Model,
    tenant_id: str,
    run: tuple[str, dict[str, Any], dict[str, Any]],
    n: int,
    method_reason: str | None,
) -> tuple[str, bool]:
    method, params, policy = run
    # The batch an earlier intake of this transaction joined or created is tried first: a group
    # commit of intakes to one model then asks for the open batch once, not once per request.
    joined = _held(session).setdefault(("jobs", model.id, method), [])
    known = [j for pa, po, j in joined if pa == params and po == policy]

    def candidates() -> Iterator[str]:
        yield from known
        # Asked only when the known batch is full, taken or none yet.
        yield from (j for j in _find_open_job(session, model.id, method, params, policy) if j not in known)

    for job_id in candidates():
        # Race-free against a worker's claim: join only while the row is still queued.
        res = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == JobStatus.QUEUED,
                Job.n_samples + n <= settings.max_forget_samples,
            )
            .values(n_requests=Job.n_requests + 1, n_samples=Job.n_samples + n)
            .execution_options(synchronize_session=False)
        )
        if int(getattr(res, "rowcount", 0) or 0) == 1:
            if job_id not in known:
                joined.append((params, policy, job_id))
            return job_id, True
    job = Job(
        tenant_id=tenant_id,
        model_id=model.id,
        method=method,
        params=params,
        policy=policy,
        seed=0,
        status=JobStatus.QUEUED,
        n_requests=1,
        n_samples=n,
        attempts=0,
        max_attempts=settings.job_max_attempts,
        method_reason=method_reason,
    )
    session.add(job)
    session.flush()
    joined.append((params, policy, job.id))
    return job.id, False


def _waiting_samples(db: Session, tenant_id: str) -> int:
    """The tenant's queued and running samples (what check_backlog counts)."""
    total = db.scalar(
        select(func.coalesce(func.sum(DeletionRequest.n_samples), 0)).where(
            DeletionRequest.tenant_id == tenant_id,
            DeletionRequest.status.in_((RequestStatus.QUEUED, RequestStatus.RUNNING)),
        )
    )
    return int(total or 0)


def _held(db: Session) -> dict[Any, Any]:
    """What the session's current transaction (or savepoint) already holds: row locks taken, the
    batches joined. Valid until that transaction ends; a new one starts empty."""
    db.connection()  # begin now, so that the key below is the transaction that holds them
    tx = db.get_nested_transaction() or db.get_transaction()
    held = db.info.get("intake_held")
    if held is None or held[0] is not tx:
        held = (tx, {})
        db.info["intake_held"] = held
    return held[1]


@dataclass
class Prepared:
    """A request validated against its model, its forget set stored: ready to be recorded."""

    model: Model  # detached snapshot (id, name, architecture, latest_version)
    intake: Intake
    method: str
    method_reason: str
    params: dict[str, Any]
    policy: AcceptancePolicy
    digests: list[str]
    blob: bytes
    stored: StoredObject | None  # None: nothing to store (already erased)
    found: Found | None = None  # by reference: where the samples were found
    already_erased: bool = False


def prepare(ctx: ServiceContext, principal: Principal, model_name: str, intake: Intake) -> Prepared:
    """Validate everything against the model and store the forget set; writes no row.

    Reads in a short transaction of its own, then validates the samples outside any: on SQLite
    every transaction holds the write lock, and parsing tensors is CPU work.
    """
    settings = ctx.settings
    found: Found | None = None
    with read_scope(ctx.session_factory) as read:
        model = get_model(read, principal.tenant_id, model_name)
        if model.latest_version is None:
            raise conflict(f"model {model_name} has no version yet: upload one before requesting deletions")
        if intake.base_version is not None and intake.base_version != model.latest_version:
            raise conflict(
                f"base_version {intake.base_version} is not the latest version ({model.latest_version}) "
                f"of model {model_name}: jobs always start from the newest version",
                latest_version=model.latest_version,
            )
        latest = get_version(read, model, "latest")
        if intake.reference is not None:
            try:
                found = find_in_training_set(read, ctx, principal.tenant_id, model, latest, intake.reference)
            except Problem as exc:
                if not_in_training_set(exc) and already_erased(read, model, intake.reference, []):
                    return _noop(model, intake, settings)
                raise
        has_retain = found is not None
        policy = resolve_policy(settings, intake.policy)
        method, reason = choose_method(settings, intake.method, has_retain)
        method, params = resolve_run(settings, model_name, latest, method, intake.params, policy, has_retain)
    if found is not None:
        # Read outside the transaction above: the dataset reader opens its own.
        intake.source = read_samples(ctx, found.dataset_version_id, found.selection.sample_ids)
    _data, blob, digests = validate_forget_set(settings, model, intake)
    if found is None:
        with read_scope(ctx.session_factory) as read:
            if already_erased(read, model, None, digests):
                return _noop(model, intake, settings, digests)
    # Content-addressed: a retry stores nothing new.
    stored = ctx.storage.put_bytes(blob, kind=FORGET_SET_KIND)
    return Prepared(model, intake, method, reason, params, policy, digests, blob, stored, found)


def _noop(model: Model, intake: Intake, settings: Settings, digests: list[str] | None = None) -> Prepared:
    return Prepared(
        model=model,
        intake=intake,
        method="none",
        method_reason="the samples were already erased from this model",
        params={},
        policy=AcceptancePolicy.resolve(settings, None),
        digests=digests or [],
        blob=b"",
        stored=None,
        already_erased=True,
    )


def queue_job(
    ctx: ServiceContext,
    db: Session,
    tenant_id: str,
    model: Model,
    method: str,
    params: dict[str, Any],
    policy: dict[str, Any],
    n: int,
    method_reason: str | None,
) -> tuple[str, bool]:
    """Put ``n`` samples on the model's queue in the caller's transaction: the job id, and whether
    an open batch was joined (else a new job was made, to be announced through the outbox)."""
    settings = ctx.settings
    # Serialise intakes per model (row lock on PostgreSQL; SQLite's BEGIN IMMEDIATE already does):
    # concurrent requests then find each other's open batch instead of each creating a job. A
    # transaction that records many (a group commit) locks the row once.
    held = _held(db)
    if ("model", model.id) not in held:
        db.execute(select(Model.id).where(Model.id == model.id).with_for_update())
        held["model", model.id] = True
    # The tenant's backlog is counted once per transaction, then kept up to date here.
    backlog = ("backlog", tenant_id)
    if backlog not in held:
        held[backlog] = _waiting_samples(db, tenant_id)
    if held[backlog] + n > settings.tenant_max_queued_samples:
        db.flush()  # this transaction's requests too (a group commit defers their flush)
        check_backlog(db, settings, tenant_id, n)  # counts again; the 429 is its answer
    held[backlog] += n
    return _join_or_create_job(db, settings, model, tenant_id, (method, params, policy), n, method_reason)


def audit(
    db: Session,
    principal: Principal,
    action: str,
    object_id: str,
    payload: dict[str, Any],
    model: str | None = None,
) -> None:
    """An audit event of what ``principal`` asked for, in the caller's transaction."""
    append_event(
        db,
        actor=principal.actor,
        action=action,
        tenant_id=principal.tenant_id,
        model=model,
        object_id=object_id,
        payload=payload,
    )


def record(ctx: ServiceContext, db: Session, principal: Principal, p: Prepared) -> DeletionRequest:
    """Write the request, its job (new or joined), the outbox row and the audit event in the
    caller's transaction; the job is handed to the broker after it commits. Samples that were
    already erased make a request that is completed at once, with no job."""
    if p.already_erased:
        return _record_noop(ctx, db, principal, p)
    assert p.stored is not None
    stored = p.stored
    n = len(p.digests)
    policy_json = p.policy.model_dump(mode="json")
    job_id, joined = queue_job(
        ctx, db, principal.tenant_id, p.model, p.method, p.params, policy_json, n, p.method_reason
    )
    req = DeletionRequest(
        id=new_id("del"),  # now, not at the flush: a group commit flushes its batch at the end
        tenant_id=principal.tenant_id,
        model_id=p.model.id,
        job_id=job_id,
        subject=p.intake.subject,
        method=p.method,
        params=p.params,
        policy=policy_json,
        base_version=p.intake.base_version,
        status=RequestStatus.QUEUED,
        n_samples=n,
        sample_digests=p.digests,
        forget_set_sha256=stored.sha256,
        forget_set_key=stored.key,
        dataset_id=p.found.dataset_id if p.found else None,
        sample_ids=[str(i) for i in p.found.selection.sample_ids] if p.found else None,
        erasure_id=p.intake.erasure_id,
        created_by_key=principal.key_id,
    )
    db.add(req)
    if not flush_deferred(db):
        db.flush()
    if not joined:
        enqueue_job(db, job_id)
    key = ctx.tenant_key(principal.tenant_id)
    audit(
        db,
        principal,
        "deletion.requested",
        req.id,
        model=p.model.name,
        payload={
            "job_id": job_id,
            "joined_batch": joined,
            "subject_digest": subject_digest(key, p.intake.subject),
            "method": p.method,
            "method_reason": p.method_reason,
            "n_samples": n,
            "by_reference": p.found is not None,
            "erasure_id": p.intake.erasure_id,
            "forget_set_sha256": stored.sha256,
            "sample_digests": keyed_digests(key, p.digests),
        },
    )

    def ensure_stored() -> None:
        # A purge running concurrently may have removed the same content-addressed blob just
        # before our commit made it referenced again; the purge re-checks after deleting, and so
        # do we.
        if not ctx.storage.exists(stored.key):
            ctx.storage.put_bytes(p.blob, kind=FORGET_SET_KIND)

    call_after_commit(db, ensure_stored)
    log.info("deletion_requested", request_id=req.id, job_id=job_id, joined=joined, n_samples=n)
    return req


# sha256 of no bytes: a request completed as a no-op stored no forget set.
_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _record_noop(ctx: ServiceContext, db: Session, principal: Principal, p: Prepared) -> DeletionRequest:
    now = utcnow()
    req = DeletionRequest(
        tenant_id=principal.tenant_id,
        model_id=p.model.id,
        job_id=None,
        subject=p.intake.subject,
        method=p.method,
        params={},
        policy=p.policy.model_dump(mode="json"),
        base_version=p.intake.base_version,
        status=RequestStatus.COMPLETED,
        outcome=RequestOutcome.ALREADY_ERASED,
        n_samples=len(p.digests),
        sample_digests=p.digests,
        forget_set_sha256=_EMPTY_SHA256,
        forget_set_key=None,
        sample_ids=[str(i) for i in p.intake.reference.sample_ids]
        if p.intake.reference and p.intake.reference.sample_ids
        else None,
        erasure_id=p.intake.erasure_id,
        result_version=p.model.latest_version,
        finished_at=now,
        created_by_key=principal.key_id,
    )
    db.add(req)
    db.flush()
    key = ctx.tenant_key(principal.tenant_id)
    audit(
        db,
        principal,
        "deletion.already_erased",
        req.id,
        model=p.model.name,
        payload={
            "subject_digest": subject_digest(key, p.intake.subject),
            "version": p.model.latest_version,
            "sample_digests": keyed_digests(key, p.digests),
            "erasure_id": p.intake.erasure_id,
        },
    )
    return req


def replay(ctx: ServiceContext, idem: idempotency.IdempotencyContext) -> Answer | None:
    """The answer stored for this Idempotency-Key (a replay), or None for a new key."""
    with read_scope(ctx.session_factory) as read:
        stored = idempotency.lookup(read, idem)
    if stored is None:
        return None
    return Answer(stored.status_code, stored.body, {**stored.headers, "Idempotent-Replayed": "true"})


def write_once(
    ctx: ServiceContext,
    idem: idempotency.IdempotencyContext | None,
    stored_keys: list[str],
    write: Callable[[Session], Callable[[Session], Answer]],
) -> Answer:
    """Run ``write`` (it writes, and returns how to answer once its rows are flushed) with its
    idempotency record, committed before this returns; on a race with the same key, answer as the
    winner did; on any failure, remove the blobs nobody references.

    The transaction is shared with the intakes that arrive meanwhile (service.db.GroupCommit):
    each holds the model's row lock and the tenant's audit-chain lock until its commit, so one
    transaction (and one fsync) per request would serialise a model's intake behind the disk;
    their rows are flushed together too. A duplicate Idempotency-Key fails the batch's commit,
    which is then retried request by request: the duplicate's own commit fails, and it replays.
    """

    def unit(db: Session) -> AfterFlush[Answer]:
        answer_of = write(db)

        def then(db: Session) -> Answer:
            answer = answer_of(db)
            if idem is not None:
                idempotency.store(db, idem, answer.status_code, answer.body, answer.headers)
            return answer

        return AfterFlush(then)

    try:
        return group_commit(ctx.session_factory).run(unit)
    except IntegrityError:
        _forget_orphans(ctx, stored_keys)
        replayed = replay(ctx, idem) if idem is not None else None
        if replayed is not None:
            return replayed
        raise
    except BaseException:
        _forget_orphans(ctx, stored_keys)
        raise


def submit(
    ctx: ServiceContext,
    db: Session,
    principal: Principal,
    model_name: str,
    intake: Intake,
    idem: idempotency.IdempotencyContext | None,
) -> Answer:
    if idem is not None and (replayed := replay(ctx, idem)) is not None:
        return replayed
    p = prepare(ctx, principal, model_name, intake)
    return write_once(
        ctx, idem, _keys([p]), one_request(ctx, p.model.name, lambda db: record(ctx, db, principal, p))
    )


def one_request(
    ctx: ServiceContext, model_name: str, record_one: Callable[[Session], DeletionRequest]
) -> Callable[[Session], Callable[[Session], Answer]]:
    """The write of one request for :func:`write_once`: record it, then (once its rows are flushed)
    answer with it and its Location."""

    def write(db: Session) -> Callable[[Session], Answer]:
        req = record_one(db)

        def answer(_db: Session) -> Answer:
            body = to_out(ctx, req, model_name).model_dump(mode="json")
            # Already erased: done now (200), not accepted for later (202).
            status = 200 if req.status == RequestStatus.COMPLETED else 202
            return Answer(status, body, {"Location": f"/v1/deletion-requests/{req.id}"})

        return answer

    return write


def submit_bulk(
    ctx: ServiceContext,
    db: Session,
    principal: Principal,
    model_name: str,
    intakes: list[Intake],
    idem: idempotency.IdempotencyContext | None,
) -> Answer:
    """Many deletion requests in one call and one transaction: all are accepted, or none."""
    if idem is not None and (replayed := replay(ctx, idem)) is not None:
        return replayed
    prepared: list[Prepared] = []
    for i, intake in enumerate(intakes):
        try:
            prepared.append(prepare(ctx, principal, model_name, intake))
        except Problem as exc:
            _forget_orphans(ctx, _keys(prepared))
            exc.detail = f"requests[{i}]: {exc.detail}"
            exc.extra["index"] = i
            raise

    def write(db: Session) -> Callable[[Session], Answer]:
        reqs = [record(ctx, db, principal, p) for p in prepared]

        def answer(_db: Session) -> Answer:
            items = [to_out(ctx, r, model_name) for r in reqs]
            return Answer(202, {"items": [i.model_dump(mode="json") for i in items]}, {})

        return answer

    return write_once(ctx, idem, _keys(prepared), write)


def _keys(prepared: list[Prepared]) -> list[str]:
    return [p.stored.key for p in prepared if p.stored is not None]


def _forget_orphans(ctx: ServiceContext, keys: list[str]) -> None:
    """Remove blobs stored for requests that were then not committed (unless someone uses them)."""
    for key in keys:
        if not key_referenced(ctx.session_factory, key):
            with contextlib.suppress(Exception):
                ctx.storage.delete(key)


# -- reads -----------------------------------------------------------------------------------


def subject_digest(key: bytes, subject: str | None) -> str | None:
    return None if subject is None else keyed_digest(key, subject)


def to_out(ctx: ServiceContext, req: DeletionRequest, model_name: str) -> DeletionRequestOut:
    window = retry_window(req, ctx.settings.failed_forget_set_retention_seconds, utcnow())
    return DeletionRequestOut(
        id=req.id,
        model=model_name,
        status=req.status,
        job_id=req.job_id,
        subject_digest=subject_digest(ctx.tenant_key(req.tenant_id), req.subject),
        method=req.method,
        params=dict(req.params or {}),
        policy=dict(req.policy or {}),
        base_version=req.base_version,
        result_version=req.result_version,
        n_samples=req.n_samples,
        forget_set_sha256=req.forget_set_sha256,
        forget_set_purged=req.forget_set_key is None,
        by_reference=req.dataset_id is not None,
        erasure_id=req.erasure_id,
        outcome=req.outcome,
        exact_version=req.exact_version,
        stages=stages(req),
        retryable=window.retryable,
        retry_until=window.until,
        error=req.error,
        created_at=req.created_at,
        updated_at=req.updated_at,
        finished_at=req.finished_at,
    )


def _load(db: Session, tenant_id: str, request_id: str) -> tuple[DeletionRequest, str]:
    return get_owned(db, DeletionRequest, tenant_id, request_id, "deletion request")


# The reads below use a read transaction of their own, not the request's session (``db``, left
# unused): on SQLite that one would take the write lock and wait for every writer, so a GET would
# queue behind the intake's transactions.


def get_request(ctx: ServiceContext, db: Session, tenant_id: str, request_id: str) -> DeletionRequestOut:
    with read_scope(ctx.session_factory) as read:
        req, model_name = _load(read, tenant_id, request_id)
        return to_out(ctx, req, model_name)


def get_sample_digests(ctx: ServiceContext, db: Session, tenant_id: str, request_id: str) -> SampleDigestsOut:
    """The request's sample digests, keyed (service/privacy.py): a sub-resource, because a
    request of 10,000 samples carries 0.75 MB of them."""
    with read_scope(ctx.session_factory) as read:
        req, _ = _load(read, tenant_id, request_id)
    digests = keyed_digests(ctx.tenant_key(tenant_id), list(req.sample_digests or []))
    return SampleDigestsOut(request_id=req.id, n_samples=req.n_samples, sample_digests=digests)


def list_requests(
    ctx: ServiceContext, db: Session, tenant_id: str, query: ModelListQuery, subject: str | None = None
) -> tuple[list[DeletionRequestOut], str | None]:
    where = [DeletionRequest.subject == subject] if subject is not None else []
    with read_scope(ctx.session_factory) as read:
        rows, names, next_cursor = page_model_rows(
            read, DeletionRequest, tenant_id, query, statuses=tuple(RequestStatus), where=where
        )
        return [to_out(ctx, r, names[r.model_id]) for r in rows], next_cursor
