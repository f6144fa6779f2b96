"""Where an intake request spends its time: pyinstrument over N deletion requests in-process.

Starts the app (as ``unlearn-service api`` would, without a socket) on a temporary SQLite database
or on ``--database-url``, registers a digits-shaped MLP with a version, then runs ``--requests``
inline deletion requests (2 samples each, a fresh Idempotency-Key each) under the profiler, and
prints the profile (``--html`` writes the interactive one). No worker runs: the numbers are the
intake path alone, one request after the other.

By default the requests call the intake's logic (``service.deletions.logic.submit``, what the
route runs in the thread pool) on this thread, so that pyinstrument, which samples the thread it
was started on, sees them; ``--http`` posts them through the test client instead (the app then runs
on the client's portal and worker threads, and the profile shows the client waiting). The
profile under concurrent load, of the real uvicorn processes, is ``python -m benchmarks.service
--profile`` (py-spy). Run: ``python -m benchmarks.profile_intake [--requests 300] [--http]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient
from pyinstrument import Profiler

from service import idempotency
from service.app import create_app
from service.auth import authenticate
from service.context import ServiceContext
from service.db import session_scope
from service.deletions import logic
from service.deps import Principal
from service.settings import Settings
from unlearning import build_model, state_dict_bytes

ADMIN_KEY = "ulk_00000000_" + "B" * 43
ARCH = {"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [32], "num_classes": 10}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--database-url", default="")
    ap.add_argument("--html", type=Path, default=None)
    ap.add_argument("--http", action="store_true", help="through the test client (see above)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            database_url=args.database_url,
            admin_key=ADMIN_KEY,
            log_level="WARNING",
            run_reconciler_in_api=False,
        )
        app = create_app(settings)
        with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            client.app.state.ctx.publisher = _NullPublisher()
            name = f"m{uuid.uuid4().hex[:6]}"
            assert (
                client.post(
                    "/v1/models", json={"name": name, "task": "classification", "architecture": ARCH}
                ).status_code
                == 201
            )
            ckpt = state_dict_bytes(build_model(ARCH))
            assert (
                client.post(f"/v1/models/{name}/versions", files={"checkpoint": ("m", ckpt)}).status_code
                == 201
            )
            g = torch.Generator().manual_seed(0)
            bodies = [
                {"samples": {"inputs": torch.rand(2, 64, generator=g).tolist(), "labels": [1, 2]}}
                for _ in range(args.requests)
            ]
            url = f"/v1/models/{name}/deletion-requests"
            for body in bodies[:10]:  # warm-up: imports, caches, the first connections
                client.post(url, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
            profiler = Profiler(interval=0.0005)
            direct = None if args.http else _direct_submit(client.app.state.ctx, name, url)
            t0 = time.perf_counter()
            with profiler:
                for body in bodies[10:]:
                    if direct is not None:
                        assert direct(body) == 202
                        continue
                    r = client.post(url, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
                    assert r.status_code == 202, r.text
            elapsed = time.perf_counter() - t0
    n = len(bodies) - 10
    print(f"{n} requests in {elapsed:.2f} s: {n / elapsed:.0f} requests/s, {1000 * elapsed / n:.2f} ms each")
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    if args.html:
        args.html.write_text(profiler.output_html())


def _direct_submit(ctx: ServiceContext, model: str, url: str) -> Callable[[dict[str, Any]], int]:
    """The intake's logic as the route calls it, for one JSON body; returns the status code."""
    with session_scope(ctx.session_factory) as s:
        key = authenticate(s, ADMIN_KEY, touch=False)
        assert key is not None
        principal = Principal(key.tenant_id, key.id, frozenset(key.scopes), f"key:{key.id}")

    def submit(body: dict[str, Any]) -> int:
        raw = json.dumps(body).encode()
        intake = logic.Intake(source=body["samples"], inline=True)
        idem = idempotency.make_context(principal.tenant_id, uuid.uuid4().hex, "POST", url, raw)
        return logic.submit(ctx, None, principal, model, intake, idem).status_code  # type: ignore[arg-type]

    return submit


class _NullPublisher:
    """The broker is not what this profile measures (``make bench-service`` measures it all)."""

    def publish(self, topic: str, payload: dict[str, object]) -> None:
        return None


if __name__ == "__main__":
    main()
