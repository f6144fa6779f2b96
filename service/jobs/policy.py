"""The acceptance policy: when an unlearned model may be published. Defaults live here only.

A job is accepted when
* eval accuracy dropped by at most ``max_eval_accuracy_drop`` (needs the version's eval set), and
* if ``require_forgetting``: forgetting is reached, i.e. after unlearning
  forget_accuracy ≤ eval_accuracy + ``forget_accuracy_margin`` (the forget samples are recognised
  no better than unseen data), or the loss-based MIA AUC forget-vs-eval ≤ 0.5 + ``mia_auc_margin``
  (a membership attack cannot tell them from unseen data). Without an eval set, forgetting means
  the forget accuracy fell or the forget loss rose.
* with params ``{"scope": "class"}`` (the forget set is whole classes) utility is the eval accuracy
  on the other classes, and forgetting means forget_accuracy ≤ the method's
  ``forget_accuracy_target`` (default 0, as a model retrained without the class) +
  ``forget_accuracy_margin``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.settings import Settings

# Float comparisons of metrics that were rounded through JSON.
_EPS = 1e-9


class PolicyLimitError(ValueError):
    """A request asked for more than this service allows."""


@dataclass
class PolicyDecision:
    accepted: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def failed(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check["ok"]]

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "checks": self.checks}


class AcceptancePolicy(BaseModel):
    """Per-request values override the service's (``UNLEARN_POLICY_*``), within its limits."""

    model_config = ConfigDict(extra="forbid")

    max_eval_accuracy_drop: float = Field(0.05, ge=0, le=1)
    require_forgetting: bool = True
    forget_accuracy_margin: float = Field(0.05, ge=0, le=1)
    mia_auc_margin: float = Field(0.05, ge=0, le=0.5)

    @classmethod
    def resolve(cls, settings: Settings, requested: AcceptancePolicy | None) -> AcceptancePolicy:
        """The service's defaults, refined by what the request set explicitly."""
        values: dict[str, Any] = {
            "max_eval_accuracy_drop": settings.policy_max_eval_accuracy_drop,
            "require_forgetting": settings.policy_require_forgetting,
        }
        if requested is not None:
            values.update(requested.model_dump(exclude_unset=True))
        policy = cls.model_validate(values)
        if (
            requested is not None
            and "max_eval_accuracy_drop" in requested.model_fields_set
            and policy.max_eval_accuracy_drop > settings.policy_max_eval_accuracy_drop_limit
        ):
            raise PolicyLimitError(
                f"policy.max_eval_accuracy_drop={policy.max_eval_accuracy_drop} exceeds this service's "
                f"limit {settings.policy_max_eval_accuracy_drop_limit}"
            )
        return policy

    def evaluate(self, report: dict[str, Any]) -> PolicyDecision:
        """The checks on the engine's before/after metrics (``UnlearnReport.to_dict()``)."""
        params = report.get("params") or {}
        if params.get("scope") == "class" and report.get("other_classes_eval"):
            return self._evaluate_class(report, params)
        before, after = report.get("before", {}), report.get("after", {})
        checks: dict[str, dict[str, Any]] = {}
        has_eval = after.get("eval_accuracy") is not None and before.get("eval_accuracy") is not None
        if has_eval:
            drop = float(before["eval_accuracy"]) - float(after["eval_accuracy"])
            checks["eval_accuracy_drop"] = self._drop_check(drop)
        else:
            checks["eval_accuracy_drop"] = {"ok": True, "skipped": "the version has no eval set"}
        if self.require_forgetting:
            if has_eval:
                acc_ok = (
                    float(after["forget_accuracy"])
                    <= float(after["eval_accuracy"]) + self.forget_accuracy_margin + _EPS
                )
                mia = after.get("mia_auc")
                mia_limit = 0.5 + self.mia_auc_margin
                mia_ok = mia is not None and mia == mia and float(mia) <= mia_limit + _EPS
                checks["forgetting"] = {
                    "ok": acc_ok or mia_ok,
                    "forget_accuracy": after["forget_accuracy"],
                    "eval_accuracy": after["eval_accuracy"],
                    "forget_accuracy_margin": self.forget_accuracy_margin,
                    "mia_auc": mia,
                    "mia_auc_limit": mia_limit,
                }
            else:
                fell = float(after["forget_accuracy"]) < float(before["forget_accuracy"])
                rose = float(after["forget_loss"]) > float(before["forget_loss"])
                checks["forgetting"] = {
                    "ok": fell or rose,
                    "rule": "forget accuracy fell or forget loss rose",
                }
        return PolicyDecision(all(c["ok"] for c in checks.values()), checks)

    def _drop_check(self, drop: float) -> dict[str, Any]:
        limit = self.max_eval_accuracy_drop
        return {"value": drop, "limit": limit, "ok": drop <= limit + _EPS}

    def _evaluate_class(self, report: dict[str, Any], params: dict[str, Any]) -> PolicyDecision:
        others = report["other_classes_eval"]
        drop = float(others["before"]["accuracy"]) - float(others["after"]["accuracy"])
        checks: dict[str, dict[str, Any]] = {
            "eval_accuracy_drop": {
                **self._drop_check(drop),
                "measured_on": "eval samples of the classes not forgotten",
            }
        }
        if self.require_forgetting:
            target = float(params.get("forget_accuracy_target") or 0.0)
            forget_acc = float(report["after"]["forget_accuracy"])
            checks["forgetting"] = {
                "ok": forget_acc <= target + self.forget_accuracy_margin + _EPS,
                "forget_accuracy": forget_acc,
                "forget_accuracy_target": target,
                "forget_accuracy_margin": self.forget_accuracy_margin,
            }
        return PolicyDecision(all(c["ok"] for c in checks.values()), checks)
