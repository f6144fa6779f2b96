"""The OpenAPI document, made to say what the service really answers (``install_openapi``).

FastAPI knows only what the route signatures say: a 422 with its own ``HTTPValidationError``
body, and no body at all for routes that read the raw request. What the service answers is
more: every error is RFC 9457 ``application/problem+json`` (service/errors.py); a missing or
bad key is 401 and a missing scope 403 (service/deps.py); another tenant's object is 404; a body
past the size limit is 413 (service/ops/bodylimit.py); an unknown query parameter is 422 on
every route (service/pagination.py); an unexpected failure is 500. ``complete`` adds those to
every operation they apply to, reading what the generated document already says (security,
path parameters, a request body), so a new route is documented without anyone remembering to.
Routes declare their own specifics (409, 410, 415, 416, 429, 503) with ``responses=``, and the
bodies they parse themselves with ``openapi_extra=request_body(...)``. Examples come from
service/openapi_examples.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from service import openapi_examples as examples
from service.errors import PROBLEM_JSON, status_title

_SCHEMAS = "#/components/schemas/"
PROBLEM_REF = {"$ref": _SCHEMAS + "Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details. Answers may add members (e.g. `errors`, `required_scope`).",
    "type": "object",
    "properties": {
        "type": {"type": "string", "description": "a URI naming the problem type", "default": "about:blank"},
        "title": {"type": "string", "description": "the status's short summary"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "what went wrong, for a person to read"},
        "errors": {
            "type": "array",
            "description": "422: each invalid part of the request",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "required": ["type", "title", "status"],
    "additionalProperties": True,
}

# What each status means when the route says nothing more specific.
_GENERIC = {
    400: "The multipart body could not be parsed",
    401: "No API key, or an invalid or revoked one (`WWW-Authenticate: Bearer`)",
    403: "The API key lacks the scope this operation needs",
    404: "Nothing of that name or id in the caller's tenant (another tenant's objects are not found either)",
    409: "Conflict with the current state",
    413: "The request body is larger than the service accepts (`UNLEARN_MAX_BODY_BYTES`)",
    422: "The request does not validate: an unknown query parameter, a malformed or out-of-range value; "
    "`errors` lists each",
    429: "The tenant's backlog of samples waiting to be forgotten is full; retry after `Retry-After` seconds",
    500: "An unexpected error; the service's log has the details, the answer has none",
    503: "A dependency is not reachable, or the service is starting",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
}
# FastAPI's own descriptions, replaced by ours.
_FASTAPI_DESCRIPTIONS = {"Validation Error", "Successful Response"}

# Query parameters that name an object: an unknown one is 404, as in a path (service/listing.py).
_NAMING_QUERY = {"model", "dataset"}

_JOB_EVENT = {
    "title": "JobEvent",
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["progress", "end", "timeout"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": 'progress: the job, as GET /v1/jobs/{job_id}; end, timeout: `{"status"}`',
        },
    },
    "required": ["event", "data"],
}

# Specifics of the job routes, as their decorators' ``responses=`` would say them; they live here
# while service/jobs (the job domain's own work) is being changed by others.
_ROUTE_RESPONSES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/jobs/{job_id}/cancel"): {"409": {"description": "the job already finished"}},
    ("GET", "/v1/jobs/{job_id}/events"): {
        "200": {
            "description": "Server-Sent Events: `progress` while the job runs, `end` when it ends",
            # OpenAPI 3.1: the schema of a text/event-stream describes one event.
            "content": {"text/event-stream": {"schema": _JOB_EVENT}},
        }
    },
}

# The multipart form of POST /v1/models/{name}/deletion-requests (parsed in service/deletions/routes.py).
DELETION_REQUEST_FORM: dict[str, Any] = {
    "title": "DeletionRequestForm",
    "type": "object",
    "required": ["forget_set"],
    "properties": {
        "forget_set": {
            "type": "string",
            "format": "binary",
            "description": "the forget samples: safetensors or .npz (never a pickle), tensors named as in "
            "the JSON form's `samples`",
        },
        "subject": {"type": "string", "maxLength": 400, "description": "the data subject's reference"},
        "method": {"type": "string", "maxLength": 64, "description": "`imu` (default), `ga`, ..."},
        "params": {"type": "string", "description": "a JSON object: the method's params"},
        "policy": {"type": "string", "description": "a JSON object: acceptance-policy overrides"},
        "base_version": {"type": "integer", "minimum": 1, "description": "default: the latest version"},
    },
    "additionalProperties": False,
}

# Pydantic models that routes reading their own body name in ``request_body``: their schemas
# are added to the components, where FastAPI would have put them had it parsed the body.
_BODY_MODELS: dict[str, type[BaseModel]] = {}


def request_body(
    json_model: type[BaseModel] | None = None,
    *,
    form: dict[str, Any] | None = None,
    description: str = "",
    required: bool = True,
) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses its body itself: the JSON form (a pydantic model),
    the multipart form (a JSON schema), or both."""
    content: dict[str, Any] = {}
    if json_model is not None:
        _BODY_MODELS[json_model.__name__] = json_model
        content["application/json"] = {"schema": {"$ref": _SCHEMAS + json_model.__name__}}
    if form is not None:
        files = [name for name, prop in form["properties"].items() if prop.get("format") == "binary"]
        content["multipart/form-data"] = {
            "schema": form,
            "encoding": {name: {"contentType": "application/octet-stream"} for name in files},
        }
    body: dict[str, Any] = {"required": required, "content": content}
    if description:
        body["description"] = description
    return {"requestBody": body}


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document as ``app.openapi()`` (and so at /openapi.json and /docs)."""
    source: dict[str, Any] | None = None
    completed: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        nonlocal source, completed
        generated = FastAPI.openapi(app)  # FastAPI's cache: regenerated only when routes change
        if generated is not source:
            completed = complete(copy.deepcopy(generated))
            source = generated
        return completed

    app.openapi = openapi  # type: ignore[method-assign]


def complete(spec: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    _add_body_models(schemas)
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            if isinstance(operation, dict) and "responses" in operation:
                _complete_operation(method.upper(), path, operation, schemas)
    _drop_unused(spec, ("HTTPValidationError", "ValidationError"))
    # A copy through JSON: no dict of this module's constants is shared with (and mutable by) a
    # reader of the document, and anything that would not serialise fails here, not at /openapi.json.
    completed: dict[str, Any] = json.loads(json.dumps(spec))
    return completed


def _add_body_models(schemas: dict[str, Any]) -> None:
    for name, model in _BODY_MODELS.items():
        schema = model.model_json_schema(ref_template=_SCHEMAS + "{model}", mode="validation")
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(def_name, definition)
        schemas.setdefault(name, schema)


def _complete_operation(method: str, path: str, operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    for status, extra in _ROUTE_RESPONSES.get((method, path), {}).items():
        responses.setdefault(status, {}).update(copy.deepcopy(extra))
    for code in _standard_statuses(operation):
        responses.setdefault(str(code), {})
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400:
            _as_problem(int(status), response, path)
        elif status.isdigit():
            _success_example(method, path, response, schemas)
    body = operation.get("requestBody")
    if body is not None:
        for media_type, media in body.get("content", {}).items():
            _request_example(method, path, media_type, media, schemas)
    for parameter in operation.get("parameters", []):
        if "example" not in parameter and "examples" not in parameter:
            schema = parameter.get("schema", {})
            value = examples.parameter_example(path, parameter["name"])
            if value is None or not examples.allowed(value, schema, schemas):
                value = examples.sample(schema, schemas)
            parameter["example"] = value


def _standard_statuses(operation: dict[str, Any]) -> list[int]:
    statuses = [422, 500]  # unknown query parameters are refused everywhere; anything may fail
    if operation.get("security"):
        statuses += [401, 403]
    parameters = operation.get("parameters", [])
    if any(
        p.get("in") == "path" or (p.get("in") == "query" and p["name"] in _NAMING_QUERY) for p in parameters
    ):
        statuses.append(404)
    if "requestBody" in operation:
        statuses.append(413)
        if "multipart/form-data" in operation["requestBody"].get("content", {}):
            statuses.append(400)  # Starlette's answer to a body that is not valid multipart
    return statuses


def _as_problem(status: int, response: dict[str, Any], path: str) -> None:
    if not response.get("description") or response["description"] in _FASTAPI_DESCRIPTIONS:
        response["description"] = _GENERIC.get(status, status_title(status))
    content = response.get("content", {})
    media = content.get(PROBLEM_JSON, {})
    media.setdefault("schema", PROBLEM_REF)
    media.setdefault("example", examples.problem(status, response["description"], path))
    # Every error is problem+json: FastAPI's application/json HTTPValidationError was never sent.
    response["content"] = {PROBLEM_JSON: media}
    if status in _HEADERS:
        response.setdefault("headers", {}).update(_HEADERS[status])


def _success_example(method: str, path: str, response: dict[str, Any], schemas: dict[str, Any]) -> None:
    if response.get("description") in _FASTAPI_DESCRIPTIONS:
        response["description"] = "Success"
    for media_type, media in response.get("content", {}).items():
        if "example" in media or "examples" in media:
            continue
        value = examples.OPERATIONS.get((method, path, media_type))
        if value is None and "schema" in media:
            value = examples.sample(media["schema"], schemas)
        if value is not None and media_type != "application/octet-stream":
            media["example"] = value


def _request_example(
    method: str, path: str, media_type: str, media: dict[str, Any], schemas: dict[str, Any]
) -> None:
    if "example" in media or "examples" in media:
        return
    ref = media.get("schema", {}).get("$ref", "")
    named = examples.NAMED_REQUESTS.get(ref.rsplit("/", 1)[-1])
    if named is not None:
        media["examples"] = named
        return
    value = examples.OPERATIONS.get((method, path, media_type))
    if value is None:
        value = examples.sample(media.get("schema", {}), schemas)
    media["example"] = value


def _drop_unused(spec: dict[str, Any], names: tuple[str, ...]) -> None:
    schemas = spec["components"]["schemas"]
    for name in names:
        if name not in schemas:
            continue
        rest = {k: v for k, v in schemas.items() if k != name}
        text = json.dumps({"paths": spec.get("paths", {}), "schemas": rest})
        if f'"{_SCHEMAS}{name}"' not in text:
            del schemas[name]
