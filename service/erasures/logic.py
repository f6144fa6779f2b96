"""Erasure by data subject: find the subject's samples in a training set, and fan out one
deletion request (by reference) to every model whose current version was trained on them.

Lineages are per model (a request on one model erases the samples from the dataset's latest
version, while other models keep linking versions that hold them), so the samples are looked up
in the dataset's latest version and in every version (not purged) that a ready model version
links; each model whose current version links a version holding them gets a request for what
that version holds. Where no model holds the samples any more, the dataset itself is erased at
once (a new dataset version without them). Where no model holds them and the latest version
lacks them (erased before, by an erasure or by requests on the models), the erasure completes at
once as a no-op. Each model's job erases the samples from the dataset when it publishes
(service/jobs/training_data.py), so the data leaves the dataset and the models together.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import idempotency
from service.context import ServiceContext
from service.datasets import index
from service.datasets.ids import from_text, not_held, to_texts
from service.datasets.logic import erase_samples, find_samples
from service.datasets.records import get_dataset, get_version
from service.datasets.states import VersionStatus as DatasetVersionStatus
from service.db import session_scope
from service.deletions.logic import Answer, Intake, Prepared, audit, prepare, record, replay, subject_digest
from service.deletions.reference import Reference
from service.deps import Principal
from service.erasures.schemas import ErasureOut, ErasureRequestOut
from service.errors import Problem, not_found
from service.jobs.states import RequestOutcome, RequestStatus
from service.listing import get_owned
from service.pagination import paginate
from service.references.retirement import retire_sets_holding
from service.registry.retirement import VersionStatus as ModelVersionStatus
from service.tables import Dataset, DatasetVersion, DeletionRequest, Erasure, Model, ModelVersion, new_id

log = structlog.get_logger("service.erasures")


def _models_trained_on(session: Session, tenant_id: str, dataset_id: str) -> list[tuple[Model, int]]:
    """The tenant's models whose latest version links a version of the dataset, with that version."""
    rows = session.execute(
        select(Model, DatasetVersion.version)
        .join(
            ModelVersion,
            (ModelVersion.model_id == Model.id) & (ModelVersion.version == Model.latest_version),
        )
        .join(DatasetVersion, DatasetVersion.id == ModelVersion.dataset_version_id)
        .where(Model.tenant_id == tenant_id, DatasetVersion.dataset_id == dataset_id)
        .order_by(Model.name)
    ).all()
    return [(r[0], r[1]) for r in rows]


def _versions_to_search(
    session: Session, tenant_id: str, dataset: Dataset, latest: DatasetVersion
) -> list[DatasetVersion]:
    """Where an erasure looks for the samples: the dataset's latest version, and every version of
    it (not purged) that a ready version of one of the tenant's models links. Lineages are per
    model: a request on one model erases the samples from the latest version, while another
    model's version still links a version holding them."""
    linked = (
        select(ModelVersion.dataset_version_id)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(
            Model.tenant_id == tenant_id,
            ModelVersion.status == ModelVersionStatus.READY,
            ModelVersion.dataset_version_id.is_not(None),
        )
    )
    rows = session.scalars(
        select(DatasetVersion)
        .where(
            DatasetVersion.dataset_id == dataset.id,
            DatasetVersion.status != DatasetVersionStatus.PURGED,
            (DatasetVersion.id == latest.id) | DatasetVersion.id.in_(linked),
        )
        .order_by(DatasetVersion.version.desc())
    )
    return sorted(rows, key=lambda v: (v.id != latest.id, -v.version))  # the latest first


def _held(
    session: Session,
    ctx: ServiceContext,
    tenant_id: str,
    dataset: Dataset,
    version: DatasetVersion,
    subject: str | None,
    sample_ids: list[str | int] | None,
) -> list[str]:
    """The samples (ids as index text, in dataset order) of the subject, or of the given ids,
    that ``version`` holds; [] for none."""
    if subject is not None:
        try:
            selection = find_samples(
                session, ctx, tenant_id, dataset.name, subject=subject, version=version.version
            )
        except Problem as exc:
            if exc.status != 404:
                raise
            return []
        return [str(i) for i in selection.sample_ids]
    found = index.positions(session, version.id, to_texts(version.sample_id_kind, sample_ids or []))
    return [sid for sid, _pos in sorted(found.items(), key=lambda item: item[1])]


def _erased_before(session: Session, dataset_id: str, subject: str | None, ids: list[str] | None) -> bool:
    """Whether the samples were erased from this dataset before: by an erasure, or by a completed
    request on one model by reference (which erased them from the dataset's latest version)."""
    done = list(session.scalars(select(Erasure).where(Erasure.dataset_id == dataset_id)))
    requests = list(
        session.scalars(
            select(DeletionRequest).where(
                DeletionRequest.dataset_id == dataset_id, DeletionRequest.status == RequestStatus.COMPLETED
            )
        )
    )
    if subject is not None and ids is None:
        return any(e.subject == subject for e in done) or any(r.subject == subject for r in requests)
    erased = {str(i) for e in done for i in e.sample_ids} | {
        str(i) for r in requests for i in r.sample_ids or []
    }
    return bool(ids) and {str(i) for i in ids or []} <= erased


