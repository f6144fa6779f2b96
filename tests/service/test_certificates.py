"""Signed deletion certificates: issued by the API, checked offline with the published key;
any change to the certificate, its signature or the key fails; nothing raw leaves the database."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from unlearn_client.verify import (
    VerificationError,
    canonical_json,
    key_id,
    load_public_key,
    verify_certificate,
    verify_document,
)

from service.certificates.certificate import (
    AuditEventFacts,
    CertificateFacts,
    ModelVersionFacts,
    build_certificate,
)
from service.certificates.keystore import KEY_FILE, load_signer
from service.certificates.signing import Signer
from service.db import session_scope
from service.jobs.runner import run_job
from service.jobs.states import RunOutcome
from service.tables import DeletionRequest
from tests.service_fixtures import ApiClient, make_checkpoint, make_dataset, make_settings

ROOT = Path(__file__).resolve().parents[2]


def _completed_request(api: ApiClient, model: str = "m", subject: str = "user-42") -> dict[str, Any]:
    """A request run to completion in-process (the job runner, no worker process)."""
    api.create_model(model)
    r = api.upload_version(model, make_checkpoint(), eval_set=make_dataset(64, seed=1))
    assert r.status_code == 201, r.text
    files = {"forget_set": ("f.safetensors", make_dataset(8, seed=2), "application/octet-stream")}
    r = api.post(f"/v1/models/{model}/deletion-requests", files=files, data={"subject": subject})
    assert r.status_code == 202, r.text
    req = r.json()
    assert run_job(api.ctx, req["job_id"], "w1") == RunOutcome.SUCCEEDED
    done = api.get(f"/v1/deletion-requests/{req['id']}").json()
    assert done["status"] == "completed", done
    return done


def test_a_certificate_round_trips_offline_with_the_published_key(api: ApiClient) -> None:
    req = _completed_request(api)
    r = api.get(f"/v1/deletion-requests/{req['id']}/certificate")
    assert r.status_code == 200, r.text
    cert = r.json()
    published = api.anonymous().get("/.well-known/unlearn-signing-key")
    assert published.status_code == 200
    key = published.json()

    # Offline: only the JSON file and the published key (as the well-known answer, JWK or PEM).
    doc = verify_certificate(json.loads(json.dumps(cert)), key)
    assert verify_certificate(cert, key["jwk"]) == doc == verify_certificate(cert, key["pem"])
    assert cert["key_id"] == key["key_id"] == key_id(load_public_key(key["pem"]))
    assert cert["alg"] == "Ed25519" and cert["canonicalization"] == "RFC 8785"

    # What it certifies, from the stored records.
    assert doc["type"] == "unlearn.deletion-certificate" and doc["request_id"] == req["id"]
    assert doc["model"] == "m" and doc["job_id"] == req["job_id"]
    assert doc["subject_digest"] == req["subject_digest"] and doc["subject_digest"] != "user-42"
    keyed = api.get(f"/v1/deletion-requests/{req['id']}/sample-digests").json()["sample_digests"]
    assert doc["samples"] == {"count": 8, "digests": keyed}
    v1, v2 = (api.get(f"/v1/models/m/versions/{v}").json() for v in (1, 2))
    assert doc["base_version"] == {"version": 1, "sha256": v1["sha256"]}
    assert doc["result_version"] == {"version": 2, "sha256": v2["sha256"]}
    job = api.get(f"/v1/jobs/{req['job_id']}").json()
    assert doc["method"] == job["method"] and doc["params"] == job["params"]
    assert doc["policy"] == job["metrics"]["policy"] and doc["policy"]["accepted"] is True
    assert doc["metrics"]["before"] == job["metrics"]["before"]
    assert doc["metrics"]["after"] == job["metrics"]["after"]
    [event] = api.get("/v1/audit", params={"action": "job.succeeded"}).json()["items"]
    assert doc["audit_event"] == {
        "chain": event["tenant_id"],
        "seq": event["seq"],
        "hash": event["hash"],
        "action": "job.succeeded",
    }

    # The raw sample digests (and the subject) never leave the database.
    with session_scope(api.ctx.session_factory) as s:
        row = s.get(DeletionRequest, req["id"])
        assert row is not None
        raw = list(row.sample_digests)
    text = r.text
    assert "user-42" not in text and not any(d in text for d in raw)

    # Deterministic: the same request always gets the same signed certificate.
    assert api.get(f"/v1/deletion-requests/{req['id']}/certificate").json() == cert


def _tampered(cert: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every field of the document changed in turn, and the envelope too."""
    out = []
    doc = cert["document"]

    def changed(path: list[Any], value: Any) -> dict[str, Any]:
        c = copy.deepcopy(cert)
        node = c["document"]
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        return c

    for field, value in doc.items():
        if isinstance(value, dict) and value:
            for sub in value:
                out.append((f"{field}.{sub}", changed([field, sub], "x")))
        else:
            out.append((field, changed([field], value + 1 if isinstance(value, int) else "x")))
    out.append(("samples.digests[0]", changed(["samples", "digests", 0], "0" * 64)))
    out.append(("extra field", changed(["extra"], 1)))
    sig = cert["signature"]
    out.append(("signature", {**cert, "signature": ("A" if sig[0] != "A" else "B") + sig[1:]}))
    out.append(("no signature", {k: v for k, v in cert.items() if k != "signature"}))
    return out


