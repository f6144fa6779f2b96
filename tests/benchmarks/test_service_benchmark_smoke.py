"""The service benchmark's quick mode end to end: real API and worker processes, embedded backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import service

# Quick mode must stay under a minute (about 15 s on 2 cores): it runs in every `make test`.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def test_quick_mode_writes_its_section(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    # A section of another benchmark must survive: each writes only between its own markers.
    md.write_text("# Benchmark results\n\n<!-- BEGIN quality -->\nkept\n<!-- END quality -->\n")
    result = service.main(["--quick", "--out-dir", str(tmp_path), "--results-md", str(md)])

    emb = result["backends"]["embedded"]
    assert list(result["backends"]) == ["embedded"]
    assert [r["clients"] for r in emb["intake"]] == [1, 8]
    for run in emb["intake"]:
        assert run["requests"] == 20 and run["non_202"] == 0 and run["requests_per_s"] > 0
    (rep,) = emb["e2e"]["class"]["reps"]
    assert rep["accepted_s"] <= rep["succeeded_s"] <= rep["downloaded_s"]
    assert rep["after"]["forget_accuracy"] <= 0.05  # class forgetting reached

    assert json.loads((tmp_path / "service.json").read_text())["meta"]["quick"] is True
    text = md.read_text()
    assert "<!-- BEGIN service -->" in text and "kept" in text
    assert "| embedded | current, 1 process | " in text and "| embedded | class | " in text
