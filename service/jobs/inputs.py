"""What a claimed job runs on: the base version's model and eval set, and its forget sets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from service.context import ServiceContext
from service.datasets.logic import retain_sample
from service.db import session_scope
from service.jobs.lifecycle import Claim
from service.tables import DeletionRequest, Model, ModelVersion
from unlearning import InvalidInputError, build_model, get_method, load_checkpoint, validate_dataset
from unlearning.data import concat_datasets


@dataclass
class JobInputs:
    model: Any
    forget: dict[str, Any]
    eval: dict[str, Any] | None
    base: ModelVersion
    architecture: dict[str, Any]
    request_ids: list[str]
    digests: list[str]
    # Samples named by reference in the model's registered training set (erased from it on publish).
    sample_ids: list[str] = field(default_factory=list)
    retain: dict[str, Any] | None = None


def load_inputs(ctx: ServiceContext, claim: Claim) -> JobInputs:
    with session_scope(ctx.session_factory) as s:
        model_row = s.get(Model, claim.model_id)
        assert model_row is not None
        base = s.scalars(
            select(ModelVersion).where(
                ModelVersion.model_id == claim.model_id, ModelVersion.version == claim.base_version
            )
        ).one()
        requests = list(
            s.scalars(
                select(DeletionRequest)
                .where(DeletionRequest.job_id == claim.job_id)
                .order_by(DeletionRequest.created_at, DeletionRequest.id)
            )
        )
        architecture = dict(model_row.architecture)
    if not requests:
        raise InvalidInputError("the job has no deletion requests")
    # The same byte limit as intake, so the worker never refuses what the API accepted.
    max_bytes = ctx.settings.max_body_bytes
    model = build_model(architecture)
    load_checkpoint(model, ctx.storage.read_bytes(base.storage_key))
    model.eval()
    eval_set = (
        validate_dataset(ctx.storage.read_bytes(base.eval_set_key), architecture, max_bytes=max_bytes)
        if base.eval_set_key
        else None
    )
    forget_sets, digests = [], []
    for r in requests:
        if r.forget_set_key is None:
            # Not retryable: the bytes are gone (purged); the client must submit the request again.
            raise InvalidInputError(f"the forget set of request {r.id} is no longer stored")
        blob = ctx.storage.read_bytes(r.forget_set_key)
        forget_sets.append(validate_dataset(blob, architecture, max_bytes=max_bytes))
        digests.extend(r.sample_digests or [])
    forget = concat_datasets(forget_sets) if len(forget_sets) > 1 else forget_sets[0]
    sample_ids = [i for r in requests for i in (r.sample_ids or [])]
    retain = None
    if get_method(claim.method).requires_retain:
        if base.dataset_version_id is None:
            raise InvalidInputError(
                f"method {claim.method} needs the retain set: the model names no training set"
            )
        # The linked version already lacks every sample erased before; leave out this job's too.
        retain = retain_sample(
            ctx,
            base.dataset_version_id,
            sample_ids,
            ctx.settings.dataset_retain_max_samples,
            claim.seed,
        )
    return JobInputs(
        model, forget, eval_set, base, architecture, [r.id for r in requests], digests, sample_ids, retain
    )
