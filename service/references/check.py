"""The per-example membership test of one deletion job against the model's reference set.

Members are the job's forget samples found (by content key) in the data the references were
trained on, each scored against the references that did not train on it (⌈K/2⌉ of them);
non-members are the eval set's check half (the method never saw it, and no reference trained on
the eval set). Offline LiRA (``unlearning.membership``) gives the TPR at fixed FPRs of the
unlearned model, of the model before unlearning, and the **retrained level**: each reference in
turn as the target on the forget samples it never saw, against the others — what a model
retrained without those samples scores on this very test.
"""

from __future__ import annotations

from typing import Any

import torch
from safetensors.torch import load
from torch import nn

from service.context import ServiceContext
from service.db import session_scope
from service.jobs.inputs import JobInputs
from service.jobs.lifecycle import Claim
from service.references.logic import latest_set, newest_set
from service.references.retirement import retired_info
from unlearning import build_model, load_checkpoint
from unlearning.batching import resolve_device
from unlearning.membership import lira_test, match_keys, reference_confidences, retrained_level, sample_keys
from unlearning.samples import num_samples, take
from unlearning.types import Dataset

FPRS = (0.01, 0.05)


def membership_check(
    ctx: ServiceContext, claim: Claim, inputs: JobInputs, target: nn.Module, report: dict[str, Any]
) -> dict[str, Any]:
    """The job's ``lira`` entry: the test's figures, or ``{"skipped": why}``."""
    if ctx.settings.reference_models == 0:
        return {"skipped": "reference models are off on this service"}
    if inputs.eval is None:
        return {"skipped": "the version has no eval set: no non-members to compare with"}
    with session_scope(ctx.session_factory) as s:
        ref_job = latest_set(s, claim.model_id)
        stored = dict(ref_job.metrics or {}) if ref_job is not None else None
        ref_job_id = ref_job.id if ref_job is not None else None
        newest = newest_set(s, claim.model_id) if ref_job is None else None
        set_id = newest.id if newest is not None else None
        info = retired_info(newest) if newest is not None else None
    if stored is None and info is not None:
        return {
            "skipped": (
                f"model {claim.model_name}'s reference set (job {set_id}) was retired by an erasure"
                + (f" (job {info['job_id']})" if info.get("job_id") else "")
                + f" at {info.get('at')}: it was trained on samples erased since; build a new set "
                f"from the current data (POST /v1/models/{claim.model_name}/references)"
            ),
            "references_job": set_id,
            "references_retired": info,
        }
    if stored is None:
        return {"skipped": f"model {claim.model_name} has no reference models (POST .../references)"}
    blob = load(ctx.storage.read_bytes(stored["membership_key"]))
    keys, in_mask = blob["keys"], blob["in_mask"].bool()
    pos = match_keys(keys, sample_keys(inputs.forget))
    found = torch.nonzero(pos >= 0).flatten()
    member_mask = in_mask[:, pos[found]]
    # A sample every reference trained on (possible for K < 2 OUT draws) has nothing to compare with.
    usable = (~member_mask).any(0)
    n_forget = num_samples(inputs.forget)
    base = {
        "references_job": ref_job_id,
        "n_forget": n_forget,
        "n_forget_unmatched": n_forget - int(found.numel()),
    }
    if not bool(usable.any()):
        return {**base, "skipped": "none of the forget samples is in the reference models' training data"}
    members = take(inputs.forget, found[usable])
    member_mask = member_mask[:, usable]
    nonmembers = _check_half(inputs.eval, report)
    device = resolve_device(ctx.settings.device)
    references = [_load(ctx, inputs.architecture, key) for key in stored["checkpoints"]]
    ref_phi = torch.cat(
        [
            reference_confidences(references, members, device=device),
            reference_confidences(references, nonmembers, device=device),
        ],
        dim=1,
    )
    n_members = num_samples(members)
    mask = torch.cat(
        [member_mask, torch.zeros(len(references), num_samples(nonmembers), dtype=torch.bool)], 1
    )
    after = lira_test(target, members, nonmembers, ref_phi, in_masks=mask, fprs=FPRS, device=device)
    before = lira_test(inputs.model, members, nonmembers, ref_phi, in_masks=mask, fprs=FPRS, device=device)
    level = retrained_level(ref_phi, mask, n_members, FPRS)
    return {
        **base,
        **after.to_dict(),
        "n_forget_without_out_reference": int((~usable).sum()),
        "before": {"tpr_at_fpr": before.to_dict()["tpr_at_fpr"], "auc": before.auc},
        "retrained_tpr_at_fpr": level["tpr_at_fpr"],
        "retrained": level,
    }


def _check_half(eval_set: Dataset, report: dict[str, Any]) -> Dataset:
    split = report.get("eval_split")
    if split and split.get("check_indices"):
        return take(eval_set, torch.as_tensor(split["check_indices"], dtype=torch.long))
    return eval_set


def _load(ctx: ServiceContext, architecture: dict[str, Any], key: str) -> nn.Module:
    net = build_model(architecture)
    load_checkpoint(net, ctx.storage.read_bytes(key))
    return net.eval()
