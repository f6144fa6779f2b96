"""Training jobs: a model version trained from a registered dataset version and a recipe.

One mechanism serves three needs: an owner training a version on the service (e.g. with IAU's
gradient restriction, so that IAU works as its paper intends), the exact path of erasure
(retraining without the erased samples), and eventual exactness (service/jobs/exactness.py).
A training job takes the model lock like any job and publishes with the same fence.
"""

from __future__ import annotations

from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.context import ServiceContext
from service.datasets.logic import iter_retain_batches
from service.db import session_scope, utcnow
from service.deps import Principal
from service.errors import Problem, unprocessable
from service.jobs import lifecycle
from service.jobs.errors import LostLease
from service.jobs.exactness import EXACT_METHOD
from service.jobs.lifecycle import Claim, rowcount
from service.jobs.liveness import Liveness
from service.jobs.states import JobKind, JobStatus, RequestStatus, TrainReason
from service.json_safe import json_safe
from service.outbox import enqueue_job
from service.registry import lineage
from service.registry.logic import get_model, get_version, publish_version
from service.registry.retirement import RetiredReason, retire_superseded
from service.tables import DeletionRequest, Job, Model, ModelVersion
from unlearning import build_model, evaluate, load_checkpoint, state_dict_bytes, validate_dataset
from unlearning.batching import resolve_device
from unlearning.data import concat_datasets
from unlearning.samples import num_samples
from unlearning.training import train

CHECKPOINT_KIND = "checkpoints"
# Rows read per step when streaming a training set out of its shards.
READ_BATCH = 4096


def create_training_job(
    db: Session,
    ctx: ServiceContext,
    model: Model,
    link: lineage.TrainingLink,
    recipe: dict[str, Any],
    reason: TrainReason,
    actor: str,
) -> Job:
    """A queued training job, announced after the caller's transaction commits."""
    job = Job(
        tenant_id=model.tenant_id,
        model_id=model.id,
        kind=JobKind.TRAIN,
        method="train",
        params=recipe,
        policy={},
        seed=int(recipe.get("seed", 0)),
        status=JobStatus.QUEUED,
        n_requests=0,
        n_samples=0,
        attempts=0,
        max_attempts=ctx.settings.job_max_attempts,
        dataset_version_id=link.dataset_version_id,
        reason=reason,
        method_reason=f"training: {reason}",
    )
    db.add(job)
    db.flush()
    enqueue_job(db, job.id)
    append_event(
        db,
        actor=actor,
        action="training.requested",
        tenant_id=model.tenant_id,
        model=model.name,
        object_id=job.id,
        payload={"dataset": link.dataset, "version": link.version, "recipe": recipe, "reason": str(reason)},
    )
    return job


def submit(
    ctx: ServiceContext,
    db: Session,
    principal: Principal,
    model_name: str,
    dataset: str,
    version: str | None,
    recipe: dict[str, Any] | None,
) -> Job:
    with session_scope(ctx.session_factory) as read:
        task = get_model(read, principal.tenant_id, model_name).task
    link = lineage.resolve_link(ctx, principal.tenant_id, task, dataset, version, recipe or {})
    assert link is not None and link.recipe is not None
    n = _dataset_size(ctx, link.dataset_version_id)
    if n > ctx.settings.training_max_samples:
        raise unprocessable(
            f"dataset {dataset} version {link.version} has {n} samples; this service trains on at most "
            f"{ctx.settings.training_max_samples}"
        )
    model = get_model(db, principal.tenant_id, model_name, for_update=True)
    return create_training_job(db, ctx, model, link, link.recipe, TrainReason.REQUESTED, principal.actor)


def _dataset_size(ctx: ServiceContext, dataset_version_id: str) -> int:
    from service.datasets.records import get_version_by_id

    with session_scope(ctx.session_factory) as read:
        return get_version_by_id(read, dataset_version_id)[1].n_samples


def _load(ctx: ServiceContext, claim: Claim) -> tuple[Model, ModelVersion | None, dict[str, Any]]:
    with session_scope(ctx.session_factory) as s:
        model = s.get(Model, claim.model_id)
        assert model is not None
        base = get_version(s, model, claim.base_version) if claim.base_version is not None else None
    assert claim.dataset_version_id is not None
    parts = list(iter_retain_batches(ctx, claim.dataset_version_id, [], READ_BATCH))
    if not parts:
        raise Problem(422, "Unprocessable Content", "the training set is empty")
    data = concat_datasets(parts) if len(parts) > 1 else parts[0]
    return model, base, data


