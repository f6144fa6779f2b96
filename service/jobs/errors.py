"""Why a run of a job stops early, and the error a failed job records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.jobs.policy import PolicyDecision


class NotClaimable(Exception):
    """The job is finished, held by a live worker, out of attempts, or unknown: do nothing."""


class ModelBusy(Exception):
    """Another job of the same model runs; the claim transaction must roll back."""


class LostLease(Exception):
    """Another worker (or the reconciler) took the job over; this run must publish nothing."""


class PolicyRejected(Exception):
    """The unlearned model does not meet the acceptance policy; nothing is published."""

    def __init__(self, decision: PolicyDecision) -> None:
        super().__init__(f"acceptance policy not met: {', '.join(decision.failed())}")
        self.decision = decision


@dataclass(frozen=True)
class JobError:
    """The ``error`` a job and its requests record: a type name, a detail, and context."""

    type: str
    detail: str
    checks: dict[str, Any] | None = None
    attempt: int | None = None

    @classmethod
    def of(cls, exc: BaseException, *, attempt: int | None = None) -> JobError:
        return cls(type=type(exc).__name__, detail=str(exc)[:2000], attempt=attempt)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "detail": self.detail}
        if self.checks is not None:
            out["checks"] = self.checks
        if self.attempt is not None:
            out["attempt"] = self.attempt
        return out
