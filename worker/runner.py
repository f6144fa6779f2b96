"""One run of one job: claim → load → unlearn → verify (acceptance policy) → publish.

Framework-free apart from the database: the Celery task is a thin wrapper around ``run_job``,
and tests or a CLI can call it directly. Safety comes from the database, not the broker:

* the claim is one conditional UPDATE (a duplicate delivery or a finished job does nothing), and
  the per-model lock is taken in the same transaction (one running job per model);
* a heartbeat thread extends the job lease and the model lock; a worker that loses its lease
  stops at the next step;
* publishing is fenced: the checkpoint is written first (content-addressed, so idempotent), then
  one transaction flips the job to succeeded only if this worker still owns it, the model lock is
  still its own and the model's latest version is still the job's base version.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select, update

from service.audit.logic import append_event
from service.context import ServiceContext
from service.db import session_scope, utcnow
from service.deletions.logic import purge_forget_sets
from service.jobs import lifecycle
from service.jobs.lifecycle import Claim, ClaimOutcome, json_safe
from service.outbox import Publisher, publish_rows
from service.registry.logic import publish_version
from service.tables import DeletionRequest, Job, Model, ModelVersion

log = structlog.get_logger("worker.runner")

CHECKPOINT_KIND = "checkpoints"


class Outcome:
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"
    NOT_CLAIMABLE = ClaimOutcome.NOT_CLAIMABLE
    MODEL_BUSY = ClaimOutcome.MODEL_BUSY
    LOST_LEASE = "lost_lease"


class PolicyRejected(Exception):
    """The unlearned model does not meet the acceptance policy; nothing is published."""

    def __init__(self, detail: str, checks: dict[str, Any]) -> None:
        super().__init__(detail)
        self.checks = checks


class LostLease(Exception):
    """Another worker (or the reconciler) took the job over; this run must publish nothing."""


# -- acceptance policy -----------------------------------------------------------------------


def evaluate_policy(policy: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Checks of the acceptance policy on the engine's before/after metrics.

    * eval accuracy drop (before − after) ≤ max_eval_accuracy_drop (skipped without an eval set);
    * forgetting (if require_forgetting): after unlearning, forget_accuracy ≤ eval_accuracy +
      forget_accuracy_margin, or MIA AUC (loss attack forget-vs-eval) ≤ 0.5 + mia_auc_margin;
      without an eval set: the forget accuracy fell or the forget loss rose.
    * class scope (params ``scope="class"``: the forget set is whole classes): utility is the eval
      accuracy on the OTHER classes (the forgotten classes' eval accuracy is meant to fall), and
      forgetting means forget_accuracy ≤ forget_accuracy_target + forget_accuracy_margin (a model
      retrained without a class scores ≈ 0 on it).
    Returns {"accepted": bool, "checks": {...}}.
    """
    before, after = report.get("before", {}), report.get("after", {})
    checks: dict[str, Any] = {}
    params = report.get("params") or {}
    if params.get("scope") == "class" and report.get("other_classes_eval"):
        return _evaluate_class_policy(policy, report, params)
    has_eval = after.get("eval_accuracy") is not None and before.get("eval_accuracy") is not None
    max_drop = float(policy.get("max_eval_accuracy_drop", 0.05))
    if has_eval:
        drop = float(before["eval_accuracy"]) - float(after["eval_accuracy"])
        checks["eval_accuracy_drop"] = {"value": drop, "limit": max_drop, "ok": drop <= max_drop + 1e-9}
    else:
        checks["eval_accuracy_drop"] = {"ok": True, "skipped": "the version has no eval set"}
    if policy.get("require_forgetting", True):
        if has_eval:
            margin = float(policy.get("forget_accuracy_margin", 0.05))
            mia_margin = float(policy.get("mia_auc_margin", 0.05))
            acc_ok = float(after["forget_accuracy"]) <= float(after["eval_accuracy"]) + margin + 1e-9
            mia = after.get("mia_auc")
            mia_ok = mia is not None and mia == mia and float(mia) <= 0.5 + mia_margin + 1e-9
            checks["forgetting"] = {
                "ok": acc_ok or mia_ok,
                "forget_accuracy": after["forget_accuracy"],
                "eval_accuracy": after["eval_accuracy"],
                "forget_accuracy_margin": margin,
                "mia_auc": mia,
                "mia_auc_limit": 0.5 + mia_margin,
            }
        else:
            fell = float(after["forget_accuracy"]) < float(before["forget_accuracy"])
            rose = float(after["forget_loss"]) > float(before["forget_loss"])
            checks["forgetting"] = {"ok": fell or rose, "rule": "forget accuracy fell or forget loss rose"}
    accepted = all(c["ok"] for c in checks.values())
    return {"accepted": accepted, "checks": checks}


