"""Prometheus metrics: HTTP traffic (recorded by the middleware) and job/request state (read
from the database at scrape time, so every API replica reports the same truth)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session, sessionmaker

from service.jobs.states import JobStatus, RequestStatus
from service.tables import DeletionRequest, Job, OutboxMessage

_log = structlog.get_logger("service.metrics")

JOB_DURATION_BUCKETS: tuple[float, ...] = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
)
JOB_STATUSES = tuple(str(s) for s in JobStatus)
REQUEST_STATUSES = tuple(str(s) for s in RequestStatus)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "unlearn_http_requests_total",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "unlearn_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


def _duration_seconds(session: Session) -> ColumnElement[Any]:
    # Portable "finished_at - started_at in seconds": SQLite stores ISO text, PostgreSQL timestamptz.
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", Job.finished_at - Job.started_at)
    return (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0


class DatabaseCollector(Collector):
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def describe(self) -> Iterable[Metric]:
        # Described lazily so that registering the collector does not query the database.
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            with self.session_factory() as session:
                yield from self._collect(session)
        except Exception as exc:  # a scrape must not fail because the database is down
            _log.warning("metrics_collect_failed", error=str(exc))

    def _collect(self, session: Session) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("unlearn_jobs", "Jobs by status", labels=["status"])
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        for status in sorted(set(JOB_STATUSES) | set(counts)):
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs

        reqs = GaugeMetricFamily(
            "unlearn_deletion_requests", "Deletion requests by status", labels=["status"]
        )
        counts = dict(
            session.execute(
                select(DeletionRequest.status, func.count()).group_by(DeletionRequest.status)
            ).all()
        )
        for status in sorted(set(REQUEST_STATUSES) | set(counts)):
            reqs.add_metric([status], counts.get(status, 0))
        yield reqs

        pending = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        )
        yield GaugeMetricFamily(
            "unlearn_outbox_pending", "Outbox messages not yet published to the broker", value=pending or 0
        )

        yield self._job_durations(session)

    def _job_durations(self, session: Session) -> Metric:
        duration = _duration_seconds(session)
        bucket_cols = [
            func.sum(case((duration <= b, 1), else_=0)).label(f"le_{i}")
            for i, b in enumerate(JOB_DURATION_BUCKETS)
        ]
        stmt = (
            select(Job.method, Job.status, func.count(), func.coalesce(func.sum(duration), 0.0), *bucket_cols)
            .where(Job.started_at.is_not(None), Job.finished_at.is_not(None))
            .group_by(Job.method, Job.status)
        )
        family = HistogramMetricFamily(
            "unlearn_job_duration_seconds",
            "Run time of finished jobs (started_at to finished_at)",
            labels=["method", "status"],
        )
        for method, status, count, total, *cumulative in session.execute(stmt).all():
            buckets = [(str(b), int(c or 0)) for b, c in zip(JOB_DURATION_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", int(count)))
            family.add_metric([method, status], buckets, sum_value=float(total or 0.0))
        return family


def build_registry(session_factory: sessionmaker[Session]) -> tuple[CollectorRegistry, HttpMetrics]:
    # One registry per app (not the global one): tests build many apps in one process.
    registry = CollectorRegistry(auto_describe=False)
    http = HttpMetrics(registry)
    registry.register(DatabaseCollector(session_factory))
    return registry, http
