"""Both benchmarks run end to end in quick mode and write their JSON, plot and RESULTS.md section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import quality, speed, write_section
from unlearning import list_methods


def test_write_section_replaces_only_its_own_block(tmp_path: Path) -> None:
    md = tmp_path / "R.md"
    write_section(md, "a", "first A")
    write_section(md, "b", "first B")
    write_section(md, "a", "second A")
    text = md.read_text()
    assert "second A" in text and "first A" not in text and "first B" in text
    assert text.index("BEGIN a") < text.index("BEGIN b")


@pytest.mark.slow
def test_quick_benchmarks(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    speed_result = speed.main(["--quick", "--out-dir", str(tmp_path), "--results-md", str(md)])
    quality_result = quality.main(["--quick", "--out-dir", str(tmp_path), "--results-md", str(md)])

    saved = json.loads((tmp_path / "speed_cpu.json").read_text())
    assert saved["summary"] and all(s["closed_form_s"] > 0 and s["loop_head_s"] > 0 for s in saved["summary"])
    assert {r["path"] for r in speed_result["rows"]} == {"forward", "closed_form", "func", "loop"}
    assert (tmp_path / "speed_cpu.png").stat().st_size > 0

    saved_q = json.loads((tmp_path / "quality.json").read_text())
    assert set(saved_q["summary"]) == {s.name for s in quality.quick_settings()}
    for rows in quality_result["summary"].values():
        # Every registered method is reported beside doing nothing and the retrained reference.
        assert {"retrain", "original", *(m for m in list_methods() if m != "retrain")} <= set(rows)
    assert "kl_forgotten_chain" in quality_result["summary"]["markov-chain0"]["imu"]
    assert "policy_accepted" in quality_result["summary"]["markov-chain0"]["ga"]
    assert "lira_tpr_at_5pct_fpr" in quality_result["summary"]["digits-mlp-class"]["ga"]
    assert {t["text"] for t in quality_result["targets"]}
    assert (tmp_path / "quality.png").stat().st_size > 0

    text = md.read_text()
    assert "BEGIN speed-cpu" in text and "BEGIN quality" in text
    assert "Avg Gap" in text and "speed-up" in text
