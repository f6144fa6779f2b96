"""Issue 8, part A: the service runs the anchored default on split halves of the eval set, and the
acceptance policy grades the check half with margins sized to the sample sizes, two-sided.

The policy tests use reports shaped like the engine's; the job tests run real jobs through the
runner on SQLite and PostgreSQL (``api`` is parametrized over both)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.jobs.policy import AcceptancePolicy, accuracy_margin
from service.jobs.runner import run_job
from service.jobs.states import JobStatus, RunOutcome
from tests.jobs.helpers import job_row, register_model, submit
from tests.service_fixtures import ApiClient, make_settings
from unlearning.verification import mia_auc_margin


def sample_report(
    forget_acc: float, eval_acc: float, auc: float, n_forget: int, n_check: int, **extra: Any
) -> dict[str, Any]:
    """A sample-scope report as the engine writes it, the metrics taken on a check half of n_check."""
    before = {"forget_accuracy": 1.0, "forget_loss": 0.01, "eval_accuracy": eval_acc, "mia_auc": 0.9}
    after = {"forget_accuracy": forget_acc, "forget_loss": 0.5, "eval_accuracy": eval_acc, "mia_auc": auc}
    reading = "over_forgetting" if auc < 0.5 - mia_auc_margin(n_forget, n_check) else "indistinguishable"
    return {
        "params": {},
        "before": before,
        "after": after,
        "eval_split": {"n_anchor": n_check, "n_check": n_check},
        "mia_two_sided": {
            "auc": auc,
            "against": "eval_check_half",
            "n_forget": n_forget,
            "n_unseen": n_check,
            "margin": mia_auc_margin(n_forget, n_check),
            "reading": reading,
        },
        **extra,
    }


# --- sized margins ------------------------------------------------------------------------------


def test_margins_grow_on_small_sets_and_never_fall_below_the_floor() -> None:
    # 2·SE of an accuracy difference at p = 0.93 with 40 forget and 90 check samples:
    expected = 2 * math.sqrt(0.93 * 0.07 * (1 / 40 + 1 / 90))
    assert accuracy_margin(0.93, 40, 90, 0.05) == pytest.approx(expected)
    assert expected > 0.09
    assert accuracy_margin(0.93, 40_000, 90_000, 0.05) == 0.05  # the floor
    # One accuracy against a fixed target of 0 has no noise: the floor.
    assert accuracy_margin(0.0, 40, None, 0.05) == 0.05


def test_the_same_gap_passes_on_a_small_set_and_fails_on_a_large_one() -> None:
    """Forget accuracy 1.0 against 0.93 unseen: noise on 40/90 samples, a real gap on 4000/9000."""
    policy = AcceptancePolicy()
    small = policy.evaluate(sample_report(1.0, 0.93, 0.7, n_forget=40, n_check=90))
    assert small.accepted, small.checks
    check = small.checks["forgetting"]
    assert check["margins"]["forget_accuracy"] == "sized" and check["forget_accuracy_margin"] > 0.07
    assert check["n_forget"] == 40 and check["n_eval"] == 90

    large = policy.evaluate(sample_report(1.0, 0.93, 0.7, n_forget=4000, n_check=9000))
    assert not large.accepted and large.failed() == ["forgetting"]
    assert large.checks["forgetting"]["forget_accuracy_margin"] == 0.05
    assert large.checks["forgetting"]["mia_auc_limit"] == pytest.approx(0.55)


def test_explicit_margins_are_kept() -> None:
    policy = AcceptancePolicy.model_validate({"forget_accuracy_margin": 0.05, "mia_auc_margin": 0.05})
    out = policy.evaluate(sample_report(1.0, 0.93, 0.7, n_forget=40, n_check=90))
    assert not out.accepted
    assert out.checks["forgetting"]["margins"] == {"forget_accuracy": "given", "mia_auc": "given"}
    assert out.checks["forgetting"]["forget_accuracy_margin"] == 0.05
    # A generous margin the caller chose is honoured too.
    assert (
        AcceptancePolicy(forget_accuracy_margin=0.1)
        .evaluate(sample_report(1.0, 0.93, 0.7, 4000, 9000))
        .accepted
    )
    with pytest.raises(ValidationError):
        AcceptancePolicy.model_validate({"mia_auc_margin": 0.7})


def test_resolve_keeps_margins_unset_unless_the_request_sets_them(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    default = AcceptancePolicy.resolve(settings, None)
    assert default.forget_accuracy_margin is None and default.mia_auc_margin is None
    given = AcceptancePolicy.resolve(settings, AcceptancePolicy.model_validate({"mia_auc_margin": 0.02}))
    assert given.mia_auc_margin == 0.02 and given.forget_accuracy_margin is None


def test_a_report_without_sizes_gets_the_floor() -> None:
    report = {
        "before": {"forget_accuracy": 1.0, "forget_loss": 0.01, "eval_accuracy": 0.8, "mia_auc": 0.9},
        "after": {"forget_accuracy": 0.84, "forget_loss": 0.4, "eval_accuracy": 0.8, "mia_auc": 0.9},
    }
    out = AcceptancePolicy().evaluate(report)
    assert out.accepted and out.checks["forgetting"]["margins"]["forget_accuracy"] == "floor"
    report["after"]["forget_accuracy"] = 0.86
    assert not AcceptancePolicy().evaluate(report).accepted


# --- two-sided population MIA -------------------------------------------------------------------


def test_over_forgetting_is_rejected_with_a_sized_margin() -> None:
    policy = AcceptancePolicy(reject_over_forgetting=True)
    far_below = policy.evaluate(sample_report(0.0, 0.9, 0.3, n_forget=200, n_check=200))
    assert not far_below.accepted and far_below.failed() == ["over_forgetting"]
    check = far_below.checks["over_forgetting"]
    assert check["min_mia_auc"] == pytest.approx(0.5 - mia_auc_margin(200, 200))
    assert check["against"] == "eval_check_half" and check["margin"] == "sized"
    # The same AUC on 5 + 5 samples is within noise of 0.5.
    assert policy.evaluate(sample_report(0.0, 0.9, 0.3, n_forget=5, n_check=5)).accepted
    # A given margin replaces the sized one.
    wide = AcceptancePolicy(reject_over_forgetting=True, mia_auc_margin=0.25)
    assert wide.evaluate(sample_report(0.0, 0.9, 0.3, 200, 200)).accepted
    # Not enforced (the default): graded the same way and recorded as a warning.
    lenient = AcceptancePolicy().evaluate(sample_report(0.0, 0.9, 0.3, 200, 200))
    assert lenient.accepted and lenient.to_dict()["warnings"]["over_forgetting"] == check
    assert "warnings" not in AcceptancePolicy().evaluate(sample_report(0.0, 0.9, 0.45, 200, 200)).to_dict()


def test_class_scope_reads_over_forgetting_against_the_forgotten_classes() -> None:
    report = {
        "params": {"scope": "class", "forget_accuracy_target": 0.0},
        "before": {"forget_accuracy": 1.0, "forget_loss": 0.01, "eval_accuracy": 0.97},
        "after": {"forget_accuracy": 0.0, "forget_loss": 9.0, "eval_accuracy": 0.87},
        "other_classes_eval": {"before": {"accuracy": 0.97}, "after": {"accuracy": 0.96}},
        "mia_two_sided": {"auc": 0.02, "against": "forgotten_classes_eval", "n_forget": 140, "n_unseen": 40},
    }
    strict = AcceptancePolicy(reject_over_forgetting=True)
    out = strict.evaluate(report)
    assert out.failed() == ["over_forgetting"], out.checks
    assert out.checks["over_forgetting"]["against"] == "forgotten_classes_eval"
    assert out.checks["forgetting"]["ok"] and out.checks["forgetting"]["n_forget"] == 140
    report["mia_two_sided"]["auc"] = 0.45
    assert strict.evaluate(report).accepted


# --- jobs ---------------------------------------------------------------------------------------


def test_a_default_job_runs_the_anchored_preset_and_is_graded_on_the_other_half(api: ApiClient) -> None:
    req = submit(api, register_model(api, n_eval=128), n_forget=32)
    assert req["method"] == "ga" and req["params"]["preset"] == "anchored"
    assert run_job(api.ctx, req["job_id"], "w1") == RunOutcome.SUCCEEDED
    metrics = job_row(api, req["job_id"]).metrics
    assert metrics is not None
    split = metrics["eval_split"]
    anchor, check = set(split["anchor_indices"]), set(split["check_indices"])
    assert anchor and check and anchor.isdisjoint(check) and len(anchor | check) == 128
    forgetting = metrics["policy"]["checks"]["forgetting"]
    assert forgetting["n_eval"] == split["n_check"] == len(check) and forgetting["n_forget"] == 32
    assert forgetting["margins"] == {"forget_accuracy": "sized", "mia_auc": "sized"}
    assert metrics["mia_two_sided"]["against"] == "eval_check_half"
    assert metrics["mia_two_sided"]["n_unseen"] == len(check)
    # The job's public view carries the same verification.
    body = api.get(f"/v1/jobs/{req['job_id']}").json()
    assert body["metrics"]["mia_two_sided"] == metrics["mia_two_sided"]


OVER_FORGETTING = (
    '{"objective": "ascent", "anchor": "none", "early_stop": null, "epochs": 30, "lr": 0.01,'
    ' "step_schedule": "constant"}'
)


def test_an_over_forgetting_job_is_flagged_and_rejected_when_the_policy_says_so(api: ApiClient) -> None:
    """Plain ascent with no anchor and no stop drives the forget losses far above unseen ones."""
    model = register_model(api, n_eval=128)
    # The service's default records the flag and the failed check as a warning, and publishes.
    lenient_policy = '{"max_eval_accuracy_drop": 0.5}'
    lenient = submit(api, model, params=OVER_FORGETTING, policy=lenient_policy, n_forget=32)
    assert run_job(api.ctx, lenient["job_id"], "w1") == RunOutcome.SUCCEEDED
    metrics = job_row(api, lenient["job_id"]).metrics
    assert metrics is not None and "mia_over_forgetting" in metrics["flags"]
    assert not metrics["policy"]["warnings"]["over_forgetting"]["ok"]

    strict = '{"max_eval_accuracy_drop": 0.5, "reject_over_forgetting": true}'
    # Other samples: the first ones are already erased from the model.
    req = submit(api, model, seed=3, params=OVER_FORGETTING, policy=strict, n_forget=32)
    assert run_job(api.ctx, req["job_id"], "w1") == RunOutcome.FAILED
    job = job_row(api, req["job_id"])
    assert job.status == JobStatus.FAILED and job.error is not None
    assert job.error["type"] == "PolicyRejected"
    assert job.metrics is not None and "mia_over_forgetting" in job.metrics["flags"]
    assert job.metrics["mia_two_sided"]["reading"] == "over_forgetting"
    checks = job.metrics["policy"]["checks"]
    assert not checks["over_forgetting"]["ok"] and checks["forgetting"]["ok"]
    assert checks["over_forgetting"]["mia_auc"] < checks["over_forgetting"]["min_mia_auc"]
