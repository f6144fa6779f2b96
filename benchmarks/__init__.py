"""Benchmarks of the unlearning engine: ``python -m benchmarks.speed`` and ``python -m benchmarks.quality``.

Both write JSON under ``benchmarks/results/``, a plot beside it, and their own section of
``benchmarks/RESULTS.md`` (between markers, so one benchmark never overwrites the other's numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"

_HEADER = (
    "# Benchmark results\n\n"
    "Every number below is written by the benchmark scripts (`make bench-speed`, `make bench-quality`,\n"
    "`make bench-service`);\n"
    "each section is regenerated between its markers, so do not edit inside them.\n"
)


def write_section(md_path: Path, key: str, body: str) -> None:
    """Replace (or append) the section ``key`` of a markdown file, delimited by HTML comment markers."""
    begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    text = md_path.read_text() if md_path.exists() else _HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)


def fmt_mean_std(values: list[float], digits: int = 3) -> str:
    """ "mean ± std" of a list (population std; a single value prints without ±)."""
    import statistics

    vals = [float(v) for v in values if v == v]
    if not vals:
        return "—"
    mean = statistics.fmean(vals)
    if len(vals) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.pstdev(vals):.{digits}f}"


def output_args(parser: argparse.ArgumentParser, *, render: str | None = None) -> None:
    """``--out-dir`` and ``--results-md``; with ``render`` (its help), ``--render JSON`` too."""
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD)
    if render is not None:
        parser.add_argument("--render", type=Path, default=None, help=render)


def run_meta(module: str, argv: list[str] | None, started: float | None = None) -> dict[str, Any]:
    """What every result records: the command that made it, torch's version, when, and (given
    the ``time.perf_counter()`` it started at) how long it took."""
    import torch

    meta: dict[str, Any] = {
        "command": " ".join([f"python -m {module}", *(sys.argv[1:] if argv is None else argv)]),
        "torch": torch.__version__,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if started is not None:
        meta["total_s"] = time.perf_counter() - started
    return meta


def host_meta(loadavg_start: float) -> dict[str, Any]:
    """The machine the service benchmarks ran on, and how busy it was at the start and the end."""
    return {
        "cpus": os.cpu_count(),
        "loadavg_start": loadavg_start,
        "loadavg_end": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def save_json(out_dir: Path, name: str, result: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text(json.dumps(result, indent=2) + "\n")


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure (tight layout, 120 dpi) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
