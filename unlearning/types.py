"""Small shared types of the engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from unlearning.report import UnlearnReport

Task = Literal["classification", "causal-lm"]

# A data set is a mapping of named tensors: {"inputs", "labels"} for classification,
# {"input_ids"} for a causal LM. Plain dicts keep the engine free of wrapper classes.
Dataset = Mapping[str, torch.Tensor]

# progress(stage, fraction in [0, 1]); called between steps, never inside a kernel.
ProgressFn = Callable[[str, float], None]
CancelFn = Callable[[], bool]


@dataclass
class UnlearnResult:
    """What ``unlearn()`` returns: a new model (the input one is untouched) and its report."""

    model: nn.Module
    report: UnlearnReport

    @property
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
