"""The ``unlearn`` command line: train a quick-start model, unlearn with it, refuse bad inputs clearly."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from unlearning import build_model, load_checkpoint, load_dataset
from unlearning.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits MLP trained for a few epochs, with exported splits (what the quick start runs)."""
    root = tmp_path_factory.mktemp("quickstart")
    result = runner.invoke(
        app,
        [
            "train", "--arch", "mlp", "--data", "digits", "--epochs", "3",
            "--out", str(root / "model.safetensors"), "--export-splits", str(root), "--device", "cpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return root


def test_train_writes_checkpoint_splits_and_architecture(quickstart: Path) -> None:
    for name in ("model", "train", "test", "forget", "retain", "eval"):
        assert (quickstart / f"{name}.safetensors").is_file(), name
    spec = json.loads((quickstart / "architecture.json").read_text())
    assert spec == {"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [128], "num_classes": 10}}
    model = build_model(spec)
    load_checkpoint(model, quickstart / "model.safetensors")
    forget = load_dataset(quickstart / "forget.safetensors")
    retain = load_dataset(quickstart / "retain.safetensors")
    train = load_dataset(quickstart / "train.safetensors")
    assert forget["inputs"].shape == (20, 64) and forget["labels"].dtype == torch.int64
    assert forget["inputs"].shape[0] + retain["inputs"].shape[0] == train["inputs"].shape[0]


def test_train_json_summary(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["train", "--arch", "mlp", "--data", "digits", "--epochs", "1",
         "--out", str(tmp_path / "m.safetensors"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["architecture"]["name"] == "mlp"
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert len(summary["sha256"]) == 64


def _run_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run", "--arch", str(root / "architecture.json"), "--checkpoint", str(root / "model.safetensors"),
        "--forget", str(root / "forget.safetensors"), "--eval", str(root / "eval.safetensors"),
        "--method", "imu", "--device", "cpu", "--out", str(out), *extra,
    ]  # fmt: skip


def test_run_imu_json(quickstart: Path, tmp_path: Path) -> None:
    out = tmp_path / "unlearned.safetensors"
    params = '{"preset": "official", "epochs": 2}'
    result = runner.invoke(app, _run_args(quickstart, out, "--json", "--params", params))
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # stdout is exactly one JSON object
    report = payload["report"]
    for key in ("forget_accuracy", "forget_loss", "eval_accuracy", "eval_loss", "mia_auc"):
        assert key in report["before"] and key in report["after"]
    assert payload["method"] == "imu" and len(payload["sha256"]) == 64
    spec = json.loads((quickstart / "architecture.json").read_text())
    model = build_model(spec)
    load_checkpoint(model, out)
    original = build_model(spec)
    load_checkpoint(original, quickstart / "model.safetensors")
    # The head was updated; the layers below it were not (IMU's target is the last linear layer).
    assert not torch.equal(model.head.weight, original.head.weight)
    assert torch.equal(model.body[0].weight, original.body[0].weight)


def test_run_table_output(quickstart: Path, tmp_path: Path) -> None:
    inline_arch = (quickstart / "architecture.json").read_text()
    args = _run_args(quickstart, tmp_path / "o.safetensors")
    args[args.index("--arch") + 1] = inline_arch
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "before / after" in result.output and "MIA AUC" in result.output


def test_run_missing_file_is_a_clear_error(quickstart: Path, tmp_path: Path) -> None:
    args = _run_args(quickstart, tmp_path / "o.safetensors")
    args[args.index("--forget") + 1] = str(tmp_path / "nope.safetensors")
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    # The console wraps long lines (a long tmp path can split the file name): compare unwrapped.
    text = result.output.replace("\n", "")
    assert "does not exist" in text and "nope.safetensors" in text
    assert "Traceback" not in result.output


def test_run_refuses_a_pickle_checkpoint(quickstart: Path, tmp_path: Path) -> None:
    evil = tmp_path / "model.pt"
    with evil.open("wb") as fh:
        pickle.dump({"head.weight": torch.zeros(10, 128)}, fh)
    args = _run_args(quickstart, tmp_path / "o.safetensors")
    args[args.index("--checkpoint") + 1] = str(evil)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "error:" in result.output and "safetensors" in result.output.lower()
    assert not (tmp_path / "o.safetensors").exists()


def test_run_rejects_bad_params_and_arch(quickstart: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, _run_args(quickstart, tmp_path / "o.safetensors", "--params", '{"lr": -1}'))
    assert result.exit_code == 2 and "lr" in result.output
    args = _run_args(quickstart, tmp_path / "o.safetensors")
    args[args.index("--arch") + 1] = '{"name": "mlp", "config": {"input_dim": 64}}'
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "error:" in result.output


def test_run_unknown_method(quickstart: Path, tmp_path: Path) -> None:
    args = _run_args(quickstart, tmp_path / "o.safetensors")
    args[args.index("--method") + 1] = "magic"
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "magic" in result.output


def test_listings() -> None:
    methods = runner.invoke(app, ["methods"])
    assert methods.exit_code == 0 and {"imu", "ga", "iau", "retrain"} <= set(methods.stdout.split())
    archs = runner.invoke(app, ["architectures"])
    assert archs.exit_code == 0 and {"mlp", "lenet", "resnet18", "tiny-transformer"} <= set(
        archs.stdout.split()
    )


def test_run_defaults_to_the_recommended_params(quickstart: Path, tmp_path: Path) -> None:
    """Without --params the CLI runs what the service runs (the engine's defaults: the anchored
    preset), and given params refine that default instead of replacing it."""
    result = runner.invoke(
        app, _run_args(quickstart, tmp_path / "a.safetensors", "--json", "--params", '{"max_epochs": 3}')
    )
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["report"]["params"]
    assert params["preset"] == "anchored" and params["anchor"] == "auto" and params["target"] == "all"
    assert params["max_epochs"] == 3


def test_train_exports_a_whole_class_forget_set(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["train", "--arch", "mlp", "--data", "digits", "--epochs", "1",
         "--out", str(tmp_path / "m.safetensors"), "--export-splits", str(tmp_path),
         "--forget-class", "3", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    forget = load_dataset(tmp_path / "forget.safetensors")
    retain = load_dataset(tmp_path / "retain.safetensors")
    assert forget["labels"].numel() > 100 and bool((forget["labels"] == 3).all())
    assert not bool((retain["labels"] == 3).any())
    bad = runner.invoke(
        app,
        ["train", "--arch", "mlp", "--data", "digits", "--epochs", "1",
         "--out", str(tmp_path / "m2.safetensors"), "--export-splits", str(tmp_path / "x"),
         "--forget-class", "11"],
    )  # fmt: skip
    assert bad.exit_code == 2 and "no training sample" in bad.output
