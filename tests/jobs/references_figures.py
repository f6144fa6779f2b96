"""Figures for docs/methods.md ("Reference models"): the service's per-example test on the data of
tests/jobs/test_references.py, method by method. Not a test; run it:

    .venv/bin/python -m tests.jobs.references_figures [--k 8] [--seeds 0 1 2]

The original memorises subjects user-3 and user-7 (20 samples with labels of their own); the forget
set is those 20 samples. K references are trained with the same recipe on balanced random halves;
each method's model is scored as the service scores a job (offline LiRA on the forget samples
against their OUT references, the eval set's check half as non-members), beside the model before
unlearning and the retrained level (each reference as the target on the samples it never saw).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from tests.jobs.test_references import ARCH, N_TRAIN, RECIPE, _data
from unlearning import build_model, load_checkpoint, unlearn
from unlearning.membership import balanced_in_masks, lira_test, reference_confidences, retrained_level
from unlearning.samples import take
from unlearning.training import train

METHODS: list[tuple[str, str, dict]] = [
    ("ga (service default)", "ga", {}),
    ("npo", "npo", {}),
    ("ga adaptive (old service default)", "ga", {"preset": "adaptive"}),
    ("neggrad_plus (retain-aware default)", "neggrad_plus", {}),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(2)
    d = _data()
    data = {"inputs": d["x"][:N_TRAIN], "labels": d["y"][:N_TRAIN]}
    ev = {"inputs": d["x"][N_TRAIN:], "labels": d["y"][N_TRAIN:]}
    forget_idx = torch.as_tensor(np.nonzero(np.isin(d["subjects"][:N_TRAIN], ["user-3", "user-7"]))[0])
    forget = take(data, forget_idx)
    keep = torch.ones(N_TRAIN, dtype=torch.bool)
    keep[forget_idx] = False
    retain = take(data, keep)
    original = build_model(ARCH)
    load_checkpoint(original, d["checkpoint"])
    recipe = {k: v for k, v in RECIPE.items() if k != "seed"}
    rows: dict[str, list[float]] = {}
    for seed in args.seeds:
        in_mask = balanced_in_masks(args.k, N_TRAIN, seed)
        refs = []
        for j in range(args.k):
            torch.manual_seed(1000 * seed + j)
            net = build_model(ARCH)
            train(net, take(data, in_mask[j]), **recipe, seed=1000 * seed + j, device="cpu")
            refs.append(net.eval())
        # Retraining without the forget set, as the gold standard next to the methods.
        torch.manual_seed(seed)
        retrained = build_model(ARCH)
        train(retrained, retain, **recipe, seed=seed, device="cpu")
        targets = {"do nothing": original, "retrain (exact)": retrained.eval()}
        for label, method, params in METHODS:
            res = unlearn(method, original, forget, params, eval=ev, retain=retain, seed=seed, device="cpu")
            targets[label] = res.model
        split = res.report["eval_split"]
        check = take(ev, torch.as_tensor(split["check_indices"]))
        members_mask = in_mask[:, forget_idx]
        mask = torch.cat(
            [members_mask, torch.zeros(args.k, len(split["check_indices"]), dtype=torch.bool)], 1
        )
        ref_phi = torch.cat([reference_confidences(refs, forget), reference_confidences(refs, check)], 1)
        level = retrained_level(ref_phi, mask, len(forget_idx))
        rows.setdefault("retrained level (references)", []).append(level["tpr_at_fpr"]["0.05"])
        for label, model in targets.items():
            r = lira_test(model, forget, check, ref_phi, in_masks=mask)
            rows.setdefault(label, []).append(r.tpr_at_fpr[0.05])
    print(f"LiRA TPR at 5% FPR, K = {args.k}, 20 forget samples, seeds {args.seeds}")
    for label, values in rows.items():
        per = " / ".join(f"{v:.2f}" for v in values)
        print(f"  {label:38s} mean {sum(values) / len(values):.3f}   ({per})")


if __name__ == "__main__":
    main()