def submit(
    ctx: ServiceContext,
    db: Session,
    principal: Principal,
    dataset_name: str,
    subject: str | None,
    sample_ids: list[str | int] | None,
    idem: idempotency.IdempotencyContext | None,
) -> Answer:
    if idem is not None and (replayed := replay(ctx, idem)) is not None:
        return replayed
    erasure_id = new_id("era")
    ref = Reference(subject=subject, sample_ids=tuple(sample_ids) if sample_ids is not None else None)
    targets: list[tuple[str, Reference]] = []
    with session_scope(ctx.session_factory) as read:
        dataset = get_dataset(read, principal.tenant_id, dataset_name)
        latest = get_version(read, dataset, "latest")
        held = {
            v.version: ids
            for v in _versions_to_search(read, principal.tenant_id, dataset, latest)
            if (ids := _held(read, ctx, principal.tenant_id, dataset, v, subject, sample_ids))
        }
        found: dict[str, None] = {}  # every sample found, the latest version's first
        for ids in held.values():
            found.update(dict.fromkeys(ids))
        if sample_ids is not None:
            missing = [t for t in to_texts(latest.sample_id_kind, sample_ids) if t not in found]
            if missing and not _erased_before(read, dataset.id, None, missing):
                raise not_held(latest.sample_id_kind, missing, latest.version)
        if not found and not _erased_before(read, dataset.id, subject, _texts(sample_ids)):
            find_samples(read, ctx, principal.tenant_id, dataset.name, subject=subject)  # the 404
            raise not_found("subject", f"in dataset {dataset.name}")
        for model, linked in _models_trained_on(read, principal.tenant_id, dataset.id):
            if not held.get(linked):
                continue  # the model's data lacks them (erased from its lineage before)
            if subject is not None:
                targets.append((model.name, ref))
            else:  # only the ids its data holds: some may have been erased from its lineage before
                kind = latest.sample_id_kind
                mine = set(held[linked])
                ids_of_model = tuple(
                    from_text(kind, t) for t in to_texts(kind, sample_ids or []) if t in mine
                )
                targets.append((model.name, Reference(sample_ids=ids_of_model)))
        in_latest = held.get(latest.version, [])
        lineage = sorted(v for v in held if v != latest.version)
    ids = list(found)
    if not targets and not in_latest:
        # No model holds them and the dataset's latest version lacks them: erased before, nothing
        # left to do, and the answer says so.
        return _write(
            ctx,
            db,
            principal,
            dataset,
            erasure_id,
            ref,
            ids,
            [],
            latest.version,
            idem,
            noop=True,
            lineage=lineage,
        )
    prepared = [
        prepare(
            ctx,
            principal,
            name,
            Intake(source=None, inline=False, subject=subject, reference=model_ref, erasure_id=erasure_id),
        )
        for name, model_ref in targets
    ]
    return _write(
        ctx, db, principal, dataset, erasure_id, ref, ids, prepared, latest.version, idem, lineage=lineage,
        in_latest=in_latest,
    )  # fmt: skip


def _texts(ids: list[str | int] | None) -> list[str] | None:
    return None if ids is None else [str(i) for i in ids]


