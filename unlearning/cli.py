"""``unlearn``: the engine from the command line.

* ``unlearn run``: unlearn a forget set from a checkpoint (the same engine the service's workers run);
* ``unlearn train``: train a built-in architecture on an offline data set, so a new user has a
  checkpoint, an architecture JSON and example forget/eval sets for the service quick start;
* ``unlearn methods`` / ``unlearn architectures``: what is registered.

Engine errors (``UnlearningError``) print one clear line on stderr and exit with code 2; with
``--json`` stdout carries exactly one JSON object and nothing else.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from unlearning import builtin_data
from unlearning.architectures import build_model, list_architectures
from unlearning.checkpoints import load_checkpoint, save_checkpoint
from unlearning.data import save_dataset, validate_dataset
from unlearning.errors import InvalidInputError, UnlearningError
from unlearning.methods import list_methods, recommended_params, unlearn
from unlearning.verification import measure

app = typer.Typer(
    name="unlearn",
    help="Influence-guided machine unlearning (IMU) and baselines on PyTorch checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_ENGINE_ERROR = 2

# Metrics of the before/after table, in display order, with their labels.
METRIC_LABELS: dict[str, str] = {
    "forget_accuracy": "forget accuracy",
    "forget_loss": "forget loss",
    "eval_accuracy": "eval accuracy",
    "eval_loss": "eval loss",
    "mia_auc": "MIA AUC (0.5 = unseen)",
}


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(EXIT_ENGINE_ERROR)


@contextmanager
def _engine_errors() -> Iterator[None]:
    """Turn the engine's deliberate errors into one clear line and exit code 2 (no traceback)."""
    try:
        yield
    except UnlearningError as exc:
        raise _fail(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise _fail(f"invalid JSON: {exc}") from None


def _jsonable(value: Any) -> Any:
    """Reports may hold tensors, paths, tuples or non-finite floats; JSON gets plain values (NaN → null)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.item() if value.numel() == 1 else value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def parse_architecture(value: str) -> dict[str, Any]:
    """``{"name", "config"}`` from inline JSON or a JSON file."""
    text = value.strip()
    if not text.startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise InvalidInputError(
                f'--arch must be inline JSON like \'{{"name": "mlp", "config": {{...}}}}\' '
                f"or a JSON file; {value!r} is neither"
            )
        text = path.read_text()
    spec = json.loads(text)
    if not isinstance(spec, dict):
        raise InvalidInputError('the architecture JSON must be an object {"name", "config"}')
    return spec


def _parse_params(value: str | None) -> dict[str, Any]:
    if value is None or not value.strip():
        return {}
    text = value
    if not value.strip().startswith("{") and Path(value).is_file():
        text = Path(value).read_text()
    params = json.loads(text)
    if not isinstance(params, dict):
        raise InvalidInputError("--params must be a JSON object")
    return params


def _existing(path: Path | None, what: str) -> Path | None:
    if path is not None and not path.is_file():
        raise InvalidInputError(f"{what} file {str(path)!r} does not exist")
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.4f}"
    return "—" if value is None else str(value)


def _metrics_table(before: Mapping[str, Any], after: Mapping[str, Any]) -> Table:
    table = Table(title="before / after")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    keys = [k for k in METRIC_LABELS if k in before or k in after]
    keys += [k for k in {**before, **after} if k not in METRIC_LABELS]
    for key in keys:
        b, a = before.get(key), after.get(key)
        delta = a - b if isinstance(a, int | float) and isinstance(b, int | float) else None
        table.add_row(METRIC_LABELS.get(key, key), _fmt(b), _fmt(a), "" if delta is None else f"{delta:+.4f}")
    return table


def _details_table(details: Mapping[str, Any]) -> Table:
    table = Table(title="run", show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    for key, value in details.items():
        table.add_row(key, _fmt(value))
    return table


@app.command()
def run(
    arch: str = typer.Option(..., "--arch", help='Architecture JSON {"name", "config"}, inline or a file.'),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Model weights (safetensors state dict)."),
    forget: Path = typer.Option(..., "--forget", help="Forget set (safetensors or .npz)."),
    eval_set: Path | None = typer.Option(
        None, "--eval", help="Held-out set for verification (and early stop)."
    ),
    retain: Path | None = typer.Option(None, "--retain", help="Retain set (iau, retrain)."),
    method: str = typer.Option("imu", "--method", help="Unlearning method (see `unlearn methods`)."),
    params: str | None = typer.Option(
        None,
        "--params",
        help="Method parameters as a JSON object or file; they refine the method's defaults, which are "
        "the recommended setting the service runs too (imu, ga, npo: the anchored preset, anchored and "
        'stopped on half of --eval, measured on the other half). {"preset": "official"} runs the '
        "paper's recipe.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(..., "--out", help="Where to write the unlearned checkpoint (safetensors)."),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object (report + sha256), nothing else."
    ),
) -> None:
    """Unlearn a forget set from a checkpoint and write the new checkpoint."""
    with _engine_errors():
        _existing(checkpoint, "checkpoint")
        _existing(forget, "forget set")
        _existing(eval_set, "eval set")
        _existing(retain, "retain set")
        method_params = recommended_params(method, _parse_params(params))
        spec = parse_architecture(arch)
        model = build_model(spec)
        load_checkpoint(model, checkpoint)
        # validate_dataset loads the file (safetensors / npz, never pickle) and normalises dtypes.
        # The operator's own files: no bound on what an .npz inflates to (a retain set may be GBs).
        forget_data = validate_dataset(forget, model, max_bytes=None)
        eval_data = validate_dataset(eval_set, model, max_bytes=None) if eval_set is not None else None
        retain_data = validate_dataset(retain, model, max_bytes=None) if retain is not None else None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidInputError(f"--device {device}: CUDA is not available on this machine")

        kwargs: dict[str, Any] = {
            "eval": eval_data,
            "retain": retain_data,
            "device": device,
            "seed": seed,
        }
        if as_json:
            result = unlearn(method, model, forget_data, method_params, **kwargs)
        else:
            with Progress(
                TextColumn("[bold]{task.description:<24}"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as bar:
                task_id = bar.add_task("starting", total=1.0)

                def on_progress(stage: str, fraction: float) -> None:
                    bar.update(task_id, description=stage, completed=min(max(float(fraction), 0.0), 1.0))

                result = unlearn(method, model, forget_data, method_params, progress=on_progress, **kwargs)
                bar.update(task_id, description="done", completed=1.0)
        out.parent.mkdir(parents=True, exist_ok=True)
        sha256 = save_checkpoint(result.model, out)

    report = result.report.to_dict()

    if as_json:
        payload = {"method": method, "out": str(out), "sha256": sha256, "report": report}
        typer.echo(json.dumps(_jsonable(payload), sort_keys=True))
        return
    console.print(_metrics_table(report["before"], report["after"]))
    details: dict[str, Any] = {
        "method": method,
        "forget samples": int(next(iter(forget_data.values())).shape[0]),
    }
    if isinstance(report.get("params"), Mapping):
        details["params"] = json.dumps(_jsonable(report["params"]), sort_keys=True)
    details.update(
        {k: v for k, v in report.items() if k not in ("before", "after") and not isinstance(v, Mapping)}
    )
    split = report.get("eval_split")
    if isinstance(split, Mapping):
        # The table's eval metrics are the check half's: the method anchored and stopped on the other.
        details["eval split"] = f"{split['n_anchor']} anchor / {split['n_check']} check (metrics: check half)"
    details.update({"checkpoint": str(out), "sha256": sha256})
    console.print(_details_table(details))


# Default configs for `unlearn train`, per (architecture, data set). Each entry gives the built-in data
# set to load (images for the CNNs) and the architecture config derived from it.
def default_setup(arch: str, data: str, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(architecture spec, data set dict) for training ``arch`` on the built-in data set ``data``."""
    if data == "digits":
        if arch == "mlp":
            return {"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [128], "num_classes": 10}}, (
                builtin_data.digits(seed)
            )
        if arch == "lenet":
            return {"name": "lenet", "config": {"in_channels": 1, "image_size": 8, "num_classes": 10}}, (
                builtin_data.digits(seed, as_images=True)
            )
        if arch == "resnet18":
            return {"name": "resnet18", "config": {"in_channels": 1, "num_classes": 10}}, (
                builtin_data.digits(seed, as_images=True)
            )
    elif data == "mnist1d":
        if arch == "mlp":
            return {
                "name": "mlp",
                "config": {"input_dim": 40, "hidden_dims": [256, 256], "num_classes": 10},
            }, (builtin_data.mnist1d(seed, num_samples=4000))
    elif data == "markov" and arch == "tiny-transformer":
        ds = builtin_data.markov_chains(seed)
        v, t = ds["transitions"].shape[-1], ds["train"]["input_ids"].shape[1]
        config = {"vocab_size": v, "max_len": t, "d_model": 64, "n_layers": 2, "n_heads": 4}
        return {"name": "tiny-transformer", "config": config}, ds
    raise InvalidInputError(
        f"no built-in set-up for --arch {arch} with --data {data}; supported: mlp/lenet/resnet18 on digits, "
        "mlp on mnist1d, tiny-transformer on markov"
    )


# Epochs that reach a well-fitted model on each data set with the engine's default optimiser.
DEFAULT_EPOCHS = {"digits": 30, "mnist1d": 60, "markov": 30}


@app.command()
def train(
    arch: str = typer.Option(
        "mlp", "--arch", help="Built-in architecture: mlp, lenet, resnet18, tiny-transformer."
    ),
    data: str = typer.Option("digits", "--data", help="Offline data set: digits, mnist1d or markov."),
    out: Path = typer.Option(..., "--out", help="Where to write the trained checkpoint (safetensors)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Default depends on the data set."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate (Adam)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    export_splits: Path | None = typer.Option(
        None,
        "--export-splits",
        help="Also write train/test/forget/retain/eval sets and the architecture JSON here.",
    ),
    forget_size: int = typer.Option(20, "--forget-size", min=1, help="Samples in the example forget set."),
    forget_class: int | None = typer.Option(
        None,
        "--forget-class",
        min=0,
        help="Make the example forget set every training sample of this class (whole-class deletion, "
        'params {"scope": "class"}) instead of --forget-size random samples.',
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, nothing else."),
) -> None:
    """Train a built-in architecture on an offline data set and write its checkpoint."""
    from unlearning.training import train as train_model

    with _engine_errors():
        spec, ds = default_setup(arch, data, seed)
        torch.manual_seed(seed)
        model = build_model(spec)
        n_epochs = epochs if epochs is not None else DEFAULT_EPOCHS[data]
        train_kwargs: dict[str, Any] = {
            "epochs": n_epochs,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "device": device,
        }
        started = time.perf_counter()
        if as_json:
            train_model(model, ds["train"], **train_kwargs)
        else:
            with console.status(f"training {arch} on {data} for {n_epochs} epochs"):
                train_model(model, ds["train"], **train_kwargs)
        elapsed = time.perf_counter() - started
        model = model.cpu().eval()
        out.parent.mkdir(parents=True, exist_ok=True)
        sha256 = save_checkpoint(model, out)
        metrics = {
            "train": measure(model, ds["train"]),
            "test": measure(model, ds["test"]),
        }
        files: dict[str, str] = {"checkpoint": str(out)}
        if export_splits is not None:
            files.update(_export_splits(export_splits, spec, ds, forget_size, seed, forget_class))

    summary = {
        "architecture": spec,
        "sha256": sha256,
        "epochs": n_epochs,
        "train_s": elapsed,
        "train_accuracy": metrics["train"]["forget_accuracy"],
        "test_accuracy": metrics["test"]["forget_accuracy"],
        "files": files,
    }
    if as_json:
        typer.echo(json.dumps(_jsonable(summary), sort_keys=True))
        return
    console.print(
        f"trained [bold]{arch}[/] on [bold]{data}[/] in {elapsed:.1f} s: "
        f"train accuracy {summary['train_accuracy']:.4f}, test accuracy {summary['test_accuracy']:.4f}"
    )
    console.print("architecture (use it to register the model with the service):")
    console.print_json(json.dumps(spec))
    table = Table(title="files written")
    table.add_column("what")
    table.add_column("path", overflow="fold")
    for what, path in files.items():
        table.add_row(what, path)
    console.print(table)


def _export_splits(
    directory: Path,
    spec: dict[str, Any],
    ds: dict[str, Any],
    forget_size: int,
    seed: int,
    forget_class: int | None = None,
) -> dict[str, str]:
    """Write the data splits the service quick start uses; returns {what: path}."""
    train_set, test_set = ds["train"], ds["test"]
    n = next(iter(train_set.values())).shape[0]
    if forget_class is not None:
        if "labels" not in train_set:
            raise InvalidInputError("--forget-class needs a classification data set")
        mask = train_set["labels"] == forget_class
        if not bool(mask.any()):
            classes = sorted(int(c) for c in train_set["labels"].unique())
            raise InvalidInputError(f"--forget-class {forget_class}: no training sample has it ({classes})")
    else:
        if forget_size >= n:
            raise InvalidInputError(
                f"--forget-size {forget_size} must be smaller than the training set ({n})"
            )
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[perm[:forget_size]] = True
    directory.mkdir(parents=True, exist_ok=True)
    sets = {
        "train": train_set,
        "test": test_set,
        "forget": {k: v[mask] for k, v in train_set.items()},
        "retain": {k: v[~mask] for k, v in train_set.items()},
        # The eval (holdout) set the service verifies against: the test split, never trained on.
        "eval": test_set,
    }
    files: dict[str, str] = {}
    for name, split in sets.items():
        path = directory / f"{name}.safetensors"
        save_dataset(split, path)
        files[name] = str(path)
    arch_path = directory / "architecture.json"
    arch_path.write_text(json.dumps(spec, indent=2) + "\n")
    files["architecture"] = str(arch_path)
    return files


@app.command("methods")
def methods_cmd() -> None:
    """List the registered unlearning methods."""
    for name in list_methods():
        typer.echo(name)


@app.command("architectures")
def architectures_cmd() -> None:
    """List the registered architectures."""
    for name in list_architectures():
        typer.echo(name)


@app.command("datasets")
def datasets_cmd() -> None:
    """List the built-in offline data sets (for `unlearn train --data`)."""
    for name in builtin_data.list_builtin():
        typer.echo(name)


if __name__ == "__main__":  # pragma: no cover
    app()
