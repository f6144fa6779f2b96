"""The worker's Celery application: ``celery -A worker.celery_app worker``.

Built by the service's ``make_celery`` (so the API and the worker agree on queue, serialisation
and transport), with this package's task module added. Settings come from ``UNLEARN_*``.
"""

from __future__ import annotations

from service.broker import make_celery
from service.settings import get_settings

app = make_celery(get_settings(), include=["worker.tasks"])
