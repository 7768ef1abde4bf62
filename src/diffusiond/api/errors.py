"""Rendering errors in each dialect's own shape, installed per router through a route class."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from diffusiond.domain.errors import DomainError, InvalidParams

log = logging.getLogger(__name__)
Renderer = Callable[[Request, DomainError], Response]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def validation_to_domain(errors: list[Any], field_codes: dict[str, str]) -> DomainError:
    """A pydantic error list as one InvalidParams naming the first bad field."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = loc[0] if loc else ""
    where = ".".join(loc) or "body"
    return InvalidParams(f"{where}: {first.get('msg', 'invalid')}",
                         code=field_codes.get(field, "bad_request"), field=field or None)


def dialect_route(render: Renderer, field_codes: dict[str, str] | None = None) -> type[APIRoute]:
    """An APIRoute class that turns every error raised under it into `render`'s shape."""
    codes = field_codes or {}

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def wrapped(request: Request) -> Response:
                try:
                    return await handler(request)
                except DomainError as e:
                    return render(request, e)
                except (RequestValidationError, pydantic.ValidationError) as e:
                    return render(request, validation_to_domain(list(e.errors()), codes))
                except Exception:
                    log.exception("unhandled error on %s", request.url.path)
                    err = DomainError("An unexpected server error occurred, please try again.",
                                      code="server_error")
                    err.status = 500
                    return render(request, err)

            return wrapped

    return DialectRoute
