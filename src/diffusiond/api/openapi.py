"""What the OpenAPI document says about bodies and errors, for every dialect.

FastAPI documents a route's JSON body and its success answer by itself. The rest is declared here:
the error answers each operation really sends (with its dialect's error body), the bodies of routes
that read them themselves (multipart forms, raw image bytes), and, by `install`, the removal of the
422 FastAPI adds to every operation but this server never sends (a validation error is a 400 in the
dialect's shape).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

ERROR_DESCRIPTIONS = {
    400: "The request is invalid: a field, the body's encoding or size of a part, JSON or multipart syntax",
    401: "No valid API key (or, on a signed URL, no valid signature)",
    402: "The balance does not cover the request's price",
    403: "The key's role may not do this",
    404: "Not found, or not this tenant's",
    409: "The requestId was used with another body",
    413: "The body is larger than this route takes",
    429: "Too many requests (see Retry-After and the RateLimit fields), or too many queued jobs",
    500: "A defect: an unexpected error, logged with the x-request-id",
    504: "The synchronous wait ended first; the job was canceled and its credits released",
}
RATE_LIMIT_HEADERS = {
    "Retry-After": {"description": "Seconds to wait before retrying (at least 1)", "schema": {"type": "integer"}},
    "RateLimit-Policy": {"description": 'The limit hit, e.g. `"burst";q=50;w=2`', "schema": {"type": "string"}},
    "RateLimit": {"description": 'What is left of it, e.g. `"burst";r=0;t=1`', "schema": {"type": "string"}},
}
BINARY = {"type": "string", "format": "binary"}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")


def error_responses(model: type[BaseModel], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for error answers in the dialect's error `model`."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {"model": model, "description": ERROR_DESCRIPTIONS[status]}
        if status == 429:
            out[status]["headers"] = RATE_LIMIT_HEADERS
    return out


def inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its `$defs` references inlined (request bodies declared by hand)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a JSON body that the route parses itself (FastAPI would not document it)."""
    schema = inline(model.model_json_schema(by_alias=True))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def multipart_body(model: type[BaseModel], files: dict[str, bool], *,
                   flatten: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """`openapi_extra` for a multipart/form-data body: `model`'s fields plus file fields (name ->
    required). `flatten` spells a list field the way forms carry it: `text_prompts` -> fields
    `text_prompts[0][text]` and `text_prompts[0][weight]` (more prompts take indices 1, 2, ...)."""
    schema = inline(model.model_json_schema())
    props: dict[str, Any] = schema.get("properties", {})
    required: list[str] = list(schema.get("required", []))
    for name, keys in (flatten or {}).items():
        item = props.pop(name)["items"]
        for key in keys:
            props[f"{name}[0][{key}]"] = item["properties"][key]
            if key in item.get("required", []) and name in required:
                required.append(f"{name}[0][{key}]")
        required = [r for r in required if r != name]
    for name, needed in files.items():
        props[name] = dict(BINARY)
        if needed:
            required.append(name)
    body = {"type": "object", "properties": props, "required": required}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}}}


def raw_body(*media_types: str) -> dict[str, Any]:
    """`openapi_extra` for a body of raw bytes (an image PUT to a signed URL)."""
    content = {media: {"schema": dict(BINARY)} for media in media_types}
    return {"requestBody": {"required": True, "content": content}}


def optional(extra: dict[str, Any]) -> dict[str, Any]:
    """`extra`'s request body, marked optional (the route takes no body as its defaults)."""
    return {**extra, "requestBody": {**extra["requestBody"], "required": False}}


def links(parameter: str, pointer: str, *operation_ids: str) -> dict[str, Any]:
    """OpenAPI links: the id at `pointer` in this answer's body is the `parameter` of `operation_ids`
    (generated clients and the fuzzer's stateful phase follow them)."""
    value = f"$response.body#/{pointer}"
    return {op[0].upper() + op[1:]: {"operationId": op, "parameters": {parameter: value}} for op in operation_ids}


def _framework_422(responses: dict[str, Any]) -> bool:
    """Is the operation's 422 FastAPI's validation answer (never sent), not one a dialect declared?"""
    schema = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
    return str(schema.get("$ref", "")).endswith("/HTTPValidationError")


def install(app: FastAPI) -> None:
    """Make `app.openapi()` drop the never-sent 422 answers and their schemas (a dialect's own 422
    answers, declared with its error body, stay)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            for item in doc.get("paths", {}).values():
                for operation in item.values():
                    if isinstance(operation, dict) and _framework_422(operation.get("responses", {})):
                        operation["responses"].pop("422")
            schemas = doc.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
