"""``public-key``, ``certificate``, ``receipt``, ``verify-certificate``: what the service signs,
fetched and saved, and checked offline with its public key (``unlearn_client.verify``)."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import typer

from unlearn_client.cli.output import EXIT_CHECK_FAILED, EXIT_USAGE, Output
from unlearn_client.cli.session import JsonFlag, current

OutputFile = Annotated[
    Path | None, typer.Option("--output", "-o", help="Save it to this file (else print it).", dir_okay=False)
]


def _save_or_print(data: Any, output: Path | None, out: Output, what: str) -> None:
    if output is None:
        # The document itself (with or without --json): it is JSON already, ready to redirect.
        typer.echo(jsonlib.dumps(data, indent=2, ensure_ascii=False))
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(jsonlib.dumps(data, indent=2, ensure_ascii=False) + "\n")
    out.record({"path": str(output), "saved": what})


def public_key(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", dir_okay=False, help="Where to save it (.pem: PEM, .json: JWK)."),
    ] = Path("unlearn-signing-key.pem"),
    json: JsonFlag = False,
) -> None:
    """Fetch the service's signing key (/.well-known/unlearn-signing-key) and save it, to check
    certificates and signed receipts offline with verify-certificate."""
    out = current.output(json)
    key = current.client().signing_key()
    as_jwk = output.suffix.lower() in (".json", ".jwk")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(jsonlib.dumps(key.jwk, indent=2) + "\n" if as_jwk else key.pem)
    out.record(
        {"path": str(output), "format": "jwk" if as_jwk else "pem", "key_id": key.key_id, "alg": key.alg}
    )


def certificate(
    request_id: Annotated[str, typer.Argument(help="A completed deletion request (del_...).")],
    output: OutputFile = None,
    json: JsonFlag = False,
) -> None:
    """Fetch a deletion request's signed certificate (print it, or save it with -o)."""
    out = current.output(json)
    signed = current.client().deletions.certificate(request_id)
    _save_or_print(signed.model_dump(mode="json", exclude_none=True), output, out, "certificate")


def receipt(
    id: Annotated[str, typer.Argument(help="A deletion request (del_...) or an erasure (era_...).")],
    signed: Annotated[bool, typer.Option("--signed", help="With the service's signature.")] = False,
    output: OutputFile = None,
    json: JsonFlag = False,
) -> None:
    """Fetch what a deletion request or an erasure did (print it, or save it with -o)."""
    out = current.output(json)
    client = current.client()
    group = client.erasures if id.startswith("era_") else client.deletions
    document = group.signed_receipt(id) if signed else group.receipt(id)
    _save_or_print(document.model_dump(mode="json", exclude_none=signed), output, out, "receipt")


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint=what) from exc


def _key_source(value: str) -> str:
    """A key file (PEM, JWK, or the service's well-known answer), or the PEM / JWK itself."""
    text = value.strip()
    if text.startswith("-----BEGIN") or text.startswith("{"):
        return text
    return _read(Path(value), "--public-key")


def verify_certificate(
    document: Annotated[
        Path, typer.Argument(dir_okay=False, help="A certificate or a signed receipt (JSON), as saved.")
    ],
    public_key: Annotated[
        str,
        typer.Option(
            "--public-key",
            "-k",
            help="The service's key: a file (PEM, JWK, or the well-known JSON; see public-key), "
            "or the PEM / JWK text itself.",
        ),
    ],
    json: JsonFlag = False,
) -> None:
    """Check a deletion certificate or a signed receipt offline (no service needed).

    The signature, the key that made it and the document's type; exit 6 if it does not verify."""
    out = current.output(json)
    try:
        from unlearn_client import verify
    except ImportError as exc:
        raise _fail(out, "Missing dependency", str(exc), EXIT_USAGE) from None

    try:
        key = verify.load_public_key(_key_source(public_key))
    except verify.VerificationError as exc:
        raise _fail(out, "Not a public key", str(exc), EXIT_USAGE) from None
    try:
        signed = jsonlib.loads(_read(document, "DOCUMENT"))
    except ValueError as exc:
        raise _fail(out, "Not a signed document", f"{document} is not JSON: {exc}", EXIT_USAGE) from None
    try:
        verified = verify.verify_document(signed, key)
        if verified.get("type") not in verify.DOCUMENT_TYPES:
            raise verify.VerificationError(f"unknown document type {verified.get('type')!r}")
    except verify.VerificationError as exc:
        raise _fail(out, "Verification failed", str(exc), EXIT_CHECK_FAILED) from None
    summary = {
        "verified": True,
        "type": verified.get("type"),
        "key_id": signed.get("key_id"),
        "alg": signed.get("alg", verify.ALGORITHM),
        "document": verified,
    }
    fields = ["verified", "type", "key_id", "document.request_id", "document.request.id", "document.model",
              "document.completed_at", "document.issued_at"]  # fmt: skip
    out.record(summary, fields)


def _fail(out: Output, title: str, detail: str, code: int) -> typer.Exit:
    """Report a failed check as problem+json (--json) or a line on stderr; the exit to raise."""
    out.problem({"type": "about:blank", "title": title, "detail": detail})
    return typer.Exit(code)
