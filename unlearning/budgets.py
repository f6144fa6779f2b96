"""Memory budgets: how many samples one forward pass, and how many per-sample gradient rows, may hold.

Read at call time (``budgets.MAX_...``), so that a test or a deployment can lower them in one place.
"""

from __future__ import annotations

from torch import nn

from unlearning.types import Dataset

# Bound on the logits of one batched forward pass over a data set (elements; 512 MiB in float32).
# A causal LM's logits are [B, T, V]: with V = 50k and T = 128 a fixed 1024 samples would be ~26 GB,
# so batches over data sets shrink to fit (see ``batch_size_for``). A classifier's [B, C] logits stay
# far below it (1024 samples fit up to C = 131072), so its batches are what the caller asked for.
MAX_LOGIT_ELEMENTS = 1 << 27

# Bounds the size of materialised per-sample gradients (elements, ~256 MiB in float32): the causal-LM
# Fisher chunk of the closed form, each torch.func chunk [c, P] (a tied GPT-2-size head has
# P ≈ 38M, so 64 rows would be ~10 GB) and the cache of rows kept between the two influence passes.
MAX_CHUNK_ELEMENTS = 1 << 26


def output_size(model: nn.Module) -> int | None:
    """Size of the model output's last dimension (classes, or the vocabulary), read from its layers.

    No forward pass: the ``head`` attribute the architectures attach (built-ins and Hugging Face),
    else HF's output embeddings, else the last ``nn.Linear``; a causal LM whose head is not a linear
    layer (logits from the embedding matrix) is covered by the largest ``nn.Embedding``. The larger
    of the last two is taken, so an unusual layout errs towards smaller batches. None if unknown.
    """
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return int(head.out_features)
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out):
        try:
            out = get_out()
        except Exception:  # an unusual model: fall back to scanning its layers
            out = None
        if isinstance(out, nn.Linear):
            return int(out.out_features)
    sizes = [int(m.out_features) for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    sizes += [int(m.num_embeddings) for m in model.modules() if isinstance(m, nn.Embedding)]
    return max(sizes) if sizes else None


def logit_elements_per_sample(data: Dataset, num_outputs: int) -> int:
    """Logits elements one sample produces: T·V for a causal LM (``input_ids`` [N, T]), else C."""
    ids = data.get("input_ids")
    length = int(ids.shape[1]) if ids is not None and ids.dim() >= 2 else 1
    return max(1, length * int(num_outputs))


def batch_size_for(data: Dataset, requested: int, num_outputs: int | None) -> int:
    """``requested`` samples per forward pass, fewer where their logits would pass ``MAX_LOGIT_ELEMENTS``.

    B = max(1, min(requested, MAX_LOGIT_ELEMENTS // (T·V))) for a causal LM, // C for a classifier;
    ``num_outputs`` None (unknown output size) leaves ``requested`` as it is.
    """
    if requested < 1:
        raise ValueError(f"batch size must be at least 1, got {requested}")
    if num_outputs is None:
        return requested
    return max(1, min(requested, MAX_LOGIT_ELEMENTS // logit_elements_per_sample(data, num_outputs)))


def rows_per_chunk(row_elements: int) -> int:
    """How many gradient rows of ``row_elements`` each fit in ``MAX_CHUNK_ELEMENTS`` (at least 1)."""
    return max(1, MAX_CHUNK_ELEMENTS // max(1, row_elements))


def fits_chunk_budget(elements: int) -> bool:
    return elements <= MAX_CHUNK_ELEMENTS
