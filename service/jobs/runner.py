"""One run of one job: claim → load → unlearn → verify (acceptance policy) → publish.

Framework-free apart from the database: the Celery task is a thin wrapper around ``run_job``,
and tests or a CLI can call it directly. Safety comes from the database, not the broker:

* the claim is one conditional UPDATE (a duplicate delivery or a finished job does nothing), and
  the per-model lock is taken in the same transaction (one running job per model);
* a heartbeat thread extends the job lease and the model lock; a worker that loses its lease
  stops at the next step;
* publishing is fenced (service.jobs.publish).

Each step is one transaction; what must follow a commit (announcing the model's next job,
purging forget sets) is recorded on the session (service.unit_of_work).
"""

from __future__ import annotations

from typing import Any

import structlog

from service.context import ServiceContext
from service.db import session_scope
from service.errors import Problem
from service.jobs import lifecycle
from service.jobs.errors import JobError, LostLease, ModelBusy, NotClaimable, PolicyRejected
from service.jobs.fairness import TenantBusy
from service.jobs.inputs import load_inputs
from service.jobs.lifecycle import Claim
from service.jobs.liveness import Liveness
from service.jobs.publish import publish_result
from service.jobs.states import JobKind, JobStatus, RunOutcome
from service.jobs.training import run_training
from service.json_safe import json_safe
from service.references.check import membership_check
from service.references.run import run_references
from unlearning import CancelledError, DivergedError, InvalidInputError, state_dict_bytes, unlearn

log = structlog.get_logger("service.jobs.runner")

CHECKPOINT_KIND = "checkpoints"
# A time limit is a verdict on the job, not a transient failure: it is not retried.
_NOT_RETRYABLE = ("SoftTimeLimitExceeded", "TimeLimitExceeded")


