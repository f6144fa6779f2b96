"""``deletions.retry`` (sync and async) and ``unlearn-client retry`` against the real service
(``unlearn-service run``: its worker runs the jobs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from unlearn_client import Conflict, DeletionRequest, NotFound

from tests.integration.test_retry import REJECTED_PARAMS, REJECTING_POLICY, RELAXED
from tests.sdk.conftest import Clients, Digits, Server
from tests.sdk.test_cli import Cli


def _rejected(clients: Clients, registered: str, digits: Digits) -> DeletionRequest:
    idx = torch.nonzero(digits.y_train == 3).flatten()[:20]

    def body(c: Any) -> Any:
        request = yield c.deletions.submit(
            registered,
            digits.forget_file(idx),
            method="ga",
            params=REJECTED_PARAMS,
            policy=REJECTING_POLICY,
        )
        return (yield c.deletions.wait(request, timeout=240))

    failed: DeletionRequest = clients(body)
    assert failed.status == "failed" and failed.outcome == "policy_rejected", failed
    assert failed.retryable and failed.retry_until is not None and not failed.forget_set_purged
    return failed


def test_retry_queues_a_rejected_request_again(clients: Clients, registered: str, digits: Digits) -> None:
    failed = _rejected(clients, registered, digits)

    def body(c: Any) -> Any:
        retried = yield c.deletions.retry(
            failed.id, method=RELAXED["method"], policy=RELAXED["policy"], idempotency_key=f"r-{failed.id}"
        )
        again = yield c.deletions.retry(
            failed.id, method=RELAXED["method"], policy=RELAXED["policy"], idempotency_key=f"r-{failed.id}"
        )
        done = yield c.deletions.wait(retried, timeout=240)
        return retried, again, done

    retried, again, done = clients(body)
    assert retried.status == "queued" and retried.job_id != failed.job_id and retried.method == "imu"
    assert again.job_id == retried.job_id  # the replay queued nothing more
    assert done.status == "completed" and done.result_version == 2, done
    with pytest.raises(Conflict) as refused:
        clients(lambda c: c.deletions.retry(failed.id))
    assert refused.value.status == 409
    with pytest.raises(NotFound):
        clients(lambda c: c.deletions.retry("del_missing"))


def test_cli_retry(server: Server, registered: str, digits: Digits, tmp_path: Path) -> None:
    from tests.sdk.conftest import Clients as _Clients

    failed = _rejected(_Clients("sync", server), registered, digits)
    cli = Cli(server, tmp_path / "config")
    cli.login()
    policy = '{"max_eval_accuracy_drop": 0.2}'
    done = cli.json("retry", failed.id, "--method", "imu", "--policy", policy, "--wait")
    assert done["status"] == "completed" and done["retryable"] is False, done
    refused = cli.run("--json", "retry", failed.id, check=None)
    assert refused.returncode != 0 and "409" in refused.stdout + refused.stderr
