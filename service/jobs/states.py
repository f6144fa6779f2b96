"""States of jobs and deletion requests, and how one run of a job can end."""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    UNLEARN = "unlearn"  # deletion requests: forget their samples
    TRAIN = "train"  # a version trained from a dataset version and a recipe
    REFERENCES = "references"  # reference models for membership tests (service/references)


class TrainReason(StrEnum):
    REQUESTED = "requested"  # an owner asked for it
    EXACTNESS = "exactness"  # eventual exactness: retrain without every erased sample


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RequestStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RequestOutcome(StrEnum):
    """Why a request ended as it did, where its status alone does not say."""

    ALREADY_ERASED = "already_erased"  # completed at once, with no job: nothing left to forget
    # Failed the acceptance policy: retryable (POST /v1/deletion-requests/{id}/retry), and an
    # uploaded forget set is kept for it until failed_forget_set_retention_seconds has passed.
    POLICY_REJECTED = "policy_rejected"


TERMINAL_JOB = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
TERMINAL_REQUEST = frozenset({RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED})
# A job's requests end as the job ends.
REQUEST_STATUS_FOR_JOB = {
    JobStatus.SUCCEEDED: RequestStatus.COMPLETED,
    JobStatus.FAILED: RequestStatus.FAILED,
    JobStatus.CANCELLED: RequestStatus.CANCELLED,
}


class RunOutcome(StrEnum):
    """What one delivery of a job did (the Celery task's return value, and the tests' oracle)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"
    NOT_CLAIMABLE = "not_claimable"  # finished, taken by a live worker, out of attempts, or unknown
    MODEL_BUSY = "model_busy"  # another job of the model runs; the message is retried later
    TENANT_BUSY = "tenant_busy"  # the tenant is at its share of the workers; retried later
    LOST_LEASE = "lost_lease"  # another worker or the reconciler took the job over
