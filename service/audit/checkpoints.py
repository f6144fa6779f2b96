"""Signed chain heads: every interval the API signs the head of each chain that moved.

A hash chain alone cannot show that its last events were deleted, if the head row is rewritten
to match. A signed head (chain, seq, hash, time) can: verification then fails unless the chain
still reaches it. A head is only signed when the events since the previous signed head check
out, so a signature never vouches for a rewritten history. Auditors may keep signed heads
(``GET /v1/audit/checkpoints``) and check them offline (unlearn_client.verify).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from unlearn_client.verify import (
    ALGORITHM,
    CANONICALIZATION,
    SIGNED_HEAD_TYPE,
    b64url_decode,
    canonical_json,
)

from service.audit.hashing import format_ts
from service.audit.walk import walk
from service.certificates.signing import SignedDocument, Signer
from service.db import session_scope, utcnow
from service.tables import AuditCheckpoint, AuditEvent, AuditHead

log = structlog.get_logger("service.audit.checkpoints")


def head_document(chain: str, seq: int, hash_: str, signed_at: datetime) -> dict[str, Any]:
    return {
        "type": SIGNED_HEAD_TYPE,
        "version": 1,
        "chain": chain,
        "seq": seq,
        "hash": hash_,
        "signed_at": format_ts(signed_at),
    }


def signed_checkpoint(cp: AuditCheckpoint) -> SignedDocument:
    """The stored checkpoint as the signed document it was made from."""
    return {
        "document": head_document(cp.chain, cp.seq, cp.hash, cp.signed_at),
        "signature": cp.signature,
        "key_id": cp.key_id,
        "alg": ALGORITHM,
        "canonicalization": CANONICALIZATION,
    }


def signature_ok(cp: AuditCheckpoint, public_key: Ed25519PublicKey) -> bool:
    document = head_document(cp.chain, cp.seq, cp.hash, cp.signed_at)
    try:
        public_key.verify(b64url_decode(cp.signature), canonical_json(document))
    except (InvalidSignature, ValueError):
        return False
    return True


def latest_checkpoint(session: Session, chain: str) -> AuditCheckpoint | None:
    return session.scalars(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.chain == chain)
        .order_by(AuditCheckpoint.seq.desc(), AuditCheckpoint.id.desc())
        .limit(1)
    ).first()


def _extends(session: Session, head: AuditHead, last: AuditCheckpoint | None) -> bool:
    """Whether the chain up to ``head`` continues the last signed head and checks out."""
    if last is None:
        result = walk(session, head.chain, until=head.seq)
    else:
        event = session.get(AuditEvent, (head.chain, last.seq))
        if last.seq > head.seq or event is None or event.hash != last.hash:
            return False
        result = walk(session, head.chain, after_seq=last.seq, after_hash=last.hash, until=head.seq)
    return result.bad_seq is None and (result.seq, result.hash) == (head.seq, head.hash)


def sign_heads(session: Session, signer: Signer) -> list[AuditCheckpoint]:
    """Sign the head of every non-empty chain that moved since its last signed head (or was
    signed by another key); returns the new checkpoints."""
    made: list[AuditCheckpoint] = []
    heads = session.scalars(select(AuditHead).where(AuditHead.seq > 0).order_by(AuditHead.chain)).all()
    for head in heads:
        last = latest_checkpoint(session, head.chain)
        if last is not None and (last.seq, last.hash, last.key_id) == (head.seq, head.hash, signer.key_id):
            continue
        if not _extends(session, head, last):
            # Refuse to vouch for it; /v1/audit/verify says what is wrong.
            log.warning("audit_chain_not_signed", chain=head.chain, seq=head.seq, reason="does not verify")
            continue
        now = utcnow()
        signed = signer.sign_document(head_document(head.chain, head.seq, head.hash, now))
        cp = AuditCheckpoint(
            chain=head.chain,
            seq=head.seq,
            hash=head.hash,
            signed_at=now,
            key_id=signed["key_id"],
            signature=signed["signature"],
        )
        session.add(cp)
        made.append(cp)
    session.flush()
    return made


def start_head_signer_thread(
    session_factory: sessionmaker[Session], signer: Signer, interval_seconds: float
) -> Callable[[], None]:
    """Run ``sign_heads`` at start and every ``interval_seconds`` in a daemon thread; returns a
    callable that stops it (and waits for the current pass)."""
    stop = threading.Event()
    interval = max(0.01, float(interval_seconds))

    def loop() -> None:
        while True:
            try:
                with session_scope(session_factory) as session:
                    sign_heads(session, signer)
            except Exception as exc:  # one bad pass must not end the loop
                with contextlib.suppress(Exception):
                    log.warning("audit_sign_failed", error=repr(exc))
            if stop.wait(interval):
                return

    thread = threading.Thread(target=loop, name="audit-head-signer", daemon=True)
    thread.start()

    def stop_thread() -> None:
        stop.set()
        thread.join(timeout=30)

    return stop_thread
