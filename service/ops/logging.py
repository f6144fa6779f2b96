"""structlog configuration: JSON lines (or console), every line of a request carries request_id."""

from __future__ import annotations

import logging
import sys

import structlog

from service.settings import Settings

_configured = False
_HANDLER_NAME = "unlearn-structlog"


def _is_plain_stderr(h: logging.Handler) -> bool:
    # logging.basicConfig's default handler would print every line a second time, unformatted.
    return type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stderr, sys.stdout)


def configure_logging(settings: Settings, *, force: bool = False) -> None:
    """Configure once per process (the API and the worker both call it)."""
    global _configured
    if _configured and not force:
        return
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    shared: list[structlog.types.Processor] = [
        # request_id and friends are bound per request with structlog.contextvars.
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if settings.log_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Route stdlib logging (uvicorn, celery, sqlalchemy) through the same renderer.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler (a reconfiguration), never someone else's (pytest's capture).
    root.handlers = [h for h in root.handlers if h.get_name() != _HANDLER_NAME and not _is_plain_stderr(h)]
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's own access log would duplicate ours (which carries the request id).
    logging.getLogger("uvicorn.access").disabled = True
    _configured = True
