"""The acceptance policy: when an unlearned model may be published. Defaults live here only.

The engine measures the report on the eval set's *check half*, which the method never saw (its
anchor and early stop use the other half: ``unlearning/holdout.py``), so the policy grades data the
run was not tuned on. Halves of small eval sets are noisy, so the margins are sized to the sizes
the report states, unless the request sets a margin explicitly:

* ``forget_accuracy_margin`` = max(``margin_floor``, 2·SE) of the difference of two accuracies,
  forget vs unseen, under "no difference": SE = √(p(1−p)(1/n_forget + 1/n_eval)), p the unseen
  accuracy (in the class scope: SE = √(t(1−t)/n_forget), t the forget-accuracy target);
* ``mia_auc_margin`` = max(``margin_floor``, 2·SE) of the loss-attack AUC under "no difference",
  SE² = (n_f + n_u + 1) / (12·n_f·n_u) (``unlearning.verification.mia_auc_margin``).

A job is accepted when
* eval accuracy dropped by at most ``max_eval_accuracy_drop`` (needs the version's eval set; a
  budget on utility, not a noise margin: the same samples are measured before and after), and
* if ``require_forgetting``: forgetting is reached, i.e. after unlearning forget_accuracy ≤
  eval_accuracy + forget margin (the forget samples are recognised no better than unseen data), or
  the loss-based MIA AUC forget-vs-eval ≤ 0.5 + MIA margin (a membership attack cannot tell them
  from unseen data). Without an eval set, forgetting means the forget accuracy fell or the forget
  loss rose.
* if ``reject_over_forgetting`` (``UNLEARN_POLICY_REJECT_OVER_FORGETTING``, off by default; the
  check is graded and recorded under ``warnings`` either way): the population MIA read two-sided
  (the report's ``mia_two_sided``) has AUC ≥ 0.5 − MIA margin. A forget set that looks far
  *less* familiar than unseen data is as visible to an attacker as one that looks familiar: a
  retrained model would not do that. In the class scope the unseen data are the forgotten
  classes' own eval samples.
* if ``max_lira_tpr`` or ``max_lira_tpr_above_retrained`` is set: the per-example membership test
  (offline LiRA against the model's reference models, ``service/references``) ran, and its TPR at
  ``lira_fpr`` on the forget samples is at most that (absolute, or above the level the references
  themselves give on samples they never saw: the retrained level). A job without the test fails
  this check: asking for it means requiring it.
* with params ``{"scope": "class"}`` (the forget set is whole classes) utility is the eval accuracy
  on the other classes, and forgetting means forget_accuracy ≤ the method's
  ``forget_accuracy_target`` (default 0, as a model retrained without the class) + the forget
  margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.settings import Settings
from unlearning.verification import mia_auc_margin

# Float comparisons of metrics that were rounded through JSON.
_EPS = 1e-9


class PolicyLimitError(ValueError):
    """A request asked for more than this service allows."""


@dataclass
class PolicyDecision:
    accepted: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Checks that failed but that this policy does not enforce (over_forgetting by default).
    warnings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def failed(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check["ok"]]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"accepted": self.accepted, "checks": self.checks}
        if self.warnings:
            out["warnings"] = self.warnings
        return out


def accuracy_margin(p: float, n_a: int, n_b: int | None, floor: float) -> float:
    """max(floor, 2·SE) of an accuracy difference (``n_b`` None: of one accuracy against a fixed
    target) under "no difference" at accuracy ``p``: the noise a check on that many samples sees."""
    if n_a < 1 or (n_b is not None and n_b < 1):
        return floor
    p = min(max(float(p), 0.0), 1.0)
    inv = 1.0 / n_a + (1.0 / n_b if n_b is not None else 0.0)
    return max(floor, 2.0 * math.sqrt(p * (1.0 - p) * inv))


class AcceptancePolicy(BaseModel):
    """Per-request values override the service's (``UNLEARN_POLICY_*``), within its limits.

    A margin left unset (None) is sized to the sample sizes of the report it grades.
    """

    model_config = ConfigDict(extra="forbid")

    max_eval_accuracy_drop: float = Field(0.05, ge=0, le=1)
    require_forgetting: bool = True
    forget_accuracy_margin: float | None = Field(None, ge=0, le=1)
    mia_auc_margin: float | None = Field(None, ge=0, le=0.5)
    # The least a sized margin is: below it a difference is too small to matter, whatever n.
    margin_floor: float = Field(0.05, ge=0, le=0.5)
    reject_over_forgetting: bool = False
    # Per-example membership (LiRA) limits: None = not required.
    max_lira_tpr: float | None = Field(None, ge=0, le=1)
    max_lira_tpr_above_retrained: float | None = Field(None, ge=0, le=1)
    lira_fpr: float = Field(0.05, gt=0, lt=1)

    @classmethod
    def resolve(cls, settings: Settings, requested: AcceptancePolicy | None) -> AcceptancePolicy:
        """The service's defaults, refined by what the request set explicitly."""
        service = {
            "max_eval_accuracy_drop": settings.policy_max_eval_accuracy_drop,
            "require_forgetting": settings.policy_require_forgetting,
            "reject_over_forgetting": settings.policy_reject_over_forgetting,
        }
        # The policy's own defaults where the service sets nothing (they are written only here).
        values: dict[str, Any] = {k: v for k, v in service.items() if v is not None}
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

    @property
    def requires_lira(self) -> bool:
        return self.max_lira_tpr is not None or self.max_lira_tpr_above_retrained is not None

    def evaluate(self, report: dict[str, Any]) -> PolicyDecision:
        """The checks on the engine's report (``UnlearnReport.to_dict()``, plus the service's
        ``lira`` entry when the per-example test ran)."""
        params = report.get("params") or {}
        if params.get("scope") == "class" and report.get("other_classes_eval"):
            checks = self._class_checks(report, params)
        else:
            checks = self._sample_checks(report)
        warnings: dict[str, dict[str, Any]] = {}
        if report.get("mia_two_sided"):
            over = self._over_forgetting_check(report["mia_two_sided"])
            # Not enforced: still graded with the same margin and recorded, as a warning.
            (checks if self.reject_over_forgetting else warnings)["over_forgetting"] = over
        if self.requires_lira:
            checks["lira"] = self._lira_check(report.get("lira"))
        accepted = all(c["ok"] for c in checks.values())
        return PolicyDecision(accepted, checks, {k: v for k, v in warnings.items() if not v["ok"]})

    # -- margins -----------------------------------------------------------------------------

    def _mia_margin(self, n_forget: int, n_unseen: int) -> tuple[float, str]:
        if self.mia_auc_margin is not None:
            return self.mia_auc_margin, "given"
        if n_forget < 1 or n_unseen < 1:  # a report that does not state its sizes
            return self.margin_floor, "floor"
        return mia_auc_margin(n_forget, n_unseen, self.margin_floor), "sized"

    def _forget_margin(self, p: float, n_forget: int, n_other: int | None) -> tuple[float, str]:
        if self.forget_accuracy_margin is not None:
            return self.forget_accuracy_margin, "given"
        if n_forget < 1 or (n_other is not None and n_other < 1):
            return self.margin_floor, "floor"
        return accuracy_margin(p, n_forget, n_other, self.margin_floor), "sized"

    # -- checks ------------------------------------------------------------------------------

    def _drop_check(self, drop: float) -> dict[str, Any]:
        limit = self.max_eval_accuracy_drop
        return {"value": drop, "limit": limit, "ok": drop <= limit + _EPS}

    def _sample_checks(self, report: dict[str, Any]) -> dict[str, dict[str, Any]]:
        before, after = report.get("before", {}), report.get("after", {})
        checks: dict[str, dict[str, Any]] = {}
        has_eval = after.get("eval_accuracy") is not None and before.get("eval_accuracy") is not None
        if has_eval:
            drop = float(before["eval_accuracy"]) - float(after["eval_accuracy"])
            checks["eval_accuracy_drop"] = self._drop_check(drop)
        else:
            checks["eval_accuracy_drop"] = {"ok": True, "skipped": "the version has no eval set"}
        if not self.require_forgetting:
            return checks
        if not has_eval:
            fell = float(after["forget_accuracy"]) < float(before["forget_accuracy"])
            rose = float(after["forget_loss"]) > float(before["forget_loss"])
            checks["forgetting"] = {"ok": fell or rose, "rule": "forget accuracy fell or forget loss rose"}
            return checks
        n_forget, n_eval = _sizes(report)
        eval_acc = float(after["eval_accuracy"])
        acc_margin, acc_how = self._forget_margin(eval_acc, n_forget, n_eval)
        acc_ok = float(after["forget_accuracy"]) <= eval_acc + acc_margin + _EPS
        mia = after.get("mia_auc")
        mia_margin, mia_how = self._mia_margin(n_forget, n_eval)
        mia_limit = 0.5 + mia_margin
        mia_ok = mia is not None and mia == mia and float(mia) <= mia_limit + _EPS
        checks["forgetting"] = {
            "ok": acc_ok or mia_ok,
            "forget_accuracy": after["forget_accuracy"],
            "eval_accuracy": after["eval_accuracy"],
            "forget_accuracy_margin": acc_margin,
            "mia_auc": mia,
            "mia_auc_limit": mia_limit,
            "margins": {"forget_accuracy": acc_how, "mia_auc": mia_how},
            "n_forget": n_forget,
            "n_eval": n_eval,
        }
        return checks

    def _class_checks(self, report: dict[str, Any], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
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
            n_forget, _ = _sizes(report)
            margin, how = self._forget_margin(target, n_forget, None)
            checks["forgetting"] = {
                "ok": forget_acc <= target + margin + _EPS,
                "forget_accuracy": forget_acc,
                "forget_accuracy_target": target,
                "forget_accuracy_margin": margin,
                "margins": {"forget_accuracy": how},
                "n_forget": n_forget,
            }
        return checks

    def _over_forgetting_check(self, reading: dict[str, Any]) -> dict[str, Any]:
        auc = reading.get("auc")
        n_f, n_u = int(reading.get("n_forget") or 0), int(reading.get("n_unseen") or 0)
        margin, how = self._mia_margin(n_f, n_u)
        limit = 0.5 - margin
        # NaN (no comparison possible) is not evidence of over-forgetting.
        ok = auc is None or auc != auc or float(auc) >= limit - _EPS
        return {
            "ok": ok,
            "mia_auc": auc,
            "min_mia_auc": limit,
            "against": reading.get("against"),
            "margin": how,
            "n_forget": n_f,
            "n_unseen": n_u,
        }

    def _lira_check(self, lira: dict[str, Any] | None) -> dict[str, Any]:
        key = f"{self.lira_fpr:g}"
        if not lira or key not in (lira.get("tpr_at_fpr") or {}):
            reason = (lira or {}).get("skipped") or "the per-example membership test did not run"
            return {"ok": False, "reason": f"{reason} (TPR at FPR {key} is required)"}
        tpr = float(lira["tpr_at_fpr"][key])
        retrained = (lira.get("retrained_tpr_at_fpr") or {}).get(key)
        out: dict[str, Any] = {"tpr": tpr, "fpr": self.lira_fpr, "retrained_tpr": retrained, "ok": True}
        if self.max_lira_tpr is not None:
            out["max_tpr"] = self.max_lira_tpr
            out["ok"] = tpr <= self.max_lira_tpr + _EPS
        if self.max_lira_tpr_above_retrained is not None:
            if retrained is None:
                return {**out, "ok": False, "reason": "no retrained level was measured"}
            limit = float(retrained) + self.max_lira_tpr_above_retrained
            out["max_tpr_from_retrained"] = limit
            out["ok"] = out["ok"] and tpr <= limit + _EPS
        return out


def _sizes(report: dict[str, Any]) -> tuple[int, int]:
    """(forget samples, eval samples the metrics were taken on), as the report states them.

    The two-sided MIA reading names both; a report without it (no eval set, or one from before
    it existed) gives 0, and a margin for 0 samples is the floor.
    """
    reading = report.get("mia_two_sided") or {}
    n_forget = int(reading.get("n_forget") or report.get("n_forget") or 0)
    split = report.get("eval_split") or {}
    n_eval = int(split.get("n_check") or 0)
    if reading.get("against") in ("eval_check_half", "eval"):
        n_eval = int(reading.get("n_unseen") or n_eval)
    return n_forget, n_eval
