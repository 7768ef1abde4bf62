"""`/v1/custom` routes (seed 002): parse, authorise, call the custom-model service, render.

Bodies are read here, capped, and parsed strictly (`translate.parse`); the service runs in a worker
thread, so database, blob and image work never blocks the event loop. Every error, whatever raised
it, leaves as `{"error": {"code", "message"}}` (`render_error`), and every answer a route can give is
declared in the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from diffusiond.api.bodies import read_capped
from diffusiond.api.custom import schemas as w
from diffusiond.api.custom import translate as t
from diffusiond.api.custom.service import CustomModelService
from diffusiond.api.deps import PrincipalDep, ServicesDep
from diffusiond.api.edge import Dialect, Upload
from diffusiond.api.errors import dialect_route
from diffusiond.api.openapi import RATE_LIMIT_HEADERS, json_request_body
from diffusiond.domain.errors import DomainError, InvalidParams
from diffusiond.services import Services

MAX_JSON_BYTES = 1024 * 1024
# The status of a core code where this API's differs from the core's.
STATUS_BY_CODE = {"invalid_mime_type": 415, "invalid_image_dimensions": 422, "job_finished": 409}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "application/octet-stream")
ERROR_DESCRIPTIONS = {
    400: "The request is invalid: the JSON, a field (named in the message), or an empty upload",
    401: "No valid API key",
    402: "The balance does not cover the price of the training or prediction",
    404: "Not found: it does not exist, is soft-deleted, or is not this key's",
    409: "Not possible in the current state: too few or too many training images, a training not succeeded yet "
         "or already finished",
    413: "The body is larger than this route takes (an image: 10 MiB; any other body: 1 MiB)",
    415: "The bytes are not a PNG, JPEG or WebP image",
    422: "The image is too large in pixels (over 4096 a side)",
    429: "Too many requests, or too many queued jobs",
    500: "An unexpected server error",
    503: "The base model for trainings is not installed",
}


def render_error(request: Request, err: DomainError) -> Response:
    body = w.CustomError(error=w.ErrorInfo(code=err.code, message=err.message))
    return JSONResponse(body.model_dump(), status_code=STATUS_BY_CODE.get(err.code, err.status))


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for error answers."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {"model": w.CustomError, "description": ERROR_DESCRIPTIONS[status]}
        if status == 429:
            out[status]["headers"] = RATE_LIMIT_HEADERS
    return out


def raw_image_body() -> dict[str, Any]:
    schema = {"type": "string", "format": "binary"}
    content = {media: {"schema": schema} for media in IMAGE_TYPES}
    return {"requestBody": {"required": True, "description": "Raw binary image data (PNG, JPEG or WebP, at most "
                            "10 MiB), checked by its content", "content": content}}


router = APIRouter(prefix="/v1/custom", tags=["custom models"], route_class=dialect_route(render_error, t.FIELD_CODES),
                   responses=errors(400, 401, 413, 429, 500))

# The edge (api/edge.py) answers this prefix in this shape, and bounds the two upload routes as raw bytes.
DIALECT = Dialect("custom", ("/v1/custom",), render_error, uploads=(
    Upload("POST", "/v1/custom/models/{modelId}/data", raw=True),
    Upload("PUT", "/v1/custom/models/{modelId}/data/{dataId}", raw=True),
))

ModelId = Annotated[str, Path(alias="modelId", description="Unique identifier of the model")]
DataId = Annotated[str, Path(alias="dataId", description="Unique identifier of the data item")]
TrainingId = Annotated[str, Path(alias="trainingId", description="Unique identifier of the training job")]
PredictionId = Annotated[str, Path(alias="predictionId", description="Unique identifier of the prediction")]
NO_CONTENT: dict[int | str, dict[str, Any]] = {204: {"description": "Done; no body"}}


def service(services: Services) -> CustomModelService:
    return CustomModelService(services)


async def json_body(request: Request, model: type[t.M]) -> t.M:
    return t.parse(await read_capped(request, MAX_JSON_BYTES, "body"), model)


async def read_image(request: Request, services: Services) -> bytes:
    """The raw image bytes of an upload; what they are is decided by the bytes, not by the headers."""
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        raise InvalidParams("send the raw image bytes as the body (curl --data-binary @picture.png), not a "
                            "multipart form", code="invalid_mime_type")
    data = await read_capped(request, services.settings.max_upload_bytes, "image")
    if not data:
        raise InvalidParams("the body is empty: send the image bytes (PNG, JPEG or WebP)", code="missing_image")
    return data


# ---- models ----------------------------------------------------------------------------------------


@router.post("/models", response_model=w.ModelPublic, response_model_exclude_none=True, responses=errors(413),
             openapi_extra=json_request_body(w.ModelCreate))
async def create_model(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.ModelPublic:
    """Create a custom model that can be trained on your pictures."""
    body = await json_body(request, w.ModelCreate)
    model = await run_in_threadpool(service(services).create_model, principal.tenant_id, body.displayName,
                                    body.customModelType)
    return t.model_public(model)


@router.get("/models/{modelId}", response_model=w.ModelPublic, response_model_exclude_none=True, responses=errors(404))
def get_model(model_id: ModelId, principal: PrincipalDep, services: ServicesDep) -> w.ModelPublic:
    return t.model_public(service(services).model(principal.tenant_id, model_id))


@router.patch("/models/{modelId}", response_model=w.ModelPublic, response_model_exclude_none=True,
              responses=errors(404, 413),
              openapi_extra=json_request_body(w.ModelRename))
async def rename_model(model_id: ModelId, request: Request, principal: PrincipalDep,
                       services: ServicesDep) -> w.ModelPublic:
    body = await json_body(request, w.ModelRename)
    model = await run_in_threadpool(service(services).rename, principal.tenant_id, model_id, body.updatedDisplayName)
    return t.model_public(model)


@router.delete("/models/{modelId}", status_code=204, response_class=Response, responses={**NO_CONTENT, **errors(404)})
def delete_model(model_id: ModelId, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Soft delete: the model's history, trainings and predictions are kept; it disappears from lookups."""
    service(services).delete_model(principal.tenant_id, model_id)
    return Response(status_code=204)


