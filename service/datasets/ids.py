"""Sample ids as callers give them (``int`` or ``str``) and as the index stores them (text)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from service.datasets.states import SampleIdKind
from service.errors import Problem, unprocessable

SampleId = str | int
# How many ids a 422 about ids a version does not hold lists (``missing_sample_ids``).
SHOWN_MISSING = 100

_INT = re.compile(r"-?[0-9]{1,19}")
_INT64 = (-(2**63), 2**63 - 1)


def _text(kind: SampleIdKind, value: SampleId) -> str | None:
    """The index's text of ``value`` in a version with ids of ``kind``; None if it cannot be one."""
    if isinstance(value, bool):
        return None
    if kind is SampleIdKind.INT:
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and _INT.fullmatch(value):
            number = int(value)  # "007" is sample 7, as it would be in an int64 array
        else:
            return None
        return str(number) if _INT64[0] <= number <= _INT64[1] else None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) and value else None


def to_texts(kind: SampleIdKind | str, values: Iterable[SampleId], *, strict: bool = True) -> list[str]:
    """Distinct ids as index text, in the order given. ``strict``: a value that cannot be an id of
    this version (a word where ids are integers) is a 422; otherwise it is skipped (it matches nothing)."""
    kind = SampleIdKind(kind)
    out: dict[str, None] = {}
    for value in values:
        text = _text(kind, value)
        if text is None:
            if strict:
                what = "integers" if kind is SampleIdKind.INT else "non-empty strings"
                raise unprocessable(f"sample ids of this dataset version are {what}; got {value!r}")
            continue
        out[text] = None
    return list(out)


def from_text(kind: SampleIdKind | str, text: str) -> SampleId:
    return int(text) if kind == SampleIdKind.INT else text


def not_held(kind: SampleIdKind | str, missing: list[str], version: int, of: str = "this dataset") -> Problem:
    """The 422 for ids (index text) that version ``version`` of ``of`` does not hold: the first
    ones listed (``missing_sample_ids``), all of them counted (``n_missing``)."""
    shown = [from_text(kind, t) for t in missing[:SHOWN_MISSING]]
    return unprocessable(
        f"{len(missing)} sample id(s) are not in version {version} of {of}: "
        f"{', '.join(map(repr, shown[:10]))}{' ...' if len(missing) > 10 else ''}",
        missing_sample_ids=shown,
        n_missing=len(missing),
    )
