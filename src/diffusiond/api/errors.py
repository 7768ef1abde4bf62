"""Rendering errors in each dialect's own shape, installed per router through a route class.

Every error reaches the client through `respond`: the dialect's renderer makes the body, and the
HTTP headers an error carries (Retry-After and RateLimit on a 429, Allow on a 405) are added here,
once for every dialect.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

import pydantic
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from diffusiond.domain.errors import DomainError, InvalidParams, RateLimited

log = logging.getLogger(__name__)
Renderer = Callable[[Request, DomainError], Response]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]

# The stable codes of the framework's own refusals (Starlette's and FastAPI's HTTPException).
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "permission_denied", 404: "not_found",
              405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
              415: "unsupported_media_type", 429: "rate_limited"}


class FrameworkError(DomainError):
    """A refusal by the framework (routing, body parsing), with the headers it came with."""

    def __init__(self, message: str, *, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, code=HTTP_CODES.get(status, "bad_request" if status < 500 else "server_error"))
        self.status = status
        self.headers = headers or {}


def from_http_exception(exc: HTTPException) -> FrameworkError:
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else HTTPStatus(exc.status_code).phrase
    return FrameworkError(detail, status=exc.status_code, headers=dict(exc.headers or {}))


def server_error(request: Request) -> DomainError:
    """The answer to an exception nobody expected: a defect, logged with the request's id."""
    log.exception("unhandled error: request %s, %s %s", request_id(request), request.method, request.url.path)
    err = DomainError("An unexpected server error occurred, please try again.", code="server_error")
    err.status = 500
    return err


def request_id(request: Request) -> str:
    """The id the edge gave this request (sent back as `x-request-id`, and in error bodies)."""
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else uuid.uuid4().hex


def error_headers(err: DomainError) -> dict[str, str]:
    """HTTP headers that go with an error, whatever the dialect.

    A 429 says when to retry (`Retry-After`, whole seconds, at least 1) and which limit it hit, in
    the fields of draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "burst";q=50;w=2` (the
    limit) and `RateLimit: "burst";r=0;t=1` (none left, `t` seconds until one is).
    """
    if isinstance(err, FrameworkError):
        return err.headers
    if isinstance(err, RateLimited):
        wait = max(1, math.ceil(err.retry_after))
        policy = f'"{err.policy}";q={err.quota}' + (f";w={math.ceil(err.window)}" if err.window else "")
        return {"Retry-After": str(wait), "RateLimit-Policy": policy, "RateLimit": f'"{err.policy}";r=0;t={wait}'}
    return {}


def respond(render: Renderer, request: Request, err: DomainError) -> Response:
    """`err` in the dialect's shape, with the headers it carries."""
    response = render(request, err)
    response.headers.update(error_headers(err))
    return response


def validation_to_domain(errors: list[Any], field_codes: dict[str, str]) -> DomainError:
    """A pydantic error list as one InvalidParams naming the first bad field."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = loc[0] if loc else ""
    where = ".".join(loc) or "body"
    return InvalidParams(f"{where}: {first.get('msg', 'invalid')}",
                         code=field_codes.get(field, "bad_request"), field=field or None)


def as_domain_error(exc: Exception, field_codes: dict[str, str]) -> DomainError | None:
    """The DomainError an expected exception stands for; None for a defect."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, RequestValidationError | pydantic.ValidationError):
        return validation_to_domain(list(exc.errors()), field_codes)
    if isinstance(exc, HTTPException):  # FastAPI's is a subclass: bad JSON, bad multipart, ...
        return from_http_exception(exc)
    return None


def dialect_route(render: Renderer, field_codes: dict[str, str] | None = None) -> type[APIRoute]:
    """An APIRoute class that turns every error raised under it into `render`'s shape."""
    codes = field_codes or {}

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def wrapped(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as e:
                    err = as_domain_error(e, codes)
                    return respond(render, request, err if err is not None else server_error(request))

            return wrapped

    return DialectRoute
