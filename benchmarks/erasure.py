"""Erasure by data subject on the running service: one subject out of a 50,000-sample training set
and the two models trained on it, beside doing nothing and retraining.

For each backend (``embedded``: SQLite + the filesystem broker; ``postgres``: PostgreSQL + Redis,
a fresh database), real ``unlearn-service api`` and ``worker`` processes (the helpers of
benchmarks/service.py), then:

* **data**: a classification set of ``--samples`` (50,000) samples of 40 random features (10
  Gaussian classes, overlapping) with int sample ids and string subject ids, 10 samples per
  subject, the subjects' samples scattered over the set (a subject's data arrive over time, not in
  one block); uploaded as an ``.npz`` to ``POST /v1/datasets/train/versions``, so stored in shards
  of the default 1,024 samples. A held-out set of 5,000 samples is each model's eval set.
* **models**: two MLPs (40→64→10 and 40→128→10), trained with the engine offline (Adam, a few
  epochs), each uploaded as version 1 with ``dataset``, ``dataset_version`` and ``recipe`` (the
  recipe a retrain uses), so the service knows what they were trained on.
* **erasure** (per repetition, a new subject): ``POST /v1/datasets/train/erasures {"subject"}``;
  timed to the 202 (**doing nothing**: the intake alone, what a service that only records the
  request costs) and to the erasure's ``completed`` (both models' jobs succeeded, polled every
  100 ms) with the new dataset version present. The new version reports what the erasure
  rewrote (``erasure.shards_rewritten``, ``bytes_rewritten``), compared with the whole set.
* **retraining**: ``POST /v1/models/{name}/training-jobs`` for both models on the dataset's latest
  version (the data without the subject) with each model's recorded recipe: the exact answer,
  timed from submission to both jobs succeeded. (A by-reference deletion request with ``"method":
  "retrain"`` retrains on a retain *sample* of at most ``UNLEARN_DATASET_RETAIN_MAX_SAMPLES``,
  10,000 by default, so it is not the full retraining this compares with.)

One worker (solo pool, 1 torch thread) runs the jobs one after the other, for the erasure as for
the retraining. Run: ``python -m benchmarks.erasure [--backends embedded postgres] [--reps 2]
[--samples 50000]``. Writes ``benchmarks/results/service_erasure.json`` and the ``service-erasure``
section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from benchmarks import host_meta, output_args, run_meta, save_json, write_section
from benchmarks.service import (
    Service,
    backend_urls,
    bench_settings,
    client_for,
    postgres_available,
)
from unlearning import build_model, state_dict_bytes
from unlearning.training import train

BACKENDS = ("embedded", "postgres")
FEATURES = 40
CLASSES = 10
SAMPLES_PER_SUBJECT = 10
N_EVAL = 5000
POLL_S = 0.1
MODELS: dict[str, dict[str, Any]] = {
    "mlp-64": {
        "architecture": {
            "name": "mlp",
            "config": {"input_dim": FEATURES, "hidden_dims": [64], "num_classes": CLASSES},
        },
        "recipe": {"epochs": 10, "lr": 1e-3, "batch_size": 128, "optimizer": "adam", "seed": 0},
    },
    "mlp-128": {
        "architecture": {
            "name": "mlp",
            "config": {"input_dim": FEATURES, "hidden_dims": [128], "num_classes": CLASSES},
        },
        "recipe": {"epochs": 10, "lr": 1e-3, "batch_size": 128, "optimizer": "adam", "seed": 1},
    },
}


@dataclass
class Data:
    x: torch.Tensor  # [N + N_EVAL, FEATURES] float32
    y: torch.Tensor  # [N + N_EVAL] int64
    subjects: np.ndarray  # [N] str
    n: int

    def train_npz(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            inputs=self.x[: self.n].numpy(),
            labels=self.y[: self.n].numpy(),
            sample_ids=np.arange(self.n, dtype=np.int64),
            subject_ids=self.subjects,
        )
        return buf.getvalue()

    def eval_blob(self) -> bytes:
        from safetensors.torch import save

        return save({"inputs": self.x[self.n :].contiguous(), "labels": self.y[self.n :].contiguous()})


def make_data(n: int, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, FEATURES, generator=g)
    y = torch.randint(CLASSES, (n + N_EVAL,), generator=g)
    x = (centers[y] + 1.2 * torch.randn(n + N_EVAL, FEATURES, generator=g)).float()
    # Subject k owns samples perm[10k : 10k + 10]: ten positions scattered over the whole set.
    perm = torch.randperm(n, generator=g).numpy()
    subjects = np.empty(n, dtype="<U16")
    subjects[perm] = np.array([f"user-{i // SAMPLES_PER_SUBJECT}" for i in range(n)])
    return Data(x, y, subjects, n)


def train_models(data: Data) -> dict[str, dict[str, Any]]:
    """Each model trained offline with the engine on the training part; checkpoint and accuracies."""
    out = {}
    tr = {"inputs": data.x[: data.n], "labels": data.y[: data.n]}
    for name, spec in MODELS.items():
        r = spec["recipe"]
        torch.manual_seed(r["seed"])
        model = build_model(spec["architecture"])
        t0 = time.perf_counter()
        train(
            model, tr, epochs=r["epochs"], lr=r["lr"], batch_size=r["batch_size"], optimizer=r["optimizer"],
            seed=r["seed"], device="cpu",
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            acc_tr = float((model(tr["inputs"]).argmax(1) == tr["labels"]).float().mean())
            acc_ev = float((model(data.x[data.n :]).argmax(1) == data.y[data.n :]).float().mean())
        out[name] = {
            "checkpoint": state_dict_bytes(model),
            "train_accuracy": acc_tr,
            "eval_accuracy": acc_ev,
            "offline_train_s": seconds,
        }
        print(
            f"{name}: trained offline in {seconds:.1f}s, train {acc_tr:.3f} / eval {acc_ev:.3f}", flush=True
        )
    return out


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _ok(r: httpx.Response) -> dict[str, Any]:
    if r.status_code >= 300:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:2000]}")
    return dict(r.json())


def _job_times(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": job["id"],
        "kind": job.get("kind"),
        "method": job["method"],
        "status": job["status"],
        "queue_wait_s": _ts(job["started_at"]) - _ts(job["created_at"]),
        "run_s": _ts(job["finished_at"]) - _ts(job["started_at"]),
        "metrics": {
            k: (job.get("metrics") or {}).get(k) for k in ("before", "after", "elapsed_s", "steps", "train_s")
        },
    }


def wait_jobs(
    client: httpx.Client, job_ids: list[str], logs: Any, timeout: float = 1800
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [_ok(client.get(f"/v1/jobs/{j}")) for j in job_ids]
        if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
            bad = [j for j in jobs if j["status"] != "succeeded"]
            if bad:
                raise RuntimeError(
                    f"jobs did not succeed: {[(j['id'], j['status'], j['error']) for j in bad]}\n{logs()}"
                )
            return jobs
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not done after {timeout}s: {[j['status'] for j in jobs]}\n{logs()}")
        time.sleep(POLL_S)


def setup(client: httpx.Client, data: Data, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _ok(client.post("/v1/datasets", json={"name": "train", "task": "classification"}))
    blob = data.train_npz()
    t0 = time.perf_counter()
    v1 = _ok(
        client.post(
            "/v1/datasets/train/versions", files={"data": ("train.npz", blob, "application/octet-stream")}
        )
    )
    upload_s = time.perf_counter() - t0
    for name, spec in MODELS.items():
        _ok(
            client.post(
                "/v1/models",
                json={"name": name, "task": "classification", "architecture": spec["architecture"]},
            )
        )
        _ok(
            client.post(
                f"/v1/models/{name}/versions",
                files={
                    "checkpoint": (
                        "model.safetensors",
                        models[name]["checkpoint"],
                        "application/octet-stream",
                    ),
                    "eval_set": ("eval.safetensors", data.eval_blob(), "application/octet-stream"),
                },
                data={"dataset": "train", "dataset_version": "1", "recipe": json.dumps(spec["recipe"])},
            )
        )
    return {"upload_s": upload_s, "upload_bytes": len(blob), "version": v1}


def erase_once(client: httpx.Client, subject: str, logs: Any, timeout: float = 1800) -> dict[str, Any]:
    before = _ok(client.get("/v1/datasets/train/versions/latest"))
    t0 = time.perf_counter()
    r = client.post(
        "/v1/datasets/train/erasures",
        json={"subject": subject},
        headers={"Idempotency-Key": f"erase-{subject}"},
    )
    accepted_s = time.perf_counter() - t0
    erasure = _ok(r)
    if r.status_code != 202:
        raise RuntimeError(f"erasure not accepted for later: {r.status_code} {erasure}")
    deadline = time.monotonic() + timeout
    while True:
        erasure = _ok(client.get(f"/v1/erasures/{erasure['id']}"))
        if erasure["status"] == "failed":
            raise RuntimeError(f"erasure failed: {erasure}\n{logs()}")
        if erasure["status"] == "completed" and erasure["result_dataset_version"] is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"erasure not done after {timeout}s: {erasure}\n{logs()}")
        time.sleep(POLL_S)
    completed_s = time.perf_counter() - t0
    after = _ok(client.get(f"/v1/datasets/train/versions/{erasure['result_dataset_version']}"))
    jobs = [_ok(client.get(f"/v1/jobs/{d['job_id']}")) for d in erasure["deletion_requests"]]
    return {
        "subject": subject,
        "n_samples": erasure["n_samples"],
        "models": [d["model"] for d in erasure["deletion_requests"]],
        "accepted_s": accepted_s,
        "completed_s": completed_s,
        "jobs": [_job_times(j) | {"model": j["model"]} for j in jobs],
        "dataset_before": {k: before[k] for k in ("version", "n_samples", "n_shards", "size_bytes")},
        "dataset_after": {k: after[k] for k in ("version", "n_samples", "n_shards", "size_bytes")},
        "erasure": after["erasure"],
    }


def retrain_once(client: httpx.Client, logs: Any) -> dict[str, Any]:
    """Both models retrained on the latest dataset version with their recipes (training jobs)."""
    t0 = time.perf_counter()
    ids = [
        _ok(
            client.post(
                f"/v1/models/{name}/training-jobs",
                json={"dataset": "train", "dataset_version": "latest", "recipe": spec["recipe"]},
            )
        )["id"]
        for name, spec in MODELS.items()
    ]
    accepted_s = time.perf_counter() - t0
    jobs = wait_jobs(client, ids, logs)
    return {
        "accepted_s": accepted_s,
        "completed_s": time.perf_counter() - t0,
        "jobs": [_job_times(j) | {"model": j["model"]} for j in jobs],
    }


def run_backend(
    backend: str, data: Data, models: dict[str, dict[str, Any]], reps: int, redis_db: int
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-erasure-{backend}-") as tmp,
        backend_urls(backend, redis_db) as (db_url, broker_url),
    ):
        workdir = Path(tmp)
        settings = bench_settings(workdir, db_url, broker_url)
        service = Service(settings, workdir)
        try:
            service.start_api()
            with client_for(service.base_url) as client:
                client.timeout = httpx.Timeout(600)
                info = setup(client, data, models)
                v1 = info["version"]
                print(
                    f"[{backend}] dataset uploaded in {info['upload_s']:.1f}s: {v1['n_samples']} samples, "
                    f"{v1['n_shards']} shards, {v1['size_bytes']} bytes",
                    flush=True,
                )
                service.start_worker()
                erasures, retrains = [], []
                for rep in range(reps):
                    subject = f"user-{(rep * 997 + 11) % (data.n // SAMPLES_PER_SUBJECT)}"
                    e = erase_once(client, subject, service.logs)
                    erasures.append(e)
                    print(
                        f"[{backend}] erasure {rep} ({subject}): accepted {e['accepted_s']:.3f}s, completed "
                        f"{e['completed_s']:.1f}s, shards rewritten {e['erasure']['shards_rewritten']}/"
                        f"{e['dataset_before']['n_shards']}, bytes {e['erasure']['bytes_rewritten']}/"
                        f"{e['dataset_before']['size_bytes']}; jobs "
                        + ", ".join(f"{j['model']} {j['method']} {j['run_s']:.1f}s" for j in e["jobs"]),
                        flush=True,
                    )
                    t = retrain_once(client, service.logs)
                    retrains.append(t)
                    print(
                        f"[{backend}] retraining {rep}: completed {t['completed_s']:.1f}s; jobs "
                        + ", ".join(f"{j['model']} {j['run_s']:.1f}s" for j in t["jobs"]),
                        flush=True,
                    )
        finally:
            service.stop()
    return {"setup": {k: v for k, v in info.items()}, "erasures": erasures, "retrains": retrains}


def _med(values: list[float]) -> float:
    return statistics.median(values)


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        "## Service: erasure of a data subject (50,000-sample training set, 2 models)",
        "",
        f"Generated by `{meta['command']}` on {meta['timestamp']} ({meta['cpus']} CPU cores shared with "
        f"other work: load average {meta['loadavg_start']:.1f} at the start, {meta['loadavg_end']:.1f} at "
        "the end; torch "
        f"{meta['torch']}, 1 torch thread per process; client, API, database and worker on the same "
        "machine). Real `unlearn-service api` and `worker` processes (one worker, solo pool: the two "
        "models' jobs run one after the other). Data: "
        f"{meta['samples']} training samples of {FEATURES} features in {CLASSES} overlapping Gaussian "
        f"classes (+ {N_EVAL} held out as each model's eval set), int sample ids, string subject ids, "
        f"{SAMPLES_PER_SUBJECT} samples per subject scattered over the set; uploaded as one `.npz`, "
        "stored in shards of 1,024 samples. Models, trained with the engine offline and uploaded with "
        "`dataset`, `dataset_version`, `recipe`: "
        + "; ".join(
            f"`{n}` ({m['architecture']['config']['hidden_dims']} hidden, {m['recipe']['epochs']} epochs, "
            f"train {meta['models'][n]['train_accuracy']:.3f} / "
            f"eval {meta['models'][n]['eval_accuracy']:.3f})"
            for n, m in MODELS.items()
        )
        + ".",
        "",
        "**Doing nothing** = the erasure request's intake alone (`POST /v1/datasets/train/erasures` → "
        "202: the subject's samples found, one deletion request per model recorded): what a service "
        "that only records the request costs. **Erasure** = the same request until the erasure is "
        "`completed`: both models' jobs succeeded (each publishes a new model version; the first also "
        "writes the new dataset version without the subject) and the new dataset version exists. "
        "**Retraining** = `POST /v1/models/{name}/training-jobs` for both models on the dataset's "
        "latest version (without the subject) with each model's recipe, until both succeeded: the exact "
        "answer, on all the remaining data. Storage: what the new dataset version reports it rewrote "
        "(`erasure.shards_rewritten`, `erasure.bytes_rewritten`) against the whole set.",
        "",
        "| backend | rep | samples erased | doing nothing (intake) s | erasure completed s | "
        "jobs: method, run s | retraining both s | training jobs: run s | erasure / retraining | "
        "shards rewritten | bytes rewritten | share of the set's bytes |",
        "|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for backend, res in result["backends"].items():
        for k, (e, t) in enumerate(zip(res["erasures"], res["retrains"], strict=True)):
            er = e["erasure"]
            share = 100 * er["bytes_rewritten"] / e["dataset_before"]["size_bytes"]
            lines.append(
                f"| {backend} | {k} | {e['n_samples']} | {e['accepted_s']:.3f} | {e['completed_s']:.1f} | "
                + ", ".join(f"{j['model']} {j['method']} {j['run_s']:.1f}" for j in e["jobs"])
                + f" | {t['completed_s']:.1f} | "
                + ", ".join(f"{j['model']} {j['run_s']:.1f}" for j in t["jobs"])
                + f" | {e['completed_s'] / t['completed_s']:.2f} | {er['shards_rewritten']} of "
                f"{e['dataset_before']['n_shards']} | {er['bytes_rewritten']:,} of "
                f"{e['dataset_before']['size_bytes']:,} | {share:.1f}% |"
            )
    lines += ["", "Medians:", ""]
    for backend, res in result["backends"].items():
        es, ts = res["erasures"], res["retrains"]
        up, v1 = res["setup"], res["setup"]["version"]
        ratio = _med([e["completed_s"] / t["completed_s"] for e, t in zip(es, ts, strict=True)])
        lines.append(
            f"- {backend}: doing nothing {_med([e['accepted_s'] for e in es]):.3f} s; erasure "
            f"{_med([e['completed_s'] for e in es]):.1f} s; retraining "
            f"{_med([t['completed_s'] for t in ts]):.1f} s (erasure / retraining {ratio:.2f}); "
            f"{_med([e['erasure']['bytes_rewritten'] for e in es]):,.0f} bytes rewritten of "
            f"{es[0]['dataset_before']['size_bytes']:,}. Dataset upload ({up['upload_bytes']:,}-byte "
            f"`.npz`, {v1['n_samples']} samples → {v1['n_shards']} shards): {up['upload_s']:.1f} s."
        )
    methods = sorted(
        {j["method"] for r in result["backends"].values() for e in r["erasures"] for j in e["jobs"]}
    )
    erasures = [e for r in result["backends"].values() for e in r["erasures"]]
    job_share = sum(j["run_s"] for e in erasures for j in e["jobs"]) / sum(e["completed_s"] for e in erasures)
    lines += [
        "",
        "With the subject's 10 samples scattered, an erasure rewrites up to 10 of the shards: the "
        "storage written is the share of shards that held them, not the whole set (a subject whose "
        "samples are contiguous would touch 1 or 2). The erasure jobs ran "
        + ", ".join(f"`{m}`" for m in methods)
        + " (the retain-aware default where the training data is registered, on a retain sample of "
        f"at most 10,000 samples); their run time was {100 * job_share:.0f}% of the erasures' time "
        "(the rest: queueing, the two publishes, the dataset's new version, polling every "
        f"{int(POLL_S * 1000)} ms). These models generalise (eval accuracy "
        + " / ".join(f"{m['eval_accuracy']:.3f}" for m in meta["models"].values())
        + "): a subject's samples already look unseen, so the jobs have little to do, while "
        "retraining costs the same whatever is erased.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=None, help="default: both when reachable"
    )
    parser.add_argument("--reps", type=int, default=2, help="erasures (a new subject each) and retrainings")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--redis-db", type=int, default=9)
    output_args(parser, render="measure nothing: the section from this JSON")
    args = parser.parse_args(argv)
    if args.render is not None:
        rendered: dict[str, Any] = json.loads(args.render.read_text())
        write_section(args.results_md, "service-erasure", markdown(rendered))
        return rendered
    if args.backends is None:
        args.backends = ["embedded"] + (["postgres"] if postgres_available() else [])
    torch.set_num_threads(1)
    started = time.perf_counter()
    loadavg_start = os.getloadavg()[0]
    data = make_data(args.samples)
    models = train_models(data)
    backends = {b: run_backend(b, data, models, args.reps, args.redis_db) for b in args.backends}
    result = {
        "meta": {
            **run_meta("benchmarks.erasure", argv, started),
            "samples": args.samples,
            "reps": args.reps,
            **host_meta(loadavg_start),
            "models": {n: {k: v for k, v in m.items() if k != "checkpoint"} for n, m in models.items()},
        },
        "backends": backends,
    }
    save_json(args.out_dir, "service_erasure.json", result)
    write_section(args.results_md, "service-erasure", markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
