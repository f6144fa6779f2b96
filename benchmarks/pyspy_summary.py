"""Aggregate a ``py-spy record --format raw`` profile by function: self and inclusive shares.

py-spy's raw format is one line per distinct stack, ``frame;frame;...;frame COUNT`` (root first;
with ``--subprocesses`` the first frame names the process). A function's **self** share counts
the samples where it is the innermost frame; its **inclusive** share counts the samples whose
stack contains it at least once (recursion counted once). Shares are of all samples of the
non-idle threads py-spy saw (py-spy leaves idle threads out unless told ``--idle``).

``summarise(path)`` returns both tables (top N) plus a share per *category* of the intake path
(validation, audit append, database driver, ...), chosen by the first matching rule over the stack,
innermost rule first: see :data:`CATEGORIES`. Run: ``python -m benchmarks.pyspy_summary FILE``.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")

# (category, substring of a frame) — the first category whose pattern appears in the stack, read
# from the innermost frame outwards, takes the sample. Order matters between categories only
# where one stack matches several; innermost wins, so "database driver" inside the audit append
# counts as the database driver.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    (
        "database driver (psycopg / sqlite3 execute, commit)",
        ("psycopg/", "sqlite3", "do_execute", "do_commit", "_sqlite_begin"),
    ),
    ("storage (forget-set blob write, fsync, exists)", ("service/storage.py",)),
    ("broker publish (kombu / redis / celery)", ("kombu/", "celery/", "redis/")),
    ("validation (engine: validate_dataset, digests, tensors)", ("unlearning/", "torch/")),
    ("audit append (hash chain)", ("service/audit/",)),
    ("idempotency", ("service/idempotency.py",)),
    ("authentication", ("service/auth.py", "authenticate_request")),
    ("SQLAlchemy ORM / core (statement building, flush, result rows)", ("sqlalchemy/",)),
    ("pydantic (request / response models, settings)", ("pydantic",)),
    ("JSON encode / decode", ("json/", "jsonbody", "orjson")),
    ("logging (structlog)", ("structlog/", "service/ops/logging.py")),
    (
        "HTTP server, ASGI, FastAPI routing (uvicorn, starlette, fastapi)",
        ("uvicorn/", "starlette/", "fastapi/", "httptools", "h11/"),
    ),
    ("thread pool hand-off (anyio)", ("anyio/",)),
]


def _func(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{m.group('func')} ({m.group('file')})"


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        # py-spy names threads like "thread (0x7f..)" when asked with --threads; drop such frames.
        frames = [f for f in frames if not f.startswith("thread (")]
        out.append((frames, int(count)))
    return out


def categorise(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, patterns in CATEGORIES:
            if any(p in frame for p in patterns):
                return name
    return "other"


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    stacks = read_stacks(path)
    total = sum(c for _, c in stacks) or 1
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    cat_c: Counter[str] = Counter()
    for frames, count in stacks:
        funcs = [_func(f) for f in frames]
        if funcs:
            self_c[funcs[-1]] += count
        for f in set(funcs):
            incl_c[f] += count
        cat_c[categorise(frames)] += count
    return {
        "samples": total,
        "self": [(f, c / total) for f, c in self_c.most_common(top)],
        "inclusive": [(f, c / total) for f, c in incl_c.most_common(top)],
        "categories": [(f, c / total) for f, c in cat_c.most_common()],
    }


def markdown_table(rows: list[tuple[str, float]], header: str) -> list[str]:
    lines = [f"| {header} | share |", "|---|---:|"]
    lines += [f"| `{name}` | {100 * share:.1f}% |" for name, share in rows]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile", type=Path)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    s = summarise(args.profile, args.top)
    print(f"{s['samples']} samples")
    for key in ("categories", "self", "inclusive"):
        print(f"\n{key}:")
        for name, share in s[key]:
            print(f"  {100 * share:5.1f}%  {name}")


if __name__ == "__main__":
    main()
