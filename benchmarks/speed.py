"""Speed of IMU's influence stage: vectorised paths vs the official per-sample backward loop.

The influence stage = per-sample gradients of θ + diagonal Fisher + influence + selection and weights
(``unlearning.influence.imu_sample_weights``). Paths compared, for MLP (digits-sized), LeNet
(1×28×28) and ResNet-18 (3×32×32, random init: weights do not change the cost) at 100, 1000 and 5000
forget samples:

* ``closed_form``: θ = the final Linear; gradients are outer products from one batched forward pass;
* ``func``: torch.func (vmap over grad), for the final Linear and for a non-final target layer;
* ``loop``: the reference, one backward per sample with batch size 1, as the official IMU code does;
* ``forward``: one no-grad forward pass over the same samples, in the same batches as the closed
  form: the unit in which the closed form's cost is reported (target ≤ 3 forward passes).

Each CPU measurement runs in a fresh process (forked from a forkserver that has only imported torch)
so its peak memory is the ``ru_maxrss`` rise over the process's state after set-up and warm-up; on
CUDA the peak is ``torch.cuda.max_memory_allocated`` above the allocation before the call.

Run: ``python -m benchmarks.speed [--device cpu|cuda] [--quick]``. Writes
``benchmarks/results/speed_<device>.json``, ``speed_<device>.png`` and a section of ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks import output_args, run_meta, save_figure, save_json, write_section

# name → (architecture spec, per-sample input shape, non-final target for the torch.func path)
MODELS: dict[str, tuple[dict[str, Any], tuple[int, ...], str]] = {
    "mlp": (
        {"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [128], "num_classes": 10}},
        (64,),
        "body.0",
    ),
    "lenet": (
        {"name": "lenet", "config": {"in_channels": 1, "image_size": 28, "num_classes": 10}},
        (1, 28, 28),
        "conv.3",
    ),
    "resnet18": (
        {"name": "resnet18", "config": {"in_channels": 3, "num_classes": 10}},
        (3, 32, 32),  # --resnet-size changes the side (the architecture pools adaptively)
        "layer4.1.bn2",
    ),
}
# Quick mode: tiny images so a smoke run takes seconds.
QUICK_MODELS: dict[str, tuple[dict[str, Any], tuple[int, ...], str]] = {
    "mlp": MODELS["mlp"],
    "lenet": (
        {"name": "lenet", "config": {"in_channels": 1, "image_size": 8, "num_classes": 10}},
        (1, 8, 8),
        "conv.3",
    ),
}
# (path, target): target None = the final Linear ("head"), "nonfinal" = the model's non-final target.
PATHS: list[tuple[str, str]] = [
    ("forward", "head"),
    ("closed_form", "head"),
    ("func", "head"),
    ("loop", "head"),
    ("func", "nonfinal"),
    ("loop", "nonfinal"),
]
BATCH_SIZE = 256  # batch of the closed form and of the forward-pass unit
CHUNK_SIZE = 64  # vmap chunk of the torch.func path
# Fast measurements are repeated until this much time is spent; the minimum is reported (the least
# disturbed run: on a shared machine the noise only ever adds time).
MIN_TIMED_S = 1.0
MAX_REPEATS = 10


@dataclass
class Job:
    model: str
    spec: dict[str, Any]
    input_shape: tuple[int, ...]
    path: str
    target: str  # "head" or the non-final parameter name
    n: int  # forget samples the row is about
    measure_n: int  # samples actually timed (< n: extrapolated linearly)
    device: str
    threads: int


@dataclass
class Row:
    model: str
    path: str
    target: str
    n: int
    seconds: float
    measured_n: int
    extrapolated: bool
    repeats: int
    peak_mem_mb: float
    influence_path: str | None


def _max_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(job: Job) -> Row:
    """Time one (model, path, n) in this process; peak memory as described in the module doc."""
    from unlearning.architectures import build_model
    from unlearning.influence import imu_sample_weights

    torch.set_num_threads(job.threads)
    device = torch.device(job.device)
    torch.manual_seed(0)
    model = build_model(job.spec).to(device).eval()
    g = torch.Generator().manual_seed(1)
    n = job.measure_n
    data = {
        "inputs": torch.randn((n, *job.input_shape), generator=g).to(device),
        "labels": torch.randint(0, 10, (n,), generator=g).to(device),
    }
    target = None if job.target == "head" else job.target
    info: dict[str, Any] = {}

    def op(d: dict[str, torch.Tensor]) -> None:
        if job.path == "forward":
            with torch.no_grad():
                for start in range(0, d["inputs"].shape[0], BATCH_SIZE):
                    model(d["inputs"][start : start + BATCH_SIZE])
        else:
            _, meta = imu_sample_weights(
                model, d, method=job.path, target=target, batch_size=BATCH_SIZE, chunk_size=CHUNK_SIZE
            )
            info.update(meta)
        _sync(device)

    # Warm-up on one full batch (chunk for torch.func, a few samples for the loop): first-call costs
    # (kernel selection for the batch shape, vmap set-up) are not the stage's.
    warm = {"forward": BATCH_SIZE, "closed_form": BATCH_SIZE, "func": CHUNK_SIZE}.get(job.path, 8)
    op({k: v[: min(warm, n)] for k, v in data.items()})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _max_rss_mb()
    times: list[float] = []
    while True:
        t0 = time.perf_counter()
        op(data)
        times.append(time.perf_counter() - t0)
        if sum(times) >= MIN_TIMED_S or len(times) >= MAX_REPEATS:
            break
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = max(0.0, _max_rss_mb() - base)
    seconds = min(times) * job.n / n
    return Row(
        model=job.model,
        path=job.path,
        target=job.target,
        n=job.n,
        seconds=seconds,
        measured_n=n,
        extrapolated=n < job.n,
        repeats=len(times),
        peak_mem_mb=peak,
        influence_path=info.get("influence_path"),
    )


def _jobs(
    models: dict[str, tuple[dict[str, Any], tuple[int, ...], str]],
    sizes: list[int],
    device: str,
    threads: int,
    loop_subset: int | None,
) -> list[Job]:
    jobs = []
    for name, (spec, shape, nonfinal) in models.items():
        for n in sizes:
            for path, tgt in PATHS:
                target = "head" if tgt == "head" else nonfinal
                measure_n = n
                # Only the slow reference loop on ResNet-18 may be timed on a subset (labelled in the table).
                if path == "loop" and name == "resnet18" and loop_subset is not None and n > loop_subset:
                    measure_n = loop_subset
                jobs.append(Job(name, spec, shape, path, target, n, measure_n, device, threads))
    return jobs


def run_jobs(jobs: list[Job], isolate: bool, log: bool = True) -> list[Row]:
    """Run each job in a fresh forkserver child (isolate) or in this process."""
    rows: list[Row] = []
    if not isolate:
        for job in jobs:
            rows.append(measure(job))
            if log:
                _log(rows[-1])
        return rows
    ctx = mp.get_context("forkserver")
    # The server imports torch once; each child forks from it, so it starts cheap and with no
    # OpenMP threads running (forking a process that already ran parallel torch code can hang).
    ctx.set_forkserver_preload(["torch", "unlearning.influence", "unlearning.architectures"])
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
        for job in jobs:
            rows.append(pool.submit(measure, job).result())
            if log:
                _log(rows[-1])
    return rows


def _log(row: Row) -> None:
    extra = f" (timed {row.measured_n}, extrapolated)" if row.extrapolated else ""
    print(
        f"{row.model:9s} n={row.n:5d} {row.path:11s} target={row.target:13s} "
        f"{row.seconds:9.3f} s  peak {row.peak_mem_mb:8.1f} MiB{extra}",
        flush=True,
    )


def summarise(rows: list[Row]) -> list[dict[str, Any]]:
    """One entry per (model, n): times, speed-ups over the loop, closed form in forward-pass units."""
    by_key: dict[tuple[str, int], dict[tuple[str, str], Row]] = {}
    for r in rows:
        kind = "head" if r.target == "head" else "nonfinal"
        by_key.setdefault((r.model, r.n), {})[(r.path, kind)] = r
    out = []
    for (model, n), d in by_key.items():

        def s(path: str, kind: str, d: dict[tuple[str, str], Row] = d) -> float | None:
            r = d.get((path, kind))
            return r.seconds if r else None

        fwd, cf_s, fh, lh, fn, ln = (
            s("forward", "head"),
            s("closed_form", "head"),
            s("func", "head"),
            s("loop", "head"),
            s("func", "nonfinal"),
            s("loop", "nonfinal"),
        )
        nonfinal_target = next((r.target for (p, k), r in d.items() if k == "nonfinal"), None)
        out.append(
            {
                "model": model,
                "n": n,
                "forward_s": fwd,
                "closed_form_s": cf_s,
                "func_head_s": fh,
                "loop_head_s": lh,
                "loop_head_extrapolated": bool(d.get(("loop", "head")) and d[("loop", "head")].extrapolated),
                "speedup_closed_form": lh / cf_s if lh and cf_s else None,
                "speedup_func_head": lh / fh if lh and fh else None,
                "closed_form_forward_units": cf_s / fwd if cf_s and fwd else None,
                "nonfinal_target": nonfinal_target,
                "func_nonfinal_s": fn,
                "loop_nonfinal_s": ln,
                "loop_nonfinal_extrapolated": bool(
                    d.get(("loop", "nonfinal")) and d[("loop", "nonfinal")].extrapolated
                ),
                "speedup_func_nonfinal": ln / fn if ln and fn else None,
                "peak_mem_mb": {f"{p}:{k}": r.peak_mem_mb for (p, k), r in d.items()},
            }
        )
    return out


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _x(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}×"


def _loop(s: dict[str, Any], target: str) -> str:
    """The loop's time for ``target`` ("head" or "nonfinal"), marked where it was extrapolated."""
    return _f(s[f"loop_{target}_s"]) + (" *(extrapolated)*" if s[f"loop_{target}_extrapolated"] else "")


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"## Speed of the influence stage ({meta['device']})",
        "",
        f"Generated by `{meta['command']}` "
        f"(device {meta['device']}) "
        f"on {meta['timestamp']} ({meta['device_name']}, torch {meta['torch']}, "
        f"{meta['threads']} CPU thread(s)). "
        "Inputs (random, random-init models): "
        + ", ".join(f"{m} {'×'.join(map(str, sh))}" for m, sh in meta["input_shapes"].items())
        + ". "
        "Influence stage = per-sample gradients + diagonal Fisher + influence + selection/weights "
        "(`imu_sample_weights`); loop = one backward per sample, batch size 1, as in the official code. "
        "Times in seconds (fastest of up to 10 repeats of at least 1 s in total); "
        "speed-up = loop time / vectorised time. Peak memory: rise of the process's peak RSS (CPU) "
        "or of `max_memory_allocated` (CUDA) during the call.",
        "",
        "### Final linear layer (θ = `head`, IMU's default target)",
        "",
        "| model | n | forward | closed form | closed form / forward | torch.func | loop (bs 1) "
        "| speed-up closed form | speed-up func | peak MiB closed / func / loop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    summary = result["summary"]
    # The footnote on extrapolated loop times, if any row has one.
    footnote = any(
        s["loop_head_extrapolated"] or (s["func_nonfinal_s"] is not None and s["loop_nonfinal_extrapolated"])
        for s in summary
    )
    for s in summary:
        mem, loop = s["peak_mem_mb"], _loop(s, "head")
        lines.append(
            f"| {s['model']} | {s['n']} | {_f(s['forward_s'])} | {_f(s['closed_form_s'])} | "
            f"{_f(s['closed_form_forward_units'], 2)} | {_f(s['func_head_s'])} | {loop} | "
            f"{_x(s['speedup_closed_form'])} | {_x(s['speedup_func_head'])} | "
            f"{_f(mem.get('closed_form:head'), 0)} / {_f(mem.get('func:head'), 0)} / "
            f"{_f(mem.get('loop:head'), 0)} |"
        )
    lines += [
        "",
        "### Non-final target layer (torch.func vmap vs the loop)",
        "",
        "| model | target | n | torch.func | loop (bs 1) | speed-up | peak MiB func / loop |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for s in summary:
        if s["func_nonfinal_s"] is None:
            continue
        mem, loop = s["peak_mem_mb"], _loop(s, "nonfinal")
        lines.append(
            f"| {s['model']} | `{s['nonfinal_target']}` | {s['n']} | {_f(s['func_nonfinal_s'])} | {loop} | "
            f"{_x(s['speedup_func_nonfinal'])} | {_f(mem.get('func:nonfinal'), 0)} / "
            f"{_f(mem.get('loop:nonfinal'), 0)} |"
        )
    if footnote:
        lines += [
            "",
            f"*(extrapolated)*: the loop was timed on the first {meta['loop_subset']} samples and scaled "
            "linearly (the loop's cost is exactly linear in n: one independent backward per sample).",
        ]
    lines += ["", "### Targets", ""]
    lines += [
        f"- {t['text']}: **{'met' if t['met'] else 'missed'}** ({t['detail']})" for t in result["targets"]
    ]
    return "\n".join(lines) + "\n"


def check_targets(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    targets = []
    at_1000 = [s for s in summary if s["n"] == 1000 and s["speedup_closed_form"]]
    for s in at_1000:
        targets.append(
            {
                "text": f"closed form ≥ 50× faster than the loop at 1000 samples ({s['model']})",
                "met": s["speedup_closed_form"] >= 50,
                "detail": f"{s['speedup_closed_form']:.1f}×",
            }
        )
    units = [s for s in summary if s["closed_form_forward_units"] is not None]
    for model in dict.fromkeys(s["model"] for s in units):
        worst = max(s["closed_form_forward_units"] for s in units if s["model"] == model)
        targets.append(
            {
                "text": f"closed form costs ≤ 3 forward passes of the same batch ({model}, worst over n)",
                "met": worst <= 3,
                "detail": f"{worst:.2f} forward passes",
            }
        )
    return targets


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    models = list(dict.fromkeys(s["model"] for s in summary))
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.8), squeeze=False)
    series = [
        ("forward_s", "forward pass", "k:"),
        ("closed_form_s", "closed form (head)", "o-"),
        ("func_head_s", "torch.func (head)", "s-"),
        ("loop_head_s", "loop bs 1 (head)", "x--"),
        ("func_nonfinal_s", "torch.func (non-final)", "^-"),
        ("loop_nonfinal_s", "loop bs 1 (non-final)", "v--"),
    ]
    for ax, model in zip(axes[0], models, strict=True):
        rows = sorted((s for s in summary if s["model"] == model), key=lambda s: s["n"])
        for key, label, style in series:
            pts = [(s["n"], s[key]) for s in rows if s[key]]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(model)
        ax.set_xlabel("forget samples")
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"IMU influence stage on {result['meta']['device_name']}")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny models and sizes, in-process")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--models", nargs="+", default=None, choices=sorted(MODELS))
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16))
    parser.add_argument(
        "--loop-subset",
        type=int,
        default=None,
        help="time the ResNet-18 loop on this many samples when n is larger (CPU default 1000, CUDA off)",
    )
    parser.add_argument(
        "--resnet-size", type=int, default=32, help="side of ResNet-18's random 3×S×S inputs (default 32)"
    )
    output_args(parser)
    args = parser.parse_args(argv)

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    dev_kind = torch.device(device).type
    if args.quick:
        models = QUICK_MODELS
        sizes = args.sizes or [16, 64]
    else:
        models = {k: MODELS[k] for k in (args.models or MODELS)}
        if "resnet18" in models:
            spec, _, nonfinal = models["resnet18"]
            models["resnet18"] = (spec, (3, args.resnet_size, args.resnet_size), nonfinal)
        sizes = args.sizes or [100, 1000, 5000]
    loop_subset = args.loop_subset if args.loop_subset is not None else (1000 if dev_kind == "cpu" else None)
    jobs = _jobs(models, sizes, device, args.threads, loop_subset)
    # CUDA peaks come from the allocator, so no process isolation is needed there.
    rows = run_jobs(jobs, isolate=dev_kind == "cpu" and not args.quick)
    summary = summarise(rows)
    device_name = (
        torch.cuda.get_device_name(device) if dev_kind == "cuda" else (platform.processor() or "CPU")
    )
    result = {
        "meta": {
            **run_meta("benchmarks.speed", argv),
            "device": dev_kind,
            "device_name": device_name,
            "threads": args.threads,
            "quick": args.quick,
            "batch_size": BATCH_SIZE,
            "chunk_size": CHUNK_SIZE,
            "loop_subset": loop_subset,
            "memory_isolated": dev_kind == "cpu" and not args.quick,
            "input_shapes": {name: list(shape) for name, (_, shape, _) in models.items()},
        },
        "rows": [asdict(r) for r in rows],
        "summary": summary,
        "targets": check_targets(summary),
    }
    save_json(args.out_dir, f"speed_{dev_kind}.json", result)
    plot(result, args.out_dir / f"speed_{dev_kind}.png")
    write_section(args.results_md, f"speed-{dev_kind}", markdown(result))
    for t in result["targets"]:
        print(f"{'MET   ' if t['met'] else 'MISSED'} {t['text']}: {t['detail']}")
    return result


if __name__ == "__main__":
    main()
