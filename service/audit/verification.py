"""Verifying a chain: recompute every hash in seq order, compare with the head row and with the
last signed head (a chain cut below it, even with its head row rewritten to match, fails)."""

from __future__ import annotations

from typing import TypedDict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session
from unlearn_client.verify import key_id

from service.audit.checkpoints import latest_checkpoint, signature_ok
from service.audit.hashing import GENESIS_HASH, format_ts
from service.audit.walk import walk
from service.tables import AuditCheckpoint, AuditEvent, AuditHead


class SignedHeadOut(TypedDict):
    seq: int
    hash: str
    signed_at: str
    key_id: str


class ChainReport(TypedDict):
    chain: str
    ok: bool
    length: int
    head_hash: str
    first_bad_seq: int | None
    reason: str | None
    signed_head: SignedHeadOut | None  # the last signed head the chain was checked against


def signed_head_out(cp: AuditCheckpoint) -> SignedHeadOut:
    return {"seq": cp.seq, "hash": cp.hash, "signed_at": format_ts(cp.signed_at), "key_id": cp.key_id}


def _check_signed_head(
    session: Session, cp: AuditCheckpoint, length: int, public_key: Ed25519PublicKey | None
) -> tuple[int, str] | None:
    """Where and why the chain does not reach its last signed head, or None if it does."""
    when = format_ts(cp.signed_at)
    # Only the current key can be checked here; a head signed before a key rotation still
    # counts for reachability (docs/audit.md: keep the old public key to check it offline).
    if public_key is not None and cp.key_id == key_id(public_key) and not signature_ok(cp, public_key):
        return cp.seq, f"the head signed at seq {cp.seq} has an invalid signature (checkpoint altered)"
    if length < cp.seq:
        return (
            length + 1,
            f"truncated: the chain ends at seq {length} but its head was signed at seq {cp.seq} "
            f"(hash {cp.hash}) on {when}; events {length + 1}..{cp.seq} were removed",
        )
    event = session.get(AuditEvent, (cp.chain, cp.seq))
    if event is None or event.hash != cp.hash:
        return cp.seq, f"event {cp.seq} differs from the head signed on {when}: it was rewritten"
    return None


def verify_chain(session: Session, chain: str, public_key: Ed25519PublicKey | None = None) -> ChainReport:
    """Recompute every hash of one chain in seq order; compare with its head and its last signed
    head (whose signature is checked when ``public_key`` is the key that signed it)."""
    # Events first, then the head: every event seen was committed with its head update, so the
    # head read after them is never behind them, and events appended meanwhile (PostgreSQL
    # reads committed rows per statement) are walked below instead of reported as missing.
    result = walk(session, chain)
    head = session.get(AuditHead, chain, populate_existing=True)
    head_seq = head.seq if head is not None else 0
    head_hash = head.hash if head is not None else GENESIS_HASH
    if result.bad_seq is None and head_seq > result.seq:
        result = walk(session, chain, after_seq=result.seq, after_hash=result.hash, until=head_seq)
    cp = latest_checkpoint(session, chain)
    signed = signed_head_out(cp) if cp is not None else None

    def report(length: int, bad_seq: int | None = None, reason: str | None = None) -> ChainReport:
        return {
            "chain": chain,
            "ok": bad_seq is None,
            "length": length,
            "head_hash": head_hash,
            "first_bad_seq": bad_seq,
            "reason": reason,
            "signed_head": signed,
        }

    length = result.seq
    if result.bad_seq is not None:
        return report(length, result.bad_seq, result.reason)
    if head_seq != length or head_hash != result.hash:
        if head_seq > length:
            return report(length, length + 1, f"the head records {head_seq} events but only {length} remain")
        if head_seq < length:
            return report(length, head_seq + 1, f"events after seq {head_seq} are not recorded in the head")
        return report(length, max(length, 1), "the chain head does not match the last event")
    if cp is not None:
        problem = _check_signed_head(session, cp, length, public_key)
        if problem is not None:
            return report(length, *problem)
    return report(length)
