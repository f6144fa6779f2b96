"""Quality of unlearning: IMU against gradient ascent, IAU, doing nothing, and retraining (the gold standard).

Settings (each for several seeds):

* digits MLP and digits LeNet (8×8 images): 10% random forgetting and single-class forgetting;
* MNIST-1D MLP trained to memorise a small training set: 10% random and single-class forgetting;
* Markov-chain language task (the IMU paper's synthetic setting), tiny transformer: forget every
  sequence of one chain; also the KL divergence between the true transition rows and the model's
  next-token distributions, on held-out sequences of the forgotten chain and of the kept ones.

Per seed: the original model is trained on the full training set; the reference is retrained from the
same initialisation with the same recipe on the retain set (timed). Methods run through the engine's
``unlearn``: ``imu`` (service default ``{"preset": "adaptive"}``: relative steps, early stop on the
eval set), ``imu-official`` (the paper's defaults), ``ga`` (uniform ascent with the same adaptive
preset, so it stops at the same forgetting criterion), ``ga-official``, ``iau`` (one Adam step on
∇L̄(retain) − ∇L̄(forget); gets the retain set) and ``original`` (do nothing), always shown.

The test split is halved: the *eval* half is the holdout the service gets (early stop), the *test*
half is only ever used for reporting. Metrics: forget / retain / test accuracy, MIA AUC (loss attack,
forget vs test), Avg Gap to the retrained model (mean |Δ| over those four), Tug-of-War, time, and
speed-up over retraining; mean ± std over seeds.

Run: ``python -m benchmarks.quality [--seeds 3] [--quick]``. Writes ``benchmarks/results/quality.json``,
``quality.png`` and the quality section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import RESULTS_DIR, RESULTS_MD, fmt_mean_std, write_section
from unlearning import build_model, builtin_data, unlearn
from unlearning.training import train
from unlearning.verification import gap_to_reference, mia_auc, per_sample_metrics, tug_of_war


@dataclass(frozen=True)
class Recipe:
    epochs: int
    lr: float = 1e-3
    batch_size: int = 64


@dataclass(frozen=True)
class Problem:
    """A data set + architecture + training recipe; one original model per seed serves its settings."""

    name: str
    load: Callable[[int], dict[str, Any]]
    arch: Callable[[dict[str, Any]], dict[str, Any]]
    recipe: Recipe


@dataclass(frozen=True)
class Setting:
    name: str
    problem: Problem
    kind: str  # "random" | "class"
    fraction: float = 0.1
    cls: int = 0
    extra: tuple[str, ...] = field(default_factory=tuple)  # extra metrics: ("kl",)


@dataclass(frozen=True)
class MethodRow:
    """One row of the tables: an engine method with its params.

    ``adaptive`` rows run the service default preset; in class-forgetting settings (labelled data)
    they also get ``"scope": "class"``, the engine's documented param for deleting whole classes
    (early stop on forget accuracy instead of "forget accuracy ≤ eval accuracy").
    """

    method: str
    params: dict[str, Any]
    adaptive: bool = False
    variant: bool = False  # extra documented settings tried beside the service default

    def params_for(self, setting: Setting, forget: dict[str, torch.Tensor]) -> dict[str, Any]:
        if self.adaptive and setting.kind == "class" and "labels" in forget:
            return {**self.params, "scope": "class"}
        return dict(self.params)


_ADAPTIVE = {"preset": "adaptive"}
METHODS: dict[str, MethodRow] = {
    "imu": MethodRow("imu", _ADAPTIVE, adaptive=True),
    "imu-official": MethodRow("imu", {}),
    "ga": MethodRow("ga", _ADAPTIVE, adaptive=True),
    "ga-official": MethodRow("ga", {}),
    "iau": MethodRow("iau", {}),
    # Documented alternatives, each with its GA twin where the option applies to both.
    "imu-mia": MethodRow("imu", {**_ADAPTIVE, "early_stop": "mia"}, variant=True),
    "ga-mia": MethodRow("ga", {**_ADAPTIVE, "early_stop": "mia"}, variant=True),
    "imu-top50": MethodRow("imu", {**_ADAPTIVE, "top_fraction": 0.5}, adaptive=True, variant=True),
    "imu-recompute": MethodRow("imu", {**_ADAPTIVE, "recompute": "epoch"}, adaptive=True, variant=True),
}
ROW_ORDER = ["retrain", "original", *METHODS]


def _digits_mlp(ds: dict[str, Any]) -> dict[str, Any]:
    return {"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [128], "num_classes": 10}}


def _digits_lenet(ds: dict[str, Any]) -> dict[str, Any]:
    return {"name": "lenet", "config": {"in_channels": 1, "image_size": 8, "num_classes": 10}}


def _mnist1d_mlp(ds: dict[str, Any]) -> dict[str, Any]:
    return {"name": "mlp", "config": {"input_dim": 40, "hidden_dims": [256, 256], "num_classes": 10}}


def _transformer(d_model: int, n_layers: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def arch(ds: dict[str, Any]) -> dict[str, Any]:
        v, t = ds["transitions"].shape[-1], ds["train"]["input_ids"].shape[1]
        config = {"vocab_size": v, "max_len": t, "d_model": d_model, "n_layers": n_layers, "n_heads": 4}
        return {"name": "tiny-transformer", "config": config}

    return arch


def full_settings() -> list[Setting]:
    digits_mlp = Problem("digits-mlp", lambda s: builtin_data.digits(s), _digits_mlp, Recipe(epochs=30))
    digits_lenet = Problem(
        "digits-lenet", lambda s: builtin_data.digits(s, as_images=True), _digits_lenet, Recipe(epochs=30)
    )
    # Memorising: 800 training samples, trained until train accuracy is ~100% (test stays far lower).
    mnist1d_mlp = Problem(
        "mnist1d-mlp", lambda s: builtin_data.mnist1d(s, num_samples=1000), _mnist1d_mlp, Recipe(epochs=150)
    )
    markov = Problem(
        "markov-transformer",
        lambda s: builtin_data.markov_chains(s, n_chains=4, vocab_size=16, seq_len=24, n_per_chain=200),
        _transformer(64, 2),
        Recipe(epochs=40),
    )
    return [
        Setting("digits-mlp-random10", digits_mlp, "random"),
        Setting("digits-mlp-class", digits_mlp, "class", cls=0),
        Setting("digits-lenet-random10", digits_lenet, "random"),
        Setting("digits-lenet-class", digits_lenet, "class", cls=0),
        Setting("mnist1d-mlp-random10", mnist1d_mlp, "random"),
        Setting("mnist1d-mlp-class", mnist1d_mlp, "class", cls=0),
        Setting("markov-chain0", markov, "class", cls=0, extra=("kl",)),
    ]


def quick_settings() -> list[Setting]:
    digits_mlp = Problem("digits-mlp", lambda s: builtin_data.digits(s), _digits_mlp, Recipe(epochs=3))
    markov = Problem(
        "markov-transformer",
        lambda s: builtin_data.markov_chains(s, n_chains=2, vocab_size=8, seq_len=8, n_per_chain=30),
        _transformer(16, 1),
        Recipe(epochs=2),
    )
    return [
        Setting("digits-mlp-random10", digits_mlp, "random"),
        Setting("digits-mlp-class", digits_mlp, "class", cls=0),
        Setting("markov-chain0", markov, "class", cls=0, extra=("kl",)),
    ]


def _split_half(
    data: dict[str, torch.Tensor], seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    n = next(iter(data.values())).shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 104729))
    a, b = perm[: n // 2], perm[n // 2 :]
    return {k: v[a] for k, v in data.items()}, {k: v[b] for k, v in data.items()}


def _fit(
    spec: dict[str, Any], data: dict[str, torch.Tensor], recipe: Recipe, seed: int
) -> tuple[nn.Module, float]:
    """Train from the initialisation drawn with ``seed`` (the same one for original and retrain)."""
    torch.manual_seed(seed)
    model = build_model(spec)
    start = time.perf_counter()
    train(
        model, data, epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size, seed=seed, device="cpu"
    )
    return model.eval(), time.perf_counter() - start


@torch.no_grad()
def transition_kl(
    model: nn.Module, ids: torch.Tensor, chain: torch.Tensor, transitions: torch.Tensor
) -> torch.Tensor:
    """Mean KL(P_true(·|x_t) ‖ P_model(·|x_≤t)) per sequence [N], over every position but the last."""
    model.eval()
    logq = F.log_softmax(model(ids)[:, :-1].float(), dim=-1)  # [N, T-1, V]
    p = transitions[chain.unsqueeze(1), ids[:, :-1]]  # [N, T-1, V]: true next-token rows
    kl = (p * (torch.log(p.clamp_min(1e-12)) - logq)).sum(-1)
    return kl.mean(1)


def evaluate_model(
    model: nn.Module,
    forget: dict[str, torch.Tensor],
    retain: dict[str, torch.Tensor],
    test: dict[str, torch.Tensor],
    kl_info: dict[str, Any] | None,
) -> dict[str, float]:
    fl, fa = per_sample_metrics(model, forget)
    _, ra = per_sample_metrics(model, retain)
    tl, ta = per_sample_metrics(model, test)
    out = {
        "forget_accuracy": float(fa.mean()),
        "retain_accuracy": float(ra.mean()),
        "test_accuracy": float(ta.mean()),
        "forget_loss": float(fl.mean()),
        "test_loss": float(tl.mean()),
        "mia_auc": mia_auc(fl, tl),
    }
    if kl_info is not None:
        kl = transition_kl(model, kl_info["ids"], kl_info["chain"], kl_info["transitions"])
        forgotten = kl_info["chain"] == kl_info["cls"]
        out["kl_forgotten_chain"] = float(kl[forgotten].mean())
        out["kl_kept_chains"] = float(kl[~forgotten].mean())
    return out


def run_setting_seed(
    setting: Setting,
    seed: int,
    cache: dict[tuple[str, int], Any],
    log: Callable[[str], None],
    include_variants: bool = True,
) -> dict[str, Any]:
    """All methods on one setting and seed; the original model is shared between settings of a problem."""
    key = (setting.problem.name, seed)
    if key not in cache:
        ds = setting.problem.load(seed)
        spec = setting.problem.arch(ds)
        model, train_s = _fit(spec, ds["train"], setting.problem.recipe, seed)
        cache.clear()  # one problem at a time keeps memory flat
        cache[key] = (ds, spec, model, train_s)
    ds, spec, original, train_s = cache[key]
    forget, retain = builtin_data.forget_split(
        ds, setting.kind, fraction=setting.fraction, cls=setting.cls, seed=seed
    )
    eval_set, test = _split_half(ds["test"], seed)
    kl_info = None
    if "kl" in setting.extra:
        _, test_chain = _split_half({"chain": ds["test_chain"]}, seed)
        kl_info = {
            "ids": test["input_ids"],
            "chain": test_chain["chain"],
            "transitions": ds["transitions"],
            "cls": setting.cls,
        }

    reference, retrain_s = _fit(spec, retain, setting.problem.recipe, seed)
    ref_metrics = evaluate_model(reference, forget, retain, test, kl_info)
    rows: dict[str, dict[str, Any]] = {"retrain": {**ref_metrics, "time_s": retrain_s}}
    candidates: dict[str, tuple[nn.Module, float, dict[str, Any]]] = {"original": (original, 0.0, {})}
    for row, spec_row in METHODS.items():
        if spec_row.variant and not include_variants:
            continue
        work = copy.deepcopy(original)
        start = time.perf_counter()
        result = unlearn(
            spec_row.method, work, forget, spec_row.params_for(setting, forget),
            eval=eval_set, retain=retain if spec_row.method in ("iau", "retrain") else None,
            device="cpu", seed=seed,
        )  # fmt: skip
        total = time.perf_counter() - start
        info = {
            k: result.report.get(k)
            for k in ("epochs_run", "steps", "n_selected", "stopped_early", "stop_reason", "early_stop")
        }
        # Timed like retraining (the training alone); the copy and before/after verification that
        # unlearn() adds are reported beside it as total_s.
        info["total_s"] = total
        candidates[row] = (result.model, result.report["method_s"], info)
    for row, (model, elapsed, info) in candidates.items():
        metrics = evaluate_model(model, forget, retain, test, kl_info)
        gap = gap_to_reference(metrics, ref_metrics)
        rows[row] = {
            **metrics,
            "avg_gap": gap["avg_gap"],
            "gaps": gap["gaps"],
            "tow": tug_of_war(metrics, ref_metrics),
            "time_s": elapsed,
            "time_fraction_of_retrain": elapsed / retrain_s if retrain_s > 0 else None,
            "speedup_vs_retrain": retrain_s / elapsed if elapsed > 0 else None,
            **{k: v for k, v in info.items() if v is not None},
        }
    log(
        f"{setting.name:22s} seed {seed}: retrain {retrain_s:6.2f}s; "
        + "  ".join(f"{r} gap={rows[r]['avg_gap']:.3f}" for r in ROW_ORDER if r in rows and r != "retrain")
    )
    return {"setting": setting.name, "seed": seed, "n_forget": _n(forget), "n_retain": _n(retain),
            "original_train_s": train_s, "rows": rows}  # fmt: skip


def _n(data: dict[str, torch.Tensor]) -> int:
    return int(next(iter(data.values())).shape[0])


def _agg(runs: list[dict[str, Any]], setting: str, row: str, key: str) -> list[float]:
    out = []
    for r in runs:
        if r["setting"] == setting and row in r["rows"]:
            v = r["rows"][row].get(key)
            if isinstance(v, int | float):
                out.append(float(v))
    return out


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def aggregate(runs: list[dict[str, Any]], settings: list[str]) -> dict[str, Any]:
    keys = [
        "forget_accuracy", "retain_accuracy", "test_accuracy", "mia_auc", "avg_gap", "tow", "time_s",
        "time_fraction_of_retrain", "speedup_vs_retrain", "kl_forgotten_chain", "kl_kept_chains",
        "epochs_run", "steps", "total_s",
    ]  # fmt: skip
    summary: dict[str, Any] = {}
    for s in settings:
        summary[s] = {}
        for row in ROW_ORDER:
            stats = {}
            for k in keys:
                vals = _agg(runs, s, row, k)
                if vals:
                    stats[k] = {
                        "mean": _mean(vals),
                        "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
                        "values": vals,
                    }
            if stats:
                summary[s][row] = stats
    return summary


def check_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def m(s: str, row: str, k: str) -> float:
        return summary[s].get(row, {}).get(k, {}).get("mean", float("nan"))

    for s in summary:
        gi, gg = m(s, "imu", "avg_gap"), m(s, "ga", "avg_gap")
        targets.append({"setting": s, "text": "IMU Avg Gap < GA's (same adaptive preset)", "met": gi < gg,
                        "detail": f"IMU {gi:.3f} vs GA {gg:.3f}"})  # fmt: skip
        ti, tg = m(s, "imu", "test_accuracy"), m(s, "ga", "test_accuracy")
        fi, fg = m(s, "imu", "forget_accuracy"), m(s, "ga", "forget_accuracy")
        targets.append({"setting": s, "text": "IMU test acc > GA's at equal forgetting (same early stop)",
                        "met": ti > tg,
                        "detail": f"test {ti:.3f} vs {tg:.3f}; forget acc {fi:.3f} vs {fg:.3f}"})  # fmt: skip
        frac = m(s, "imu", "time_fraction_of_retrain")
        targets.append({"setting": s, "text": "IMU time < 2% of retraining", "met": frac < 0.02,
                        "detail": f"{100 * frac:.2f}% ({m(s, 'imu', 'time_s'):.3f} s vs "
                                  f"{m(s, 'retrain', 'time_s'):.2f} s)"})  # fmt: skip
        go, gi_off = m(s, "ga-official", "avg_gap"), m(s, "imu-official", "avg_gap")
        targets.append({"setting": s, "text": "IMU Avg Gap < GA's (official recipe)", "met": gi_off < go,
                        "detail": f"IMU {gi_off:.3f} vs GA {go:.3f}"})  # fmt: skip
    return targets


def markdown(result: dict[str, Any]) -> str:
    meta, summary = result["meta"], result["summary"]
    lines = [
        "## Unlearning quality",
        "",
        f"Generated by `{meta['command']}` "
        f"on {meta['timestamp']} (CPU, torch {meta['torch']}, {meta['threads']} thread(s)); "
        f"seeds {meta['seeds']}; mean ± std over seeds. "
        "Accuracies and MIA AUC (loss attack, forget vs test; 0.5 = forget samples look unseen) in [0, 1]. "
        "Avg Gap = mean |Δ| to the retrained model over forget/retain/test accuracy and MIA "
        "(lower is better); "
        "ToW = (1−|ΔFA|)(1−|ΔRA|)(1−|ΔTA|) (higher is better). `original` = do nothing; "
        "`retrain` = the gold standard (its time is the retraining time). "
        "`time s` is the method alone, timed like retraining (the training alone); `total s` adds "
        "what `unlearn()` does around it (a copy of the model, before/after verification). "
        f"Params: {', '.join(f'`{k}` {json.dumps(v.params)}' for k, v in METHODS.items())}; "
        "in class settings "
        + ", ".join(f"`{k}`" for k, v in METHODS.items() if v.adaptive)
        + ' add `"scope": "class"`; '
        "`-mia` rows stop on MIA AUC forget-vs-eval ≤ 0.55 instead; "
        "early stop uses the eval half of the test split, metrics the other half.",
        "",
    ]
    settings = list(summary)
    lines += [
        "### Avg Gap to retraining (all settings; lower is better)",
        "",
        "| method | " + " | ".join(settings) + " |",
        "|---|" + "---:|" * len(settings),
    ]
    for row in ROW_ORDER:
        if row == "retrain" or not any(row in summary[s] for s in settings):
            continue
        cells = [
            fmt_mean_std(summary[s][row]["avg_gap"]["values"]) if row in summary[s] else "—" for s in settings
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
    for s, rows in summary.items():
        kl = any("kl_forgotten_chain" in st for st in rows.values())
        lines += [f"### {s}", ""]
        header = (
            "| method | forget acc | retain acc | test acc | MIA AUC | Avg Gap ↓ | ToW ↑ | time s "
            "| × faster than retrain | total s |"
        )
        sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        if kl:
            header += " KL forgotten chain | KL kept chains |"
            sep += "---:|---:|"
        lines += [header, sep]
        for row in ROW_ORDER:
            st = rows.get(row)
            if st is None:
                continue

            def c(k: str, digits: int = 3, st: dict[str, Any] = st) -> str:
                return fmt_mean_std(st[k]["values"], digits) if k in st else "—"

            speed = "—" if row in ("retrain", "original") else c("speedup_vs_retrain", 1)
            gap = "0 (reference)" if row == "retrain" else c("avg_gap")
            tow = "1 (reference)" if row == "retrain" else c("tow")
            time_s = "0" if row == "original" else c("time_s", 2)
            line = (
                f"| {row} | {c('forget_accuracy')} | {c('retain_accuracy')} | {c('test_accuracy')} | "
                f"{c('mia_auc')} | {gap} | {tow} | {time_s} | {speed} | "
                f"{'—' if row in ('retrain', 'original') else c('total_s', 2)} |"
            )
            if kl:
                line += f" {c('kl_forgotten_chain')} | {c('kl_kept_chains')} |"
            lines.append(line)
        lines.append("")
    lines += ["### Targets", ""]
    for t in result["targets"]:
        lines.append(f"- {t['setting']}: {t['text']}: **{'met' if t['met'] else 'missed'}** ({t['detail']})")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    settings = list(summary)
    # The main rows only: the variants are in the tables, and more bars would not be readable.
    rows = [r for r in ROW_ORDER if r != "retrain" and not (r in METHODS and METHODS[r].variant)]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(settings)), 7), squeeze=False)
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(settings))]
        for ax, key in ((axes[0][0], "avg_gap"), (axes[1][0], "test_accuracy")):
            mean = [summary[s].get(row, {}).get(key, {}).get("mean", float("nan")) for s in settings]
            std = [summary[s].get(row, {}).get(key, {}).get("std", 0.0) for s in settings]
            ax.bar(xs, mean, width, yerr=std, label=row, capsize=2)
    for j, s in enumerate(settings):
        ref = summary[s]["retrain"]["test_accuracy"]["mean"]
        axes[1][0].hlines(
            ref, j - 0.45, j + 0.45, colors="k", linestyles="--", label="retrain" if j == 0 else None
        )
    axes[0][0].set_ylabel("Avg Gap to retrain (lower is better)")
    axes[1][0].set_ylabel("test accuracy")
    for ax in axes[:, 0]:
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels(settings, rotation=20, ha="right", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=3)
    axes[1][0].legend(fontsize=7, ncol=4)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, tiny settings")
    parser.add_argument("--settings", nargs="+", default=None, help="run only these settings (by name)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small models: 1 is fastest)")
    parser.add_argument(
        "--no-variants", action="store_true", help="only the main rows (no -mia / top50 / recompute rows)"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    settings = quick_settings() if args.quick else full_settings()
    if args.settings:
        unknown = set(args.settings) - {s.name for s in settings}
        if unknown:
            parser.error(f"unknown settings {sorted(unknown)}; choose from {[s.name for s in settings]}")
        settings = [s for s in settings if s.name in args.settings]
    seeds = list(range(1 if args.quick else args.seeds))
    runs: list[dict[str, Any]] = []
    cache: dict[tuple[str, int], Any] = {}
    started = time.perf_counter()
    # Seeds inside settings' problems: one original model per (problem, seed) is reused by its settings.
    order = sorted(((s, seed) for s in settings for seed in seeds), key=lambda p: (p[0].problem.name, p[1]))
    for setting, seed in order:
        runs.append(
            run_setting_seed(
                setting, seed, cache, lambda msg: print(msg, flush=True), not (args.no_variants or args.quick)
            )
        )
    names = [s.name for s in settings]
    summary = aggregate(runs, names)
    result = {
        "meta": {
            "command": " ".join(["python -m benchmarks.quality", *(sys.argv[1:] if argv is None else argv)]),
            "quick": args.quick,
            "seeds": seeds,
            "threads": args.threads,
            "torch": torch.__version__,
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "total_s": time.perf_counter() - started,
            "methods": {
                k: {"method": v.method, "params": v.params, "class_scope_in_class_settings": v.adaptive}
                for k, v in METHODS.items()
            },
            "recipes": {s.name: vars(s.problem.recipe) for s in settings},
        },
        "summary": summary,
        "targets": check_targets(summary),
        "runs": runs,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out_dir / "quality.png")
    write_section(args.results_md, "quality", markdown(result))
    for t in result["targets"]:
        print(f"{'MET   ' if t['met'] else 'MISSED'} {t['setting']}: {t['text']}: {t['detail']}")
    return result


if __name__ == "__main__":
    main()
