"""What every AWS-extension route shares: the two error shapes, the route class, body parsing, the
OpenAPI declarations, and the dialect's services built for a request.

`/inference/*` was a FastAPI app behind API Gateway: errors are `{"detail": ...}` with CORS headers.
`/checkpoint(s)`, `/model(s)`, `/train(s)` and `/dataset(s)` were Lambdas whose dict became the
body: errors carry `statusCode` in the body, equal here to the HTTP status.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pydantic
from fastapi import Request, Response
from fastapi.responses import JSONResponse

from diffusiond.api.bodies import read_capped
from diffusiond.api.edge import Dialect
from diffusiond.api.errors import dialect_route
from diffusiond.api.esd.catalog import Catalog
from diffusiond.api.esd.schemas import InferenceError, LambdaError
from diffusiond.api.esd.training import Trainings
from diffusiond.api.openapi import error_responses
from diffusiond.config import Settings
from diffusiond.domain.errors import DomainError, InvalidParams
from diffusiond.services import Services

M = TypeVar("M", bound=pydantic.BaseModel)
MAX_BODY = 1024 * 1024
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Allow-Methods": "OPTIONS,POST,GET"}
_INFERENCE = re.compile(r"^/(api/)?inference(/|$)")


def is_inference(request: Request) -> bool:
    services: Services = request.app.state.services
    path = request.url.path.removeprefix(services.settings.esd_prefix)
    return _INFERENCE.match(path) is not None


def render_error(request: Request, err: DomainError) -> Response:
    if is_inference(request):
        return JSONResponse(InferenceError(detail=err.message).model_dump(), status_code=err.status, headers=CORS)
    body = LambdaError(statusCode=err.status, error=err.message, errorMsg=err.message)
    return JSONResponse(body.model_dump(), status_code=err.status)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class EsdRoute(dialect_route(render_error)):  # type: ignore[misc]
    """Errors in the dialect's shapes, and API Gateway's CORS headers on every `/inference` answer."""

    def get_route_handler(self) -> Handler:
        handler: Handler = super().get_route_handler()

        async def wrapped(request: Request) -> Response:
            response = await handler(request)
            if is_inference(request):
                response.headers.update(CORS)
            return response

        return wrapped


# Every operation may answer these (the edge's refusals, a defect); routes add their own.
ALWAYS = (400, 401, 413, 429, 500)


def inference_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(InferenceError, *sorted({*ALWAYS, *statuses}))


def lambda_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(LambdaError, *sorted({*ALWAYS, *statuses}))


def dialect(settings: Settings) -> Dialect:
    """The edge's view of the dialect: its paths, under the configured prefix, and its error shapes."""
    return Dialect("aws extension", (settings.esd_prefix,), render_error)


async def parse(request: Request, model: type[M]) -> M:
    """The JSON body as `model`; any problem is one 400 naming the field."""
    body = await read_capped(request, MAX_BODY, "body")
    try:
        raw = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise InvalidParams("body: not valid JSON") from None
    if not isinstance(raw, dict):
        raise InvalidParams("body: a JSON object is required")
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidParams(f"{where}: {first.get('msg', 'invalid')}", field=where) from None


def catalog(services: Services) -> Catalog:
    return Catalog(services.db, services.blobs, services.direct_uploads, services.models, services.settings)


def trainings(services: Services) -> Trainings:
    return Trainings(services.db, services.blobs, services.direct_uploads, services.datasets, services.uploads,
                     catalog(services), services.jobs, services.settings)
