"""Sharing the workers between tenants, decided at claim time.

* A tenant runs at most ``tenant_max_running_jobs`` jobs at once.
* A tenant that already runs a job yields to any other tenant that has a job waiting and runs
  none: with few workers, one tenant's backlog then cannot hold them all while another waits.
A job that yields stays queued and its message is retried shortly (worker/tasks.py); the claim's
transaction rolls back, so the attempt is not counted.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import db_time, utcnow
from service.jobs.states import JobStatus
from service.tables import Job, Tenant


class TenantBusy(Exception):
    """The job's tenant is at its share of the workers; try the job again later."""


def check_fair_share(session: Session, tenant_id: str, max_running: int) -> None:
    # Serialise claims per tenant (row lock on PostgreSQL; SQLite's BEGIN IMMEDIATE already does),
    # so two workers claiming jobs of one tenant on different models cannot both pass the cap.
    # FOR NO KEY UPDATE, not FOR UPDATE: it must not block the foreign-key checks (FOR KEY SHARE)
    # of the tenant's rows, or a publish holding the audit head deadlocks with a claim.
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))
    now = db_time(utcnow())
    live = (Job.status == JobStatus.RUNNING) & (Job.lease_expires_at >= now)
    running = (
        session.scalar(select(func.count()).select_from(Job).where(live, Job.tenant_id == tenant_id)) or 0
    )
    if running >= max_running:
        raise TenantBusy(f"tenant runs {running} jobs, its limit is {max_running}")
    if running == 0:
        return
    busy_tenants = select(Job.tenant_id).where(live)
    waiting = session.scalar(
        select(Job.id)
        .where(
            Job.status == JobStatus.QUEUED,
            Job.tenant_id != tenant_id,
            Job.tenant_id.not_in(busy_tenants),
        )
        .limit(1)
    )
    if waiting is not None:
        raise TenantBusy(f"tenant runs {running} job(s) and another tenant's job {waiting} waits for none")