# ---- training images -------------------------------------------------------------------------------


@router.post("/models/{modelId}/data", response_model=w.DataPublic, response_model_exclude_none=True,
             responses=errors(404, 409, 413, 415, 422),
             openapi_extra=raw_image_body())
async def upload_data(model_id: ModelId, request: Request, principal: PrincipalDep,
                      services: ServicesDep) -> w.DataPublic:
    """Upload one training image: the raw bytes of a PNG, JPEG or WebP, at most 10 MiB."""
    data = await read_image(request, services)
    item = await run_in_threadpool(service(services).add_image, principal.tenant_id, model_id, data, None)
    return t.data_public(item)


@router.get("/models/{modelId}/data", response_model=list[w.DataPublic], response_model_exclude_none=True,
            responses=errors(404))
def list_data(model_id: ModelId, principal: PrincipalDep, services: ServicesDep) -> list[w.DataPublic]:
    return [t.data_public(i) for i in service(services).images(principal.tenant_id, model_id)]


@router.get("/models/{modelId}/data/{dataId}", response_model=w.DataPublic, response_model_exclude_none=True,
            responses=errors(404))
def get_data(model_id: ModelId, data_id: DataId, principal: PrincipalDep, services: ServicesDep) -> w.DataPublic:
    """The training image, with `dataUrl`: a signed URL of the stored picture that expires."""
    item = service(services).image(principal.tenant_id, model_id, data_id)
    return t.data_public(item, services.signer, principal.tenant_id, services.settings.url_expiry_seconds)


@router.put("/models/{modelId}/data/{dataId}", response_model=w.DataPublic, response_model_exclude_none=True,
            responses=errors(404, 413, 415, 422),
            openapi_extra=raw_image_body())
async def replace_data(model_id: ModelId, data_id: DataId, request: Request, principal: PrincipalDep,
                       services: ServicesDep) -> w.DataPublic:
    """Replace a training image's picture (same id); trainings already started keep the old one."""
    data = await read_image(request, services)
    item = await run_in_threadpool(service(services).replace_image, principal.tenant_id, model_id, data_id, data,
                                   None)
    return t.data_public(item)


@router.delete("/models/{modelId}/data/{dataId}", status_code=204, response_class=Response,
               responses={**NO_CONTENT, **errors(404)})