def test_a_tampered_certificate_or_another_key_fails(api: ApiClient) -> None:
    req = _completed_request(api)
    cert = api.get(f"/v1/deletion-requests/{req['id']}/certificate").json()
    key = api.anonymous().get("/.well-known/unlearn-signing-key").json()
    verify_certificate(cert, key)
    cases = _tampered(cert)
    assert len(cases) > 20
    for what, bad in cases:
        with pytest.raises(VerificationError):
            verify_certificate(bad, key)
            pytest.fail(f"a certificate with {what} changed verified")

    other = Signer(Ed25519PrivateKey.generate())
    with pytest.raises(VerificationError, match="not with the given key"):
        verify_certificate(cert, other.published_key())
    # Another key's key id on this signature: the signature does not match that key.
    with pytest.raises(VerificationError, match="signature does not match"):
        verify_certificate({**cert, "key_id": other.key_id}, other.published_key())
    # Re-signed by another key: valid for that key, never for the service's.
    forged = other.sign_document(cert["document"])
    assert verify_certificate(forged, other.public_key)
    with pytest.raises(VerificationError):
        verify_certificate(forged, key)
    # Another type of signed document is not a certificate.
    head = other.sign_document({"type": "unlearn.audit-head", "seq": 1})
    with pytest.raises(VerificationError, match=r"not a 'unlearn\.deletion-certificate'"):
        verify_certificate(head, other.public_key)


def test_certificate_errors_are_problems(api: ApiClient) -> None:
    api.create_model("m")
    assert api.upload_version("m", make_checkpoint()).status_code == 201
    files = {"forget_set": ("f.safetensors", make_dataset(4, seed=2), "application/octet-stream")}
    queued = api.post("/v1/models/m/deletion-requests", files=files).json()

    r = api.get(f"/v1/deletion-requests/{queued['id']}/certificate")
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["request_status"] == "queued" and "completed" in r.json()["detail"]
    r = api.get("/v1/deletion-requests/del_nope/certificate")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    # Another tenant's request is not found; a key without a reading scope is refused.
    other = api.with_key(api.new_key(["deletions:write"], tenant="other"))
    assert other.get(f"/v1/deletion-requests/{queued['id']}/certificate").status_code == 404
    auditor = api.with_key(api.new_key(["audit:read"]))
    assert auditor.get(f"/v1/deletion-requests/{queued['id']}/certificate").status_code == 403
    assert api.anonymous().get(f"/v1/deletion-requests/{queued['id']}/certificate").status_code == 401
    # The public key needs no credentials and takes no parameters.
    assert api.anonymous().get("/.well-known/unlearn-signing-key", params={"x": 1}).status_code == 422


