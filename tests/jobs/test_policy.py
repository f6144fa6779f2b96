"""The acceptance policy on engine reports (no servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.jobs.policy import AcceptancePolicy, PolicyDecision, PolicyLimitError
from tests.service_fixtures import make_settings

POLICY = AcceptancePolicy(max_eval_accuracy_drop=0.05, require_forgetting=True)


def evaluate_policy(policy: AcceptancePolicy, r: dict[str, Any]) -> dict[str, Any]:
    decision: PolicyDecision = policy.evaluate(r)
    return decision.to_dict()


def report(before: dict[str, float], after: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {"before": before, "after": after, **extra}


def test_samples_scope_accepts_forgetting_within_budget() -> None:
    r = report(
        {"forget_accuracy": 1.0, "forget_loss": 0.01, "eval_accuracy": 0.95, "mia_auc": 0.8},
        {"forget_accuracy": 0.9, "forget_loss": 0.4, "eval_accuracy": 0.92, "mia_auc": 0.6},
    )
    assert evaluate_policy(POLICY, r)["accepted"]


def test_samples_scope_rejects_utility_loss_and_missing_forgetting() -> None:
    too_costly = report(
        {"forget_accuracy": 1.0, "forget_loss": 0.01, "eval_accuracy": 0.95, "mia_auc": 0.8},
        {"forget_accuracy": 0.5, "forget_loss": 2.0, "eval_accuracy": 0.85, "mia_auc": 0.5},
    )
    out = evaluate_policy(POLICY, too_costly)
    assert not out["accepted"] and not out["checks"]["eval_accuracy_drop"]["ok"]
    not_forgotten = report(
        {"forget_accuracy": 1.0, "forget_loss": 0.01, "eval_accuracy": 0.8, "mia_auc": 0.9},
        {"forget_accuracy": 1.0, "forget_loss": 0.02, "eval_accuracy": 0.8, "mia_auc": 0.9},
    )
    out = evaluate_policy(POLICY, not_forgotten)
    assert not out["accepted"] and not out["checks"]["forgetting"]["ok"]


def test_class_scope_measures_utility_on_the_other_classes() -> None:
    # Whole-eval accuracy falls by the forgotten class's share (0.1): that must not count as
    # utility loss, but the other classes' accuracy must hold and the class must be forgotten.
    r = report(
        {"forget_accuracy": 1.0, "forget_loss": 0.01, "eval_accuracy": 0.97},
        {"forget_accuracy": 0.0, "forget_loss": 6.0, "eval_accuracy": 0.87},
        params={"scope": "class", "forget_accuracy_target": 0.0},
        other_classes_eval={"before": {"accuracy": 0.97}, "after": {"accuracy": 0.95}},
    )
    out = evaluate_policy(POLICY, r)
    assert out["accepted"], out
    assert out["checks"]["eval_accuracy_drop"]["value"] == 0.97 - 0.95

    hurt_others = {**r, "other_classes_eval": {"before": {"accuracy": 0.97}, "after": {"accuracy": 0.90}}}
    assert not evaluate_policy(POLICY, hurt_others)["accepted"]
    still_known = {**r, "after": {**r["after"], "forget_accuracy": 0.4}}
    out = evaluate_policy(POLICY, still_known)
    assert not out["accepted"] and not out["checks"]["forgetting"]["ok"]


def test_the_service_sets_only_what_differs_from_the_policy_defaults(tmp_path: Path) -> None:
    defaults = AcceptancePolicy.model_validate({})
    # Nothing set: the policy's own defaults, written once in service/jobs/policy.py.
    plain = AcceptancePolicy.resolve(make_settings(tmp_path), None)
    assert plain.model_dump() == defaults.model_dump()
    # The operator's values win over the defaults; a request's win over both, within the limit.
    settings = make_settings(tmp_path, policy_max_eval_accuracy_drop=0.1, policy_reject_over_forgetting=True)
    service = AcceptancePolicy.resolve(settings, None)
    assert (service.max_eval_accuracy_drop, service.reject_over_forgetting) == (0.1, True)
    assert service.require_forgetting is defaults.require_forgetting
    asked = AcceptancePolicy.resolve(
        settings, AcceptancePolicy.model_validate({"max_eval_accuracy_drop": 0.2})
    )
    assert (asked.max_eval_accuracy_drop, asked.reject_over_forgetting) == (0.2, True)
    with pytest.raises(PolicyLimitError):
        AcceptancePolicy.resolve(settings, AcceptancePolicy.model_validate({"max_eval_accuracy_drop": 0.9}))