def _write(
    ctx: ServiceContext,
    db: Session,
    principal: Principal,
    dataset: Dataset,
    erasure_id: str,
    ref: Reference,
    ids: list[str],
    prepared: list[Prepared],
    latest_version: int,
    idem: idempotency.IdempotencyContext | None,
    *,
    noop: bool = False,
    lineage: list[int] | None = None,
    in_latest: list[str] | None = None,
) -> Answer:
    erasure = Erasure(
        id=erasure_id,
        tenant_id=principal.tenant_id,
        dataset_id=dataset.id,
        subject=ref.subject,
        sample_ids=ids,
        dataset_version=latest_version,
        outcome=RequestOutcome.ALREADY_ERASED if noop else None,
        created_by_key=principal.key_id,
    )
    db.add(erasure)
    db.flush()
    requests = [record(ctx, db, principal, p) for p in prepared]
    if not noop and not in_latest:
        # The dataset's latest version lacks them already (a request on one model erased them):
        # it is the version without them; the models that still hold them forget them now.
        erasure.result_dataset_version = latest_version
    if not noop and not requests and in_latest:
        # No model holds the samples: the data set itself forgets them now.
        latest = get_version(
            db, get_dataset(db, principal.tenant_id, dataset.name, for_update=True), "latest"
        )
        present = list(index.positions(db, latest.id, in_latest))
        erasure.result_dataset_version = (
            erase_samples(db, ctx, latest.id, present, principal.actor).version if present else latest.version
        )
    if ids and (noop or not requests):
        # A reference set trained on them (of a model that no longer links this data) holds them.
        retire_sets_holding(
            db, ctx, dataset_id=dataset.id, sample_ids=ids, actor=principal.actor, erasure_ids=[erasure.id]
        )
    key = ctx.tenant_key(principal.tenant_id)
    audit(
        db,
        principal,
        "erasure.requested",
        erasure.id,
        payload={
            "dataset": dataset.name,
            "subject_digest": subject_digest(key, ref.subject),
            "n_samples": len(ids),
            "dataset_version": latest_version,
            "lineage_versions": lineage or [],
            "deletion_requests": [r.id for r in requests],
            "outcome": erasure.outcome,
            "result_dataset_version": erasure.result_dataset_version,
        },
    )
    body = erasure_out(db, ctx, erasure, dataset.name).model_dump(mode="json")
    status = 200 if body["status"] == "completed" else 202
    answer = Answer(status, body, {"Location": f"/v1/erasures/{erasure.id}"})
    if idem is not None:
        idempotency.store(db, idem, answer.status_code, answer.body, answer.headers)
    db.flush()
    log.info("erasure_requested", erasure_id=erasure.id, models=len(requests), n_samples=len(ids))
    return answer


def erasure_status(erasure: Erasure, statuses: list[str]) -> str:
    if erasure.outcome == RequestOutcome.ALREADY_ERASED or not statuses:
        return "completed"
    if all(s == RequestStatus.COMPLETED for s in statuses):
        return "completed"
    if any(s in (RequestStatus.FAILED, RequestStatus.CANCELLED) for s in statuses):
        return "failed"
    return "running" if any(s == RequestStatus.RUNNING for s in statuses) else "queued"


def erasure_out(session: Session, ctx: ServiceContext, erasure: Erasure, dataset_name: str) -> ErasureOut:
    rows = session.execute(
        select(DeletionRequest, Model.name)
        .join(Model, Model.id == DeletionRequest.model_id)
        .where(DeletionRequest.erasure_id == erasure.id)
        .order_by(Model.name)
    ).all()
    requests = [
        ErasureRequestOut(
            id=r.id,
            model=name,
            status=r.status,
            job_id=r.job_id,
            result_version=r.result_version,
            outcome=r.outcome,
        )
        for r, name in rows
    ]
    return ErasureOut(
        id=erasure.id,
        dataset=dataset_name,
        status=erasure_status(erasure, [r.status for r in requests]),
        subject_digest=subject_digest(ctx.tenant_key(erasure.tenant_id), erasure.subject),
        n_samples=len(erasure.sample_ids),
        dataset_version=erasure.dataset_version,
        result_dataset_version=erasure.result_dataset_version or _written_by_jobs(session, erasure),
        outcome=erasure.outcome,
        deletion_requests=requests,
        created_at=erasure.created_at,
    )


def _written_by_jobs(session: Session, erasure: Erasure) -> int | None:
    """The newest version of the dataset lacking the samples, once a model's job wrote it."""
    dataset = session.get(Dataset, erasure.dataset_id)
    if dataset is None or dataset.latest_version is None or dataset.latest_version <= erasure.dataset_version:
        return None
    return dataset.latest_version


def _load(session: Session, tenant_id: str, erasure_id: str) -> tuple[Erasure, str]:
    return get_owned(session, Erasure, tenant_id, erasure_id, "erasure", owner=Dataset)


def get(session: Session, ctx: ServiceContext, tenant_id: str, erasure_id: str) -> ErasureOut:
    erasure, name = _load(session, tenant_id, erasure_id)
    return erasure_out(session, ctx, erasure, name)


def list_erasures(
    session: Session,
    ctx: ServiceContext,
    tenant_id: str,
    dataset: str | None,
    subject: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    stmt = select(Erasure).where(Erasure.tenant_id == tenant_id)
    if dataset is not None:
        stmt = stmt.where(Erasure.dataset_id == get_dataset(session, tenant_id, dataset).id)
    if subject is not None:
        stmt = stmt.where(Erasure.subject == subject)
    rows, next_cursor = paginate(
        session, stmt, order_by=[Erasure.created_at, Erasure.id], limit=limit, cursor=cursor, descending=True
    )
    names = dict(
        session.execute(select(Dataset.id, Dataset.name).where(Dataset.tenant_id == tenant_id)).all()
    )
    return {
        "items": [erasure_out(session, ctx, e, names[e.dataset_id]) for e in rows],
        "next_cursor": next_cursor,
    }