def run_job(ctx: ServiceContext, job_id: str, worker_id: str) -> RunOutcome:
    """Run one job to its end (or do nothing if it is not claimable); returns what happened."""
    jlog = log.bind(job_id=job_id, worker=worker_id)
    try:
        with session_scope(ctx.session_factory) as s:
            claim = lifecycle.claim(
                s, job_id, worker_id, ctx.settings.job_lease_seconds, ctx.settings.tenant_max_running_jobs
            )
    except NotClaimable as exc:
        jlog.info("job_not_claimed", reason=str(exc))
        return RunOutcome.NOT_CLAIMABLE
    except ModelBusy as exc:  # rolled back: the attempt is not counted, the job stays queued
        jlog.info("job_not_claimed", reason=str(exc))
        return RunOutcome.MODEL_BUSY
    except TenantBusy as exc:
        jlog.info("job_not_claimed", reason=str(exc))
        return RunOutcome.TENANT_BUSY
    jlog.info("job_claimed", attempt=claim.attempt, base_version=claim.base_version, model=claim.model_name)
    report: dict[str, Any] | None = None
    live = Liveness(ctx, claim, worker_id)
    try:
        with live:
            live.progress("load", 0.0)
            if claim.kind == JobKind.TRAIN:
                version = run_training(ctx, claim, worker_id, live)
                jlog.info("job_succeeded", result_version=version, kind=str(claim.kind))
                return RunOutcome.SUCCEEDED
            if claim.kind == JobKind.REFERENCES:
                run_references(ctx, claim, worker_id, live)
                jlog.info("job_succeeded", kind=str(claim.kind))
                return RunOutcome.SUCCEEDED
            inputs = load_inputs(ctx, claim)
            result = unlearn(
                claim.method,
                inputs.model,
                inputs.forget,
                claim.params,
                eval=inputs.eval,
                retain=inputs.retain,
                # The eval set is split (the engine's default): the method anchors and stops on one
                # half, the report (what the policy grades) is measured on the other, and the
                # policy's margins are sized to the check half and the forget set.
                device=ctx.settings.device,
                seed=claim.seed,
                progress=live.progress,
                should_cancel=live.should_cancel,
            )
            report = json_safe(result.report.to_dict())
            if ctx.settings.reference_models > 0 or claim.policy.requires_lira:
                # Per-example membership (service/references): part of the verification the
                # policy grades, on the unlearned model before anything is published.
                live.progress("verify", 0.96)
                report["lira"] = json_safe(membership_check(ctx, claim, inputs, result.model, report))
            decision = claim.policy.evaluate(report)
            if not decision.accepted:
                raise PolicyRejected(decision)
            if live.lost.is_set():
                raise LostLease("lease lost while unlearning")
            live.progress("publish", 0.99)
            # Storage first: if the transaction fails, the blob is an unreferenced, harmless orphan
            # with a content address (a retry writes the same key).
            stored = ctx.storage.put_bytes(state_dict_bytes(result.model), kind=CHECKPOINT_KIND)
            metrics = json_safe({**report, "policy": decision.to_dict()})
            with session_scope(ctx.session_factory) as s:
                version = publish_result(
                    s, ctx, claim, worker_id, inputs, stored, metrics, ctx.tenant_key(claim.tenant_id)
                )
    except CancelledError as exc:
        if live.lost.is_set():
            jlog.warning("job_abandoned", reason="lease lost")
            return RunOutcome.LOST_LEASE
        if live.over_budget.is_set():
            budget = ctx.settings.job_time_budget_seconds
            return _end(
                ctx,
                claim,
                worker_id,
                JobStatus.FAILED,
                JobError("BudgetExceeded", f"the job ran past its time budget of {budget:g} s"),
            )
        return _end(ctx, claim, worker_id, JobStatus.CANCELLED, JobError("Cancelled", str(exc)))
    except PolicyRejected as exc:
        checks = exc.decision.checks
        return _end(
            ctx,
            claim,
            worker_id,
            JobStatus.FAILED,
            JobError("PolicyRejected", str(exc), checks=checks),
            metrics={**(report or {}), "policy": exc.decision.to_dict()},
        )
    except (InvalidInputError, DivergedError) as exc:
        return _end(ctx, claim, worker_id, JobStatus.FAILED, JobError.of(exc))
    except Problem as exc:  # e.g. the training set could not be read: a verdict, not a blip
        return _end(ctx, claim, worker_id, JobStatus.FAILED, JobError(exc.title, exc.detail or exc.title))
    except LostLease as exc:
        jlog.warning("job_abandoned", reason=str(exc))
        return RunOutcome.LOST_LEASE
    except Exception as exc:
        return _on_unexpected(ctx, claim, worker_id, exc)
    jlog.info("job_succeeded", result_version=version, base_version=claim.base_version)
    return RunOutcome.SUCCEEDED


def _end(
    ctx: ServiceContext,
    claim: Claim,
    worker_id: str,
    status: JobStatus,
    error: JobError,
    *,
    metrics: dict[str, Any] | None = None,
) -> RunOutcome:
    with session_scope(ctx.session_factory) as s:
        ended = lifecycle.end_job(
            s,
            claim.job_id,
            status=status,
            error=error,
            actor=f"worker:{worker_id}",
            metrics=metrics,
            worker_id=worker_id,
        )
    if not ended:  # another worker took the job over; its outcome, not ours, stands
        return RunOutcome.LOST_LEASE
    return RunOutcome.CANCELLED if status == JobStatus.CANCELLED else RunOutcome.FAILED


def _on_unexpected(ctx: ServiceContext, claim: Claim, worker_id: str, exc: BaseException) -> RunOutcome:
    """A bug or an infrastructure error: retry while attempts remain, else fail the job."""
    error = JobError.of(exc, attempt=claim.attempt)
    retryable = type(exc).__name__ not in _NOT_RETRYABLE
    log.error("job_error", job_id=claim.job_id, worker=worker_id, exc_info=exc, retryable=retryable)
    if retryable and claim.attempt < claim.max_attempts:
        with session_scope(ctx.session_factory) as s:
            requeued = lifecycle.requeue_job(
                s, claim.job_id, actor=f"worker:{worker_id}", reason=error, worker_id=worker_id
            )
        return RunOutcome.REQUEUED if requeued else RunOutcome.LOST_LEASE
    return _end(ctx, claim, worker_id, JobStatus.FAILED, error)
