"""Benchmarks of the unlearning engine: ``python -m benchmarks.speed`` and ``python -m benchmarks.quality``.

Both write JSON under ``benchmarks/results/``, a plot beside it, and their own section of
``benchmarks/RESULTS.md`` (between markers, so one benchmark never overwrites the other's numbers).
"""

from __future__ import annotations

import re
from pathlib import Path

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