def _evaluate_class_policy(
    policy: dict[str, Any], report: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    others = report["other_classes_eval"]
    max_drop = float(policy.get("max_eval_accuracy_drop", 0.05))
    drop = float(others["before"]["accuracy"]) - float(others["after"]["accuracy"])
    checks: dict[str, Any] = {
        "eval_accuracy_drop": {
            "value": drop,
            "limit": max_drop,
            "ok": drop <= max_drop + 1e-9,
            "measured_on": "eval samples of the classes not forgotten",
        }
    }
    if policy.get("require_forgetting", True):
        margin = float(policy.get("forget_accuracy_margin", 0.05))
        target = float(params.get("forget_accuracy_target") or 0.0)
        forget_acc = float(report["after"]["forget_accuracy"])
        checks["forgetting"] = {
            "ok": forget_acc <= target + margin + 1e-9,
            "forget_accuracy": forget_acc,
            "forget_accuracy_target": target,
            "forget_accuracy_margin": margin,
        }
    return {"accepted": all(c["ok"] for c in checks.values()), "checks": checks}


# -- heartbeat, progress, cancellation -------------------------------------------------------


class Liveness:
    """Heartbeat thread + throttled progress writes + cancellation checks for one run."""

    def __init__(self, ctx: ServiceContext, claim: Claim, worker_id: str) -> None:
        self.ctx = ctx
        self.claim = claim
        self.worker_id = worker_id
        self.lost = threading.Event()
        self.cancelled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{claim.job_id}", daemon=True)
        self._last_progress = 0.0
        self._last_stage: str | None = None
        self._last_cancel_check = 0.0
        self.log = log.bind(job_id=claim.job_id, worker=worker_id)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        interval = max(0.2, float(self.ctx.settings.job_heartbeat_seconds))
        while not self._stop.wait(interval):
            try:
                with session_scope(self.ctx.session_factory) as s:
                    alive = lifecycle.heartbeat(
                        s,
                        self.claim.job_id,
                        self.claim.model_id,
                        self.worker_id,
                        self.ctx.settings.job_lease_seconds,
                    )
                if not alive:
                    self.log.warning("lease_lost")
                    self.lost.set()
                    return
            except Exception as exc:  # a database blip: try again at the next beat
                self.log.warning("heartbeat_failed", error=repr(exc))

    def progress(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if stage == self._last_stage and now - self._last_progress < 1.0:
            return
        self._last_stage, self._last_progress = stage, now
        try:
            with session_scope(self.ctx.session_factory) as s:
                s.execute(
                    update(Job)
                    # Only while running: an ended job keeps its lease_owner, and a late write
                    # would overwrite the final stage ("failed", "cancelled") the job ended with.
                    .where(
                        Job.id == self.claim.job_id,
                        Job.lease_owner == self.worker_id,
                        Job.status == "running",
                    )
                    .values(stage=stage, progress=max(0.0, min(1.0, float(fraction))))
                    .execution_options(synchronize_session=False)
                )
        except Exception as exc:  # progress is advisory; never fail a job over it
            self.log.warning("progress_write_failed", error=repr(exc))

    def should_cancel(self) -> bool:
        if self.lost.is_set() or self.cancelled.is_set():
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= 0.5:
            self._last_cancel_check = now
            try:
                with session_scope(self.ctx.session_factory) as s:
                    row = s.execute(
                        select(Job.cancel_requested, Job.lease_owner, Job.status).where(
                            Job.id == self.claim.job_id
                        )
                    ).one()
                if row.cancel_requested:
                    self.cancelled.set()
                if row.lease_owner != self.worker_id or row.status != "running":
                    self.lost.set()
            except Exception as exc:
                self.log.warning("cancel_check_failed", error=repr(exc))
        return self.lost.is_set() or self.cancelled.is_set()


# -- loading and publishing ------------------------------------------------------------------


@dataclass
class Inputs:
    model: Any
    forget: dict[str, Any]
    eval: dict[str, Any] | None
    base: ModelVersion
    architecture: dict[str, Any]
    request_ids: list[str]
    digests: list[str]


def load_inputs(ctx: ServiceContext, claim: Claim) -> Inputs:
    from unlearning import InvalidInputError, build_model, load_checkpoint, validate_dataset
    from unlearning.data import concat_datasets

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
    model = build_model(architecture)
    load_checkpoint(model, ctx.storage.read_bytes(base.storage_key))
    model.eval()
    eval_set = (
        validate_dataset(ctx.storage.read_bytes(base.eval_set_key), architecture)
        if base.eval_set_key
        else None
    )
    forget_sets, digests = [], []
    for r in requests:
        if r.forget_set_key is None:
            # Not retryable: the bytes are gone (purged); the client must submit the request again.
            raise InvalidInputError(f"the forget set of request {r.id} is no longer stored")
        forget_sets.append(validate_dataset(ctx.storage.read_bytes(r.forget_set_key), architecture))
        digests.extend(r.sample_digests or [])
    forget = concat_datasets(forget_sets) if len(forget_sets) > 1 else forget_sets[0]
    return Inputs(model, forget, eval_set, base, architecture, [r.id for r in requests], digests)


def publish(
    ctx: ServiceContext, claim: Claim, worker_id: str, inputs: Inputs, new_model: Any, metrics: dict[str, Any]
) -> tuple[int, list[int]]:
    from unlearning import state_dict_bytes

    blob = state_dict_bytes(new_model)
    # Storage first: if the transaction below fails, the blob is an unreferenced, harmless orphan
    # with a content address (a retry writes the same key).
    stored = ctx.storage.put_bytes(blob, kind=CHECKPOINT_KIND)
    now = utcnow()
    with session_scope(ctx.session_factory) as s:
        res = s.execute(
            update(Job)
            .where(Job.id == claim.job_id, Job.lease_owner == worker_id, Job.status == "running")
            .values(
                status="succeeded", stage="done", progress=1.0, finished_at=now, metrics=metrics, error=None
            )
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:
            raise LostLease("the job is no longer owned by this worker")
        model_row = s.scalars(
            select(Model)
            .where(Model.id == claim.model_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        if model_row.lock_job_id != claim.job_id or model_row.latest_version != claim.base_version:
            # Someone else holds the model or published meanwhile: publishing would fork history.
            raise LostLease(
                f"model lock or base moved (lock={model_row.lock_job_id}, latest={model_row.latest_version})"
            )
        version = publish_version(
            s,
            model_row,
            sha256=stored.sha256,
            size_bytes=stored.size,
            storage_key=stored.key,
            parent_version=claim.base_version,
            created_by_job=claim.job_id,
            eval_set_sha256=inputs.base.eval_set_sha256,
            eval_set_key=inputs.base.eval_set_key,
            eval_set_samples=inputs.base.eval_set_samples,
            metrics=metrics,
            description=f"unlearned {len(inputs.digests)} samples with {claim.method} (job {claim.job_id})",
        )
        s.execute(
            update(Job)
            .where(Job.id == claim.job_id)
            .values(result_version=version.version)
            .execution_options(synchronize_session=False)
        )
        s.execute(
            update(DeletionRequest)
            .where(DeletionRequest.job_id == claim.job_id)
            .values(
                status="completed",
                result_version=version.version,
                finished_at=now,
                updated_at=now,
                error=None,
            )
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
                "base_version": claim.base_version,
                "result_version": version.version,
                "sha256": stored.sha256,
                "method": claim.method,
                "n_samples": len(inputs.digests),
                "deletion_requests": inputs.request_ids,
                "sample_digests": inputs.digests,
                "metrics": metrics,
            },
        )
        nxt = lifecycle.enqueue_next_job(s, claim.model_id, exclude=claim.job_id)
    return version.version, [nxt] if nxt is not None else []


# -- the run ---------------------------------------------------------------------------------


def _claim(ctx: ServiceContext, job_id: str, worker_id: str) -> Claim | str:
    s = ctx.session_factory()
    try:
        result = lifecycle.claim(s, job_id, worker_id, ctx.settings.job_lease_seconds)
        if isinstance(result, str):
            s.rollback()  # MODEL_BUSY: undo the attempt; the job stays queued
        else:
            s.commit()
        return result
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()


def _end(
    ctx: ServiceContext,
    publisher: Publisher | None,
    claim: Claim,
    worker_id: str,
    *,
    status: str,
    error: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> bool:
    with session_scope(ctx.session_factory) as s:
        ended, outbox = lifecycle.end_job(
            s,
            claim.job_id,
            status=status,
            error=error,
            actor=f"worker:{worker_id}",
            metrics=metrics,
            worker_id=worker_id,
        )
    if outbox and publisher is not None:
        publish_rows(ctx, publisher, outbox)
    if ended:
        purge_forget_sets(ctx, _request_ids(ctx, claim.job_id))
    return ended


def _request_ids(ctx: ServiceContext, job_id: str) -> list[str]:
    with session_scope(ctx.session_factory) as s:
        return lifecycle.request_ids_of(s, job_id)


def run_job(ctx: ServiceContext, job_id: str, worker_id: str, publisher: Publisher | None = None) -> str:
    """Run one job to its end (or do nothing if it is not claimable); returns an Outcome."""
    from unlearning import CancelledError, DivergedError, InvalidInputError, unlearn

    jlog = log.bind(job_id=job_id, worker=worker_id)
    claim = _claim(ctx, job_id, worker_id)
    if isinstance(claim, str):
        jlog.info("job_not_claimed", reason=claim)
        return claim
    jlog.info("job_claimed", attempt=claim.attempt, base_version=claim.base_version, model=claim.model_name)
    live = Liveness(ctx, claim, worker_id)
    live.start()
    report: dict[str, Any] | None = None
    try:
        try:
            live.progress("load", 0.0)
            inputs = load_inputs(ctx, claim)
            result = unlearn(
                claim.method,
                inputs.model,
                inputs.forget,
                claim.params,
                eval=inputs.eval,
                device=ctx.settings.device,
                seed=claim.seed,
                progress=live.progress,
                should_cancel=live.should_cancel,
            )
            report = json_safe(result.report)
            decision = evaluate_policy(claim.policy, report)
            metrics = {**report, "policy": decision}
            if not decision["accepted"]:
                failed = [k for k, c in decision["checks"].items() if not c["ok"]]
                raise PolicyRejected(f"acceptance policy not met: {', '.join(failed)}", decision["checks"])
            if live.lost.is_set():
                raise LostLease("lease lost while unlearning")
            live.progress("publish", 0.99)
            version, outbox = publish(ctx, claim, worker_id, inputs, result.model, json_safe(metrics))
        finally:
            live.stop()
    except CancelledError as exc:
        if live.lost.is_set():
            jlog.warning("job_abandoned", reason="lease lost")
            return Outcome.LOST_LEASE
        ended = _end(
            ctx,
            publisher,
            claim,
            worker_id,
            status="cancelled",
            error={"type": "Cancelled", "detail": str(exc)},
        )
        # False: another worker took the job over; its outcome, not ours, stands.
        return Outcome.CANCELLED if ended else Outcome.LOST_LEASE
    except PolicyRejected as exc:
        ended = _end(
            ctx,
            publisher,
            claim,
            worker_id,
            status="failed",
            error={"type": "PolicyRejected", "detail": str(exc), "checks": exc.checks},
            metrics={**(report or {}), "policy": {"accepted": False, "checks": exc.checks}},
        )
        return Outcome.FAILED if ended else Outcome.LOST_LEASE
    except (InvalidInputError, DivergedError) as exc:
        ended = _end(
            ctx,
            publisher,
            claim,
            worker_id,
            status="failed",
            error={"type": type(exc).__name__, "detail": str(exc)},
        )
        return Outcome.FAILED if ended else Outcome.LOST_LEASE
    except LostLease as exc:
        jlog.warning("job_abandoned", reason=str(exc))
        return Outcome.LOST_LEASE
    except Exception as exc:
        return _on_unexpected(ctx, publisher, claim, worker_id, exc)
    jlog.info("job_succeeded", result_version=version, base_version=claim.base_version)
    if outbox and publisher is not None:
        publish_rows(ctx, publisher, outbox)
    purge_forget_sets(ctx, inputs.request_ids)
    return Outcome.SUCCEEDED


def _on_unexpected(
    ctx: ServiceContext, publisher: Publisher | None, claim: Claim, worker_id: str, exc: BaseException
) -> str:
    """A bug or an infrastructure error: retry while attempts remain, else fail the job."""
    error = {"type": type(exc).__name__, "detail": str(exc)[:2000], "attempt": claim.attempt}
    name = type(exc).__name__
    # A time limit is a verdict on the job, not a transient failure: do not retry it.
    retryable = name not in ("SoftTimeLimitExceeded", "TimeLimitExceeded")
    log.error("job_error", job_id=claim.job_id, worker=worker_id, exc_info=exc, retryable=retryable)
    if retryable and claim.attempt < claim.max_attempts:
        with session_scope(ctx.session_factory) as s:
            ok, outbox = lifecycle.requeue_job(
                s, claim.job_id, actor=f"worker:{worker_id}", reason=error, worker_id=worker_id
            )
        if ok and publisher is not None:
            publish_rows(ctx, publisher, outbox)
        return Outcome.REQUEUED if ok else Outcome.LOST_LEASE
    ended = _end(ctx, publisher, claim, worker_id, status="failed", error=error)
    return Outcome.FAILED if ended else Outcome.LOST_LEASE
