"""The references job: K models trained with the version's recipe, each on a random half of its
registered training data; their checkpoints and the membership mask are stored, the job's metrics
name them (``logic.latest_set`` finds them again)."""

from __future__ import annotations

from typing import Any

import torch
from safetensors.torch import save
from sqlalchemy import update
from sqlalchemy.orm import Session

from service.audit.logic import append_event
from service.context import ServiceContext
from service.datasets.logic import iter_retain_batches
from service.datasets.states import VersionStatus as DatasetVersionStatus
from service.db import session_scope, utcnow
from service.errors import Problem
from service.jobs import lifecycle
from service.jobs.errors import LostLease
from service.jobs.lifecycle import Claim, rowcount
from service.jobs.liveness import Liveness
from service.jobs.states import JobKind, JobStatus
from service.json_safe import json_safe
from service.references.logic import STORAGE_KIND
from service.registry.lineage import TrainingRecipe
from service.tables import DatasetVersion, Job, Model
from unlearning import build_model, state_dict_bytes
from unlearning.data import concat_datasets
from unlearning.membership import balanced_in_masks, sample_keys
from unlearning.samples import num_samples, take
from unlearning.training import train

READ_BATCH = 4096


def run_references(ctx: ServiceContext, claim: Claim, worker_id: str, live: Liveness) -> None:
    k, seed = int(claim.params["k"]), int(claim.params.get("seed", 0))
    recipe = TrainingRecipe.model_validate(claim.params["recipe"])
    with session_scope(ctx.session_factory) as s:
        model = s.get(Model, claim.model_id)
        assert model is not None
        architecture = dict(model.architecture)
        assert claim.dataset_version_id is not None
        data_version = s.get(DatasetVersion, claim.dataset_version_id)
        if data_version is None or data_version.status != DatasetVersionStatus.READY:
            # Queued before an erasure replaced the data (e.g. behind the erasing job): a set
            # trained on it now would hold erased samples.
            raise Problem(
                409,
                "Conflict",
                "the dataset version this set was requested on was replaced by an erasure since: "
                "request a new set (POST /v1/models/{name}/references) to train on the current data",
            )
    parts = list(iter_retain_batches(ctx, claim.dataset_version_id, [], READ_BATCH))
    if not parts:
        raise Problem(422, "Unprocessable Content", "the training set is empty")
    data = concat_datasets(parts) if len(parts) > 1 else parts[0]
    n = num_samples(data)
    in_mask = balanced_in_masks(k, n, seed)
    checkpoints: list[str] = []
    trained: list[dict[str, Any]] = []
    for j in range(k):
        # Each reference its own initialisation and data order, as independent models would have.
        ref_seed = (recipe.seed + 7919 * (seed + 1) + j) % 2**31
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ref_seed)
            net = build_model(architecture)

        def progress(stage: str, fraction: float, j: int = j) -> None:
            live.progress("references", (j + fraction) / k)

        report = train(
            net,
            take(data, in_mask[j]),
            **recipe.retrain_params(),
            seed=ref_seed,
            device=ctx.settings.device,
            progress=progress,
            should_cancel=live.should_cancel,
        )
        checkpoints.append(ctx.storage.put_bytes(state_dict_bytes(net), kind=STORAGE_KIND).key)
        trained.append({"reference": j, "seed": ref_seed, "n_train": int(in_mask[j].sum()), "train": report})
    # The mask as uint8 (safetensors has no bool of its own everywhere) and one key per sample.
    blob = save({"keys": sample_keys(data), "in_mask": in_mask.to(torch.uint8)})
    membership = ctx.storage.put_bytes(blob, kind=STORAGE_KIND)
    metrics = {
        "kind": str(JobKind.REFERENCES),
        "k": k,
        "n_samples": n,
        "dataset_version_id": claim.dataset_version_id,
        "base_version": claim.base_version,
        "checkpoints": checkpoints,
        "membership_key": membership.key,
        "references": trained,
    }
    if live.lost.is_set():
        raise LostLease("lease lost while training reference models")
    live.progress("store", 0.99)
    with session_scope(ctx.session_factory) as s:
        _finish(s, claim, worker_id, json_safe(metrics))


def _finish(s: Session, claim: Claim, worker_id: str, metrics: dict[str, Any]) -> None:
    """Succeed the job (fenced on this worker's lease), release the model lock, record it."""
    res = s.execute(
        update(Job)
        .where(Job.id == claim.job_id, Job.lease_owner == worker_id, Job.status == JobStatus.RUNNING)
        .values(status=JobStatus.SUCCEEDED, stage="done", progress=1.0, finished_at=utcnow(), metrics=metrics)
        .execution_options(synchronize_session=False)
    )
    if rowcount(res) != 1:
        raise LostLease("the job is no longer owned by this worker")
    lifecycle.release_model_lock(s, claim.model_id, claim.job_id)
    append_event(
        s,
        actor=f"worker:{worker_id}",
        action="job.succeeded",
        tenant_id=claim.tenant_id,
        model=claim.model_name,
        object_id=claim.job_id,
        payload={
            "kind": str(JobKind.REFERENCES),
            "k": metrics["k"],
            "base_version": claim.base_version,
            "dataset_version_id": claim.dataset_version_id,
        },
    )
    lifecycle.enqueue_next_job(s, claim.model_id, exclude=claim.job_id)
