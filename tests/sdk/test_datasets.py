"""Training sets, erasure by data subject, receipts and signatures, retirement and rollback,
through the SDK against the real service and worker."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from unlearn_client import Conflict, Dataset, DatasetVersion, Erasure, Gone, SignedDocument

from tests.sdk.conftest import DIGITS_ARCH, Clients, Digits, Server, unique

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SUBJECT_SIZE = 10  # samples per data subject: subject k owns samples 10k .. 10k+9


def _training_set(digits: Digits) -> bytes:
    from safetensors.torch import save

    n = len(digits.y_train)
    ids = torch.arange(n, dtype=torch.int64)
    return save(
        {
            "inputs": digits.x_train.contiguous(),
            "labels": digits.y_train.contiguous(),
            "sample_ids": ids,
            "subject_ids": ids // SUBJECT_SIZE,
        }
    )


def test_erasing_a_subject_reaches_every_model_trained_on_the_data(
    clients: Clients, server: Server, digits: Digits
) -> None:
    dataset, model = unique("train"), unique("erasable")

    def steps(c: Any) -> Any:
        created = yield c.datasets.create(dataset, "classification", description="digits")
        assert isinstance(created, Dataset) and created.latest_version is None
        uploaded = yield c.datasets.upload(dataset, _training_set(digits))
        assert isinstance(uploaded, DatasetVersion) and uploaded.version == 1
        assert uploaded.n_samples == len(digits.y_train) and uploaded.has_subjects
        assert set(uploaded.columns) >= {"inputs", "labels"}
        assert (yield c.datasets.get_version(dataset)).data_sha256 == uploaded.data_sha256
        listed = yield c.datasets.list_versions(dataset)
        assert [v.version for v in listed.items] == [1]

        yield c.models.create(model, DIGITS_ARCH)
        v1 = yield c.versions.upload(model, digits.checkpoint, digits.eval_set, dataset=dataset)
        assert v1.training_data is not None and (v1.training_data.dataset, v1.training_data.version) == (
            dataset,
            1,
        )

        erasure = yield c.datasets.erase(dataset, subject="7")
        assert isinstance(erasure, Erasure) and erasure.n_samples == SUBJECT_SIZE
        assert [r.model for r in erasure.deletion_requests] == [model]
        done = yield c.erasures.wait(erasure, timeout=240)
        request = yield c.deletions.get(done.deletion_requests[0].id)
        listed_erasures = yield c.erasures.list(dataset=dataset)
        receipt = yield c.erasures.receipt(done.id)
        signed = yield c.erasures.signed_receipt(done.id)
        key = yield c.signing_key()
        latest = yield c.versions.get(model, "latest")
        retired = yield c.versions.get(model, 1)
        return done, request, listed_erasures, receipt, signed, key, latest, retired

    done, request, listed_erasures, receipt, signed, key, latest, retired = clients(steps)

    assert done.status == "completed" and done.result_dataset_version == 2
    assert request.by_reference and request.erasure_id == done.id and request.status == "completed"
    assert done.id in [e.id for e in listed_erasures.items]
    assert receipt.model_dump(), "the receipt is a document of its own"
    assert isinstance(signed, SignedDocument) and signed.signature and signed.key_id == key.key_id
    assert key.jwk and key.pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert latest.version == 2 and latest.parent_version == 1
    # Version 1 still holds the erased subject: retired, and its checkpoint is gone.
    assert retired.status == "retired" and retired.retired_reason == "erasure"
    with server.client() as client, pytest.raises(Gone) as gone:
        client.versions.checkpoint_info(model, 1)
    assert gone.value.status == 410


def test_deletion_by_reference_receipts_and_certificate(server: Server, digits: Digits) -> None:
    dataset, model = unique("train"), unique("byref")
    with server.client() as client:
        client.datasets.create(dataset, "classification")
        client.datasets.upload(dataset, _training_set(digits))
        client.models.create(model, DIGITS_ARCH)
        client.versions.upload(model, digits.checkpoint, digits.eval_set, dataset=dataset, dataset_version=1)
        request = client.deletions.submit(model, sample_ids=[0, 1, 2, 3, 4])
        assert request.by_reference and request.n_samples == 5
        done = client.deletions.wait(request, timeout=240)
        assert done.status == "completed"
        receipt = client.deletions.receipt(done.id)
        signed = client.deletions.signed_receipt(done.id)
        certificate = client.deletions.certificate(done.id)
        chains = list(client.audit.iterate_chains())
        checkpoints = client.audit.checkpoints(limit=5)
    assert receipt.model_dump()
    plain = receipt.model_dump(mode="json")
    assert {k: v for k, v in signed.document.items() if k != "issued_at"} == {
        k: v for k, v in plain.items() if k != "issued_at"
    }
    assert certificate.signature and certificate.document
    assert any(chain.ok for chain in chains)
    assert all(isinstance(c, SignedDocument) for c in checkpoints.items)


def test_retire_and_roll_back(clients: Clients, registered: str, digits: Digits) -> None:
    from unlearning import build_model, state_dict_bytes

    torch.manual_seed(1)
    bad_deploy = state_dict_bytes(build_model(DIGITS_ARCH))  # untrained

    def steps(c: Any) -> Any:
        v2 = yield c.versions.upload(registered, bad_deploy, description="a bad deploy")
        back = yield c.versions.rollback(registered, 1)  # v1's checkpoint, as version 3
        retired = yield c.versions.retire(registered, v2.version)
        return v2, back, retired

    v2, back, retired = clients(steps)
    assert back.version == 3 and back.sha256 != v2.sha256
    assert clients(lambda c: c.versions.get(registered, 1)).sha256 == back.sha256
    assert retired.version == 2 and retired.status == "retired" and retired.retired_reason == "owner"
    with pytest.raises(Gone):
        clients(lambda c: c.download(registered, 2))
    with pytest.raises(Conflict):
        clients(lambda c: c.versions.retire(registered, "latest"))  # the latest stays: roll back first