# --- the pure pieces -------------------------------------------------------------------------


def _facts(**overrides: Any) -> CertificateFacts:
    values: dict[str, Any] = {
        "request_id": "del_1",
        "tenant_id": "ten_1",
        "model": "m",
        "subject": "alice",
        "sample_digests": ["a" * 64, "b" * 64],
        "completed_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "job_id": "job_1",
        "method": "imu",
        "params": {"preset": "adaptive"},
        "base": ModelVersionFacts(1, "1" * 64),
        "result": ModelVersionFacts(2, "2" * 64),
        "audit": AuditEventFacts("ten_1", 7, "f" * 64, "job.succeeded"),
        "metrics": {"after": {"forget_accuracy": 0.1, "mia_auc": float("nan")}},
        "policy": {"accepted": True, "checks": {}},
    }
    values.update(overrides)
    return CertificateFacts(**values)


def test_build_certificate_is_pure_and_keys_every_digest() -> None:
    doc = build_certificate(_facts(), b"k1")
    assert doc == build_certificate(_facts(), b"k1")
    text = canonical_json(doc).decode()
    assert "alice" not in text and "a" * 64 not in text and "b" * 64 not in text
    assert doc["samples"]["count"] == 2 and len(set(doc["samples"]["digests"])) == 2
    assert doc["metrics"]["after"]["mia_auc"] is None  # signable JSON: no NaN
    other_key = build_certificate(_facts(), b"k2")
    assert other_key["subject_digest"] != doc["subject_digest"]
    assert set(other_key["samples"]["digests"]).isdisjoint(doc["samples"]["digests"])
    assert build_certificate(_facts(subject=None), b"k1")["subject_digest"] is None
    signer = Signer(Ed25519PrivateKey.generate())
    assert verify_document(signer.sign_document(doc), signer.public_key) == doc


def test_signing_key_is_made_once_with_mode_0600_or_configured(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = load_signer(settings)
    path = settings.data_dir / KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_signer(settings).key_id == first.key_id  # kept across restarts

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    expected = key_id(key.public_key())
    assert load_signer(make_settings(tmp_path, signing_key=pem)).key_id == expected
    key_file = tmp_path / "configured.pem"
    key_file.write_text(pem)
    assert load_signer(make_settings(tmp_path, signing_key_file=key_file)).key_id == expected
    with pytest.raises(ValueError, match="UNLEARN_SIGNING_KEY"):
        load_signer(make_settings(tmp_path, signing_key="not a key"))
    assert repr(first) == f"Signer(key_id={first.key_id!r})"


def test_the_offline_verifier_needs_nothing_of_the_service(tmp_path: Path) -> None:
    """The verifier (the SDK's verify.py, which the service's signer builds on) runs as a lone
    file: only the standard library and cryptography."""
    source = ROOT / "sdk" / "src" / "unlearn_client" / "verify.py"
    lone = tmp_path / "lone_verify.py"
    lone.write_text(source.read_text())
    signer = Signer(Ed25519PrivateKey.generate())
    signed = signer.sign_document({"type": "unlearn.deletion-certificate", "n": [1.5, 1e-7, "é"]})
    (tmp_path / "cert.json").write_text(json.dumps(signed))
    (tmp_path / "key.pem").write_text(signer.public_pem())
    script = (
        "import json, sys, lone_verify as v\n"
        "doc = v.verify_certificate(json.load(open('cert.json')), open('key.pem').read())\n"
        "assert doc['n'] == [1.5, 1e-7, 'é'], doc\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "bad = roots & {'service', 'sqlalchemy', 'fastapi', 'pydantic', 'unlearning', 'unlearn_client'}\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    # "-c" puts the working folder (the lone file) first on sys.path.
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