def run_training(ctx: ServiceContext, claim: Claim, worker_id: str, live: Liveness) -> int:
    """Train, evaluate on the base version's eval set, publish; returns the new version."""
    model_row, base, data = _load(ctx, claim)
    recipe = lineage.TrainingRecipe.model_validate(claim.params)
    architecture = dict(model_row.architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = build_model(architecture)
    live.progress("train", 0.0)
    report = train(
        net,
        data,
        **recipe.retrain_params(),
        seed=recipe.seed,
        device=ctx.settings.device,
        progress=live.progress,
        should_cancel=live.should_cancel,
    )
    eval_set = (
        validate_dataset(ctx.storage.read_bytes(base.eval_set_key), architecture)
        if base and base.eval_set_key
        else None
    )
    metrics: dict[str, Any] = {"kind": "train", "n_train": num_samples(data), "train": report}
    device = str(resolve_device(ctx.settings.device))
    if eval_set is not None:
        metrics["eval"] = evaluate(net, eval_set, device=device)
        if base is not None and claim.reason == TrainReason.EXACTNESS:
            approx = build_model(architecture)
            load_checkpoint(approx, ctx.storage.read_bytes(base.storage_key))
            metrics["approximate_vs_exact"] = compare(approx, net, eval_set, device)
    if live.lost.is_set():
        raise LostLease("lease lost while training")
    live.progress("publish", 0.99)
    stored = ctx.storage.put_bytes(state_dict_bytes(net), kind=CHECKPOINT_KIND)
    with session_scope(ctx.session_factory) as s:
        return _publish(s, claim, worker_id, base, stored.sha256, stored.size, stored.key, json_safe(metrics))


def compare(
    approx: torch.nn.Module, exact: torch.nn.Module, eval_set: dict[str, Any], device: str
) -> dict[str, Any]:
    """How far the approximate version was from the exact one, on the eval set: accuracy and
    loss of each, their Avg Gap (points) and how often they predict the same class."""
    from unlearning.losses import logits

    a, e = evaluate(approx, eval_set, device=device), evaluate(exact, eval_set, device=device)
    batch = {k: v.to(device) for k, v in eval_set.items()}
    with torch.no_grad():
        pa = logits(approx.to(device).eval(), batch).argmax(-1)
        pe = logits(exact.to(device).eval(), batch).argmax(-1)
    agreement = float((pa == pe).double().mean())
    return {
        "approximate": a,
        "exact": e,
        "eval_accuracy_gap_points": 100 * abs(a["accuracy"] - e["accuracy"]),
        "agreement": agreement,
    }


def _publish(
    s: Session,
    claim: Claim,
    worker_id: str,
    base: ModelVersion | None,
    sha256: str,
    size: int,
    key: str,
    metrics: dict[str, Any],
) -> int:
    now = utcnow()
    res = s.execute(
        update(Job)
        .where(Job.id == claim.job_id, Job.lease_owner == worker_id, Job.status == JobStatus.RUNNING)
        .values(status=JobStatus.SUCCEEDED, stage="done", progress=1.0, finished_at=now, metrics=metrics)
        .execution_options(synchronize_session=False)
    )
    if rowcount(res) != 1:
        raise LostLease("the job is no longer owned by this worker")
    model = s.scalars(
        select(Model)
        .where(Model.id == claim.model_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if model.lock_job_id != claim.job_id or model.latest_version != claim.base_version:
        raise LostLease(f"model lock or base moved (lock={model.lock_job_id}, latest={model.latest_version})")
    version = publish_version(
        s,
        model,
        sha256=sha256,
        size_bytes=size,
        storage_key=key,
        parent_version=claim.base_version,
        created_by_job=claim.job_id,
        eval_set_sha256=base.eval_set_sha256 if base else None,
        eval_set_key=base.eval_set_key if base else None,
        eval_set_samples=base.eval_set_samples if base else None,
        metrics=metrics,
        description=f"trained from the registered data ({claim.reason}; job {claim.job_id})",
        dataset_version_id=claim.dataset_version_id,
        recipe=claim.params,
    )
    s.execute(
        update(Job)
        .where(Job.id == claim.job_id)
        .values(result_version=version.version)
        .execution_options(synchronize_session=False)
    )
    exact_for: list[str] = []
    if claim.reason == TrainReason.EXACTNESS and claim.base_version is not None:
        # The approximate versions still carry some influence of what they forgot: retire them,
        # and tell each request it is now exactly erased.
        retire_superseded(s, model, claim.base_version, actor=f"worker:{worker_id}", job_id=claim.job_id)
        exact_for = list(
            s.scalars(
                select(DeletionRequest.id).where(
                    DeletionRequest.model_id == model.id,
                    DeletionRequest.status == RequestStatus.COMPLETED,
                    DeletionRequest.exact_version.is_(None),
                    DeletionRequest.job_id.is_not(None),
                    DeletionRequest.method != EXACT_METHOD,
                )
            )
        )
        if exact_for:
            s.execute(
                update(DeletionRequest)
                .where(DeletionRequest.id.in_(exact_for))
                .values(exact_version=version.version, updated_at=now)
                .execution_options(synchronize_session=False)
            )
    lifecycle.release_model_lock(s, claim.model_id, claim.job_id)
    append_event(
        s,
        actor=f"worker:{worker_id}",
        action="job.succeeded",
        tenant_id=claim.tenant_id,
        model=claim.model_name,
        object_id=claim.job_id,
        payload={
            "kind": str(JobKind.TRAIN),
            "reason": claim.reason,
            "base_version": claim.base_version,
            "result_version": version.version,
            "sha256": sha256,
            "exact_for_requests": exact_for,
            "retired_reason": str(RetiredReason.ERASURE) if exact_for else None,
            "metrics": metrics,
        },
    )
    lifecycle.enqueue_next_job(s, claim.model_id, exclude=claim.job_id)
    return version.version