def delete_data(model_id: ModelId, data_id: DataId, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Permanently remove a training image."""
    service(services).delete_image(principal.tenant_id, model_id, data_id)
    return Response(status_code=204)


# ---- trainings -------------------------------------------------------------------------------------


@router.post("/models/{modelId}/trainings", response_model=w.TrainingCreated, response_model_exclude_none=True,
             responses=errors(402, 404, 409, 413, 503), openapi_extra=json_request_body(w.TrainingCreate))
async def start_training(model_id: ModelId, request: Request, principal: PrincipalDep,
                         services: ServicesDep) -> w.TrainingCreated:
    """Train the model on its current training images; the answer names the training's trigger word."""
    body = await json_body(request, w.TrainingCreate)
    job = await run_in_threadpool(service(services).start_training, principal.tenant_id, model_id, body)
    return w.TrainingCreated(trainingId=job.id, status=t.STATUS_WORDS[job.status],
                             triggerWord=t.train_spec(job).trigger_word)


@router.get("/models/{modelId}/trainings", response_model=list[w.TrainingPublic], response_model_exclude_none=True,
            responses=errors(404))
def list_trainings(model_id: ModelId, principal: PrincipalDep, services: ServicesDep) -> list[w.TrainingPublic]:
    """The model's trainings, newest first (soft-deleted ones left out)."""
    return [t.training_public(j) for j in service(services).trainings(principal.tenant_id, model_id)]


@router.get("/models/{modelId}/trainings/{trainingId}", response_model=w.TrainingPublic,
            response_model_exclude_none=True, responses=errors(404))
def get_training(model_id: ModelId, training_id: TrainingId, principal: PrincipalDep,
                 services: ServicesDep) -> w.TrainingPublic:
    """Status, progress and the loss so far."""
    return t.training_public(service(services).training(principal.tenant_id, model_id, training_id))


@router.post("/models/{modelId}/trainings/{trainingId}/cancel", response_model=w.TrainingPublic,
             response_model_exclude_none=True,
             responses=errors(404, 409))
def cancel_training(model_id: ModelId, training_id: TrainingId, principal: PrincipalDep,
                    services: ServicesDep) -> w.TrainingPublic:
    """A queued training stops at once, a running one between two steps; no model is made and its
    credits are released. A finished training cannot be canceled (409)."""
    return t.training_public(service(services).cancel_training(principal.tenant_id, model_id, training_id))


@router.delete("/models/{modelId}/trainings/{trainingId}", status_code=204, response_class=Response,
               responses={**NO_CONTENT, **errors(404)})
def delete_training(model_id: ModelId, training_id: TrainingId, principal: PrincipalDep,
                    services: ServicesDep) -> Response:
    """Soft delete, without canceling: a running training runs on, but its model can no longer be used."""
    service(services).delete_training(principal.tenant_id, model_id, training_id)
    return Response(status_code=204)


# ---- predictions -----------------------------------------------------------------------------------


@router.post("/predictions", response_model=w.PredictionCreated, response_model_exclude_none=True,
             responses=errors(402, 404, 409, 413, 503),
             openapi_extra=json_request_body(w.PredictionCreate))
async def create_prediction(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.PredictionCreated:
    """Generate images with your trained models mixed by `scaleConfigs` (their trigger words in the prompt)."""
    body = await json_body(request, w.PredictionCreate)
    job = await run_in_threadpool(service(services).predict, principal.tenant_id, body)
    return w.PredictionCreated(predictionId=job.id, status=t.STATUS_WORDS[job.status])


@router.get("/predictions/{predictionId}", response_model=w.PredictionPublic, response_model_exclude_none=True,
            responses=errors(404))
def get_prediction(prediction_id: PredictionId, principal: PrincipalDep, services: ServicesDep) -> w.PredictionPublic:
    """Status and, once succeeded, `outputImages`: signed URLs that expire."""
    job = service(services).prediction(principal.tenant_id, prediction_id)
    return t.prediction_public(job, services.signer, services.settings.url_expiry_seconds)


@router.delete("/predictions/{predictionId}", status_code=204, response_class=Response,
               responses={**NO_CONTENT, **errors(404)})
def delete_prediction(prediction_id: PredictionId, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Soft delete: hidden, kept in the history."""
    service(services).delete_prediction(principal.tenant_id, prediction_id)
    return Response(status_code=204)
