"""``unlearn-service``: run the API, the worker, both (embedded default), migrations, the reconciler,
and create API keys.

    unlearn-service run --host 127.0.0.1 --port 8000   # what `make run` calls: migrate, API + 1 worker
    unlearn-service api | worker | migrate | reconcile [--once] | create-key --tenant T --scopes a,b

Settings come from ``UNLEARN_*`` environment variables (see service/settings.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated

import typer

from service.settings import get_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Unlearning as a service: API, worker, both (`run`), migrations, reconciler, API keys.",
)


def _migrate() -> None:
    from service.migrate import upgrade

    upgrade(get_settings().resolved_database_url)


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest revision (idempotent)."""
    _migrate()
    typer.echo("database at head")


@app.command()
def api(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            envvar="UNLEARN_API_WORKERS",
            help="uvicorn worker processes: each is one Python process (one GIL), so run about one "
            "per core the API may use; they share the port",
        ),
    ] = 1,
) -> None:
    """Serve the HTTP API (uvicorn)."""
    import uvicorn

    settings = get_settings()
    if workers > 1:
        # Migrate once here, before the workers start: each worker's start-up then finds the schema
        # at head instead of racing the others to create it.
        _migrate()
        uvicorn.run(
            "service.app:create_app", factory=True, host=host, port=port, workers=workers, log_config=None
        )
        return
    from service.app import create_app

    uvicorn.run(create_app(settings), host=host, port=port, log_config=None)


def _default_pool(concurrency: int) -> str:
    # solo runs the job in the worker's main process: the embedded default and one-GPU workers.
    return "solo" if concurrency == 1 else "prefork"


# Variables Celery's own command line reads (``auto_envvar_prefix``, ``envvar=``): a stray APP or
# BROKER_URL in a user's environment must not replace our app or broker.
_CELERY_CLI_ENV = ("APP", "BROKER_URL", "RESULT_BACKEND", "LOADER", "CONFIG_MODULE", "SKIP_CHECKS")


def worker_env(environ: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k not in _CELERY_CLI_ENV and not k.startswith("CELERY_")}


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="parallel jobs (default: settings)")] = None,
    pool: Annotated[str | None, typer.Option(help="solo | threads | prefork (default: solo if 1)")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
    hostname: Annotated[str | None, typer.Option(help="Celery node name")] = None,
) -> None:
    """Run a Celery worker. Run one per GPU (CUDA_VISIBLE_DEVICES=i) with concurrency 1."""
    from service.broker import QUEUE

    settings = get_settings()
    n = concurrency or settings.worker_concurrency
    argv = [
        sys.executable,
        "-m",
        "celery",
        "--app=worker.celery_app",
        "worker",
        f"--loglevel={loglevel}",
        f"--concurrency={n}",
        f"--pool={pool or _default_pool(n)}",
        f"--queues={QUEUE}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    # exec, not a child: the worker keeps this pid, so a supervisor's signals reach Celery itself.
    # The worker package is the layer above the service; it is named here, never imported.
    os.execve(sys.executable, argv, worker_env(dict(os.environ)))


@app.command()
def reconcile(
    once: Annotated[bool, typer.Option("--once", help="one pass, print its stats, exit")] = False,
) -> None:
    """Repair expired leases and locks, (re)publish outbox messages, purge forget sets."""
    from service.context import build_context
    from service.reconciler import reconcile_once

    settings = get_settings()
    ctx = build_context(settings)
    try:
        if once:
            typer.echo(json.dumps(reconcile_once(ctx)))
            return
        while True:
            stats = reconcile_once(ctx)
            if any(stats.values()):
                typer.echo(json.dumps(stats))
            time.sleep(settings.reconcile_interval_seconds)
    except KeyboardInterrupt:
        pass
    finally:
        ctx.close()


@app.command("create-key")
def create_key_cmd(
    scopes: Annotated[str, typer.Option(help="comma-separated scopes, e.g. models:read,deletions:write")],
    tenant: Annotated[
        str | None, typer.Option(help="tenant name (created if new); default: the operator tenant")
    ] = None,
    name: Annotated[str, typer.Option(help="a label for the key")] = "cli",
) -> None:
    """Create an API key and print it (the only time it is shown).

    Also how an operator recovers a deployment left without an admin key:
    ``unlearn-service create-key --scopes admin`` against the same database.
    """
    tenant = tenant or get_settings().admin_tenant
    from service.auth import create_key, ensure_tenant
    from service.context import build_context
    from service.db import session_scope

    _migrate()
    ctx = build_context(get_settings())
    try:
        with session_scope(ctx.session_factory) as s:
            t = ensure_tenant(s, tenant)
            try:
                key, raw = create_key(
                    s, tenant_id=t.id, name=name, scopes=[x.strip() for x in scopes.split(",") if x.strip()]
                )
            except ValueError as exc:
                typer.echo(str(exc), err=True)
                raise typer.Exit(2) from exc
            from service.audit.logic import append_event

            append_event(
                s,
                actor="cli",
                action="key.created",
                tenant_id=t.id,
                object_id=key.id,
                payload={"name": name, "scopes": list(key.scopes), "prefix": key.prefix},
            )
        typer.echo(raw)
    finally:
        ctx.close()


@app.command()
def run(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """The embedded default: migrate, then run the API and one worker as supervised children.

    SIGINT/SIGTERM are forwarded to both; the children die with this process even if it is
    killed; a worker that crashes is restarted; if the API exits, everything stops.
    """
    from service.supervisor import Child, Supervisor

    settings = get_settings()
    _migrate()
    exe = [sys.executable, "-m", "service.cli"]
    api_child = Child("api", [*exe, "api", "--host", host, "--port", str(port)], restart=False)
    worker_child = Child("worker", [*exe, "worker", "--concurrency", "1"], restart=True)
    supervisor = Supervisor(
        [api_child, worker_child],
        env=dict(os.environ),
        log=lambda message: typer.echo(f"unlearn-service: {message}", err=True),
    )
    typer.echo(
        f"unlearn-service: API on http://{host}:{port}, one worker, data in {settings.data_dir.resolve()}",
        err=True,
    )
    raise typer.Exit(supervisor.run())


if __name__ == "__main__":
    app()
