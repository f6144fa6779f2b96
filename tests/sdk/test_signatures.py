"""Certificates and signed receipts checked offline with the one verifier (``unlearn_client.verify``,
which the service's signer also builds on) on documents the running service signed, and
``unlearn-client verify-certificate``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from unlearn_client import verify as sdk_verify

import tests.sdk.test_cli as cli_tests
from service.certificates.signing import Signer
from tests.sdk.conftest import DIGITS_ARCH, Digits, Server, unique

TRICKY: list[Any] = [
    {"b": 1, "a": [1.0, 0.1, -0.0, 1e21, 1e-7, 123456789.125, 5e-324, 2**53 - 1, -(2**53 - 1)]},
    {"é": 'ü\u2028\x00\x1f"\\/', "\U0001f600": None, "z": True, "": False, "\u00e9a": "x"},
    {"nested": {"deep": [[], {}, "", 1.5e300, 3.0e-5, 100.0]}},
]


@pytest.mark.parametrize("value", TRICKY)
def test_what_the_service_signs_the_sdk_verifies(value: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = Signer(Ed25519PrivateKey.generate())
    signed = json.loads(json.dumps(signer.sign_document(value)))  # as saved and read back
    assert sdk_verify.verify_document(signed, signer.public_pem()) == value
    assert json.loads(sdk_verify.canonical_json(value)) == value


@pytest.fixture(scope="module")
def certified(server: Server, digits: Digits) -> dict[str, Any]:
    """A deletion request the real service completed, its certificate, signed receipt and key."""
    import torch

    name = unique("certified")
    forget = torch.nonzero(digits.y_train == 5).flatten()[:10]
    with server.client() as client:
        client.models.create(name, DIGITS_ARCH)
        client.versions.upload(name, digits.checkpoint, digits.eval_set)
        request = client.deletions.submit(name, digits.forget_file(forget), subject="user-7")
        done = client.deletions.wait(request, timeout=240)
        assert done.status == "completed", done
        return {
            "request_id": done.id,
            "certificate": client.deletions.certificate(done.id),
            "receipt": client.deletions.signed_receipt(done.id),
            "key": client.signing_key(),
        }


def _as_json(signed: Any) -> dict[str, Any]:
    # As it is saved and read back: plain JSON.
    loaded: dict[str, Any] = json.loads(json.dumps(signed.model_dump(mode="json", exclude_none=True)))
    return loaded


def _verdict(signed: Any, key: Any) -> str:
    """The verifier's verdict: "ok" or the error."""
    try:
        sdk_verify.verify_document(signed, key)
    except sdk_verify.VerificationError as exc:
        return f"refused: {exc}"
    return "ok"


def test_a_real_certificate_verifies_offline(certified: dict[str, Any]) -> None:
    key = certified["key"]
    certificate = _as_json(certified["certificate"])
    receipt = _as_json(certified["receipt"])
    for key_form in (key.pem, key.jwk, key.model_dump(mode="json")):
        assert sdk_verify.verify_certificate(certificate, key_form) == certificate["document"]
        assert _verdict(receipt, key_form) == "ok"
    document = sdk_verify.verify_certificate(certified["certificate"], key)  # the SDK's models as they are
    assert (
        document["request_id"] == certified["request_id"]
        and document["type"] == "unlearn.deletion-certificate"
    )
    assert sdk_verify.verify_receipt(certified["receipt"], key)["type"] == "deletion-receipt"
    assert sdk_verify.key_id(sdk_verify.load_public_key(key.pem)) == key.key_id == certificate["key_id"]
    with pytest.raises(sdk_verify.VerificationError, match="not a receipt"):
        sdk_verify.verify_receipt(certificate, key.pem)

    # Changed after signing: a field of the document, the signature, or another key.
    tampered = copy.deepcopy(certificate)
    tampered["document"]["samples"]["count"] += 1
    resigned = copy.deepcopy(certificate)
    resigned["signature"] = receipt["signature"]
    for bad in (tampered, resigned):
        verdict = _verdict(bad, key.pem)
        assert verdict.startswith("refused"), verdict
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Ed25519PrivateKey.generate().public_key()
    assert "not with the given key" in _verdict(certificate, other)


def test_verify_certificate_on_the_command_line(
    server: Server, certified: dict[str, Any], tmp_path: Path
) -> None:
    cli = cli_tests.Cli(server, tmp_path / "config")
    cli.login()
    request_id, key = certified["request_id"], certified["key"]

    saved = cli.json("public-key", "-o", str(tmp_path / "key.pem"))
    assert saved["key_id"] == key.key_id and saved["format"] == "pem"
    assert (tmp_path / "key.pem").read_text() == key.pem
    assert cli.json("public-key", "-o", str(tmp_path / "key.jwk.json"))["format"] == "jwk"
    cli.json("certificate", request_id, "-o", str(tmp_path / "cert.json"))
    assert json.loads((tmp_path / "cert.json").read_text()) == _as_json(certified["certificate"])
    cli.json("receipt", request_id, "--signed", "-o", str(tmp_path / "receipt.json"))

    # Offline: no URL, no key, no config.
    offline = server.env(XDG_CONFIG_HOME=str(tmp_path / "nothing"), UNLEARN_URL="http://127.0.0.1:9")
    for document, key_file in [
        ("cert.json", "key.pem"),
        ("cert.json", "key.jwk.json"),
        ("receipt.json", "key.pem"),
    ]:
        done = cli.json(
            "verify-certificate",
            str(tmp_path / document),
            "--public-key",
            str(tmp_path / key_file),
            env=offline,
        )
        assert done["verified"] is True and done["key_id"] == key.key_id
    ok = cli.json("verify-certificate", str(tmp_path / "cert.json"), "--public-key", key.pem, env=offline)
    assert ok["type"] == "unlearn.deletion-certificate" and ok["document"]["request_id"] == request_id
    people = cli.run(
        "verify-certificate",
        str(tmp_path / "cert.json"),
        "-k",
        str(tmp_path / "key.pem"),
        env={**offline, "COLUMNS": "250"},
    )
    assert "verified" in people.stdout and request_id in people.stdout

    tampered = json.loads((tmp_path / "cert.json").read_text())
    tampered["document"]["model"] = "someone-else"
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    pem, bad = str(tmp_path / "key.pem"), str(tmp_path / "tampered.json")
    done = cli.run("verify-certificate", bad, "--public-key", pem, "--json", env=offline, check=6)
    problem = json.loads(done.stdout)
    assert problem["title"] == "Verification failed" and "signature does not match" in problem["detail"]
    done = cli.run("verify-certificate", bad, "-k", pem, env=offline, check=6)
    assert done.stdout == "" and done.stderr.startswith("error: Verification failed")

    (tmp_path / "garbage.json").write_text("not json")
    done = cli.run("--json", "verify-certificate", str(tmp_path / "garbage.json"), "-k", key.pem, env=offline,
                   check=2)  # fmt: skip
    assert json.loads(done.stdout)["title"] == "Not a signed document"
    done = cli.run(
        "--json", "verify-certificate", str(tmp_path / "cert.json"), "-k", "{}", env=offline, check=2
    )
    assert json.loads(done.stdout)["title"] == "Not a public key"
