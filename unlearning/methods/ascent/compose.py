"""The objective a run minimises, composed from its resolved params: a forget term, plus the KL
anchor when the plan has one (the terms: ``objective.py``, ``confidence_matching.py``)."""

from __future__ import annotations

from unlearning.methods.ascent.confidence_matching import ConfidenceMatching
from unlearning.methods.ascent.objective import (
    NPO,
    Combined,
    KLAnchor,
    LossMatching,
    Objective,
    WeightedAscent,
)
from unlearning.methods.ascent.params import MatchSpace


def build_objective(
    name: str,
    *,
    npo_beta: float,
    anchor: bool,
    anchor_weight: float,
    anchor_batch_size: int,
    anchor_mixup: bool = False,
    anchor_copies: int = 0,
    match_on: MatchSpace = "loss",
) -> Objective:
    """The forget term ``name`` (``match_on`` resolved: what matching matches), plus the KL anchor
    when on."""
    forget: Objective
    if name == "npo":
        forget = NPO(npo_beta)
    elif name == "match":
        forget = ConfidenceMatching() if match_on == "confidence" else LossMatching()
    else:
        forget = WeightedAscent()
    if not anchor:
        return forget
    return Combined([forget, KLAnchor(anchor_weight, anchor_batch_size, anchor_mixup, anchor_copies)])
