"""JSON request bodies that Python's parser refuses for reasons other than syntax.

``json.loads`` raises ``RecursionError`` for a body nested thousands deep and a plain
``ValueError`` for an integer with more digits than ``sys.get_int_max_str_digits()`` (4,300):
neither is a ``JSONDecodeError``, so code that catches only that answered them with a 500.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from service.errors import json_error_detail, unprocessable


def loads(raw: str | bytes, *, what: str = "the body") -> Any:
    """``json.loads`` whose every parse failure is a 422 problem with a clear detail."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        detail = json_error_detail(exc, what) or f"{what} is not valid JSON"
        raise unprocessable(detail) from None


# Real configs nest a few levels (an HF config's sub-configs: 3 or 4). Far deeper ones are refused
# at the door: pydantic, copy.deepcopy and json.dumps all recurse, and fail at a few hundred.
MAX_NESTING = 32


def nesting_depth(value: Any, limit: int = MAX_NESTING) -> int:
    """How deep lists and dicts nest in ``value``, counted without recursion; stops at limit + 1."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
    return deepest


Parsed = TypeVar("Parsed", bound=BaseModel)


def parse_model(raw: str | bytes | Any, model: type[Parsed], *, prefix: str = "") -> Parsed:
    """A JSON body (bytes or text) or an already parsed value as ``model``; any failure is a 422
    problem naming the first bad field (under ``prefix``) and listing every error."""
    value = loads(raw, what=prefix or "the body") if isinstance(raw, str | bytes) else raw
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [
            {"loc": [*([prefix] if prefix else []), *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_input=False)
        ]
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"]) or prefix or "body"
        raise unprocessable(f"{where}: {first['msg']}", errors=errors) from None
