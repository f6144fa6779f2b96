"""After-commit effects, recorded on the session inside the transaction.

Some work must happen only once the state it follows is durable: handing a job to the broker
(its outbox row must be committed first, or the worker could find no job) and purging a stored
forget set (its request must be committed as finished first). Code deep in a transaction records
such effects on the session; they run after a successful commit and are dropped on rollback, so
no caller threads ids back up the stack and nothing runs for a transaction that did not happen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

log = structlog.get_logger("service.unit_of_work")

_KEY = "after_commit"


@dataclass
class PendingEffects:
    """What one transaction asked for; merged, so a batch publishes and purges once."""

    outbox_ids: list[int] = field(default_factory=list)
    purge_request_ids: list[str] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.outbox_ids or self.purge_request_ids or self.callbacks)


def pending(session: Session) -> PendingEffects:
    effects = session.info.get(_KEY)
    if effects is None:
        effects = session.info[_KEY] = PendingEffects()
    return effects


def publish_after_commit(session: Session, outbox_id: int) -> None:
    pending(session).outbox_ids.append(outbox_id)


def purge_after_commit(session: Session, request_ids: list[str]) -> None:
    pending(session).purge_request_ids.extend(request_ids)


def call_after_commit(session: Session, callback: Callable[[], None]) -> None:
    pending(session).callbacks.append(callback)


def install(factory: sessionmaker[Session], run: Callable[[PendingEffects], None]) -> None:
    """Run each committed transaction's effects with ``run``; drop a rolled-back one's."""

    @event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        effects = session.info.pop(_KEY, None)
        if not effects:
            return
        try:
            run(effects)
        except Exception as exc:
            # The transaction is committed; a failed effect is retried by the reconciler (an
            # unpublished outbox row, a forget set past its retention), never by the caller.
            log.warning("after_commit_failed", error=repr(exc))

    @event.listens_for(factory, "after_transaction_end")
    def _after_end(session: Session, transaction: SessionTransaction) -> None:
        # After a commit the effects were already taken above; anything left belongs to a
        # transaction that rolled back (or was closed without committing) and must not run.
        if transaction.parent is None:
            session.info.pop(_KEY, None)
