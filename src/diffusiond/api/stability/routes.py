"""Stability v1 routes: parse, authorise, submit one job, wait, render."""

from __future__ import annotations

import base64
import uuid
from functools import partial
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from diffusiond.api.deps import PrincipalDep, ServicesDep
from diffusiond.api.edge import Dialect, Upload
from diffusiond.api.errors import dialect_route, request_id, validation_to_domain
from diffusiond.api.openapi import BINARY, error_responses, multipart_body
from diffusiond.api.stability import schemas as s
from diffusiond.api.stability.translate import diffusion, form_fields, read_upload
from diffusiond.auth.keys import Principal
from diffusiond.domain.errors import DomainError, InvalidParams, NotFound
from diffusiond.domain.jobs import Job, JobStatus
from diffusiond.domain.limits import UPSCALE_MAX_PIXELS, check_size
from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.domain.params import GenerateSpec, ImageRef, Img2Img, Inpaint, MaskSource, Txt2Img, Upscale
from diffusiond.domain.pricing import to_credits
from diffusiond.queue.waiting import wait_or_cancel
from diffusiond.services import Services

FIELD_CODES = {"height": "invalid_height_or_width", "width": "invalid_height_or_width"}
MAX_FORM_FIELDS = 200


def render_error(request: Request, err: DomainError) -> Response:
    body = s.StabilityError(id=request_id(request), name=err.code, message=err.message)
    # The spec files every invalid_* error (file size included) under 400.
    status = 400 if err.code.startswith("invalid_") else err.status
    return JSONResponse(body.model_dump(), status_code=status)


router = APIRouter(prefix="/v1", tags=["stability v1"], route_class=dialect_route(render_error, FIELD_CODES),
                   responses=error_responses(s.StabilityError, 400, 401, 413, 429, 500))
DIALECT = Dialect("stability v1", ("/v1/generation", "/v1/engines", "/v1/user"), render_error, uploads=(
    Upload("POST", "/v1/generation/{engine_id}/image-to-image"),
    Upload("POST", "/v1/generation/{engine_id}/image-to-image/masking", files=2),
    Upload("POST", "/v1/generation/{engine_id}/image-to-image/upscale"),
))
AcceptHeader = Annotated[str, Header(alias="accept")]
# A generation's answers: the artifacts (JSON or PNG bytes), and the errors a submit can add.
GENERATED: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": BINARY}}, "model": s.ArtifactsResponse},
    **error_responses(s.StabilityError, 402, 404, 504),
}
PROMPT_FIELDS = {"text_prompts": ("text", "weight")}


def wants_png(accept: str | None) -> bool:
    return (accept or "").split(",")[0].strip().lower() == "image/png"


def engine(services: Services, principal: Principal, engine_id: str, kind: ModelKind) -> ModelRecord:
    try:
        return services.models.resolve_for(principal.tenant_id, engine_id, kind)
    except NotFound:
        raise NotFound(f"The specified engine (ID {engine_id}) was not found.") from None


@router.get("/engines/list", response_model=list[s.Engine])
def list_engines(principal: PrincipalDep, services: ServicesDep) -> list[s.Engine]:
    engines: list[s.Engine] = []
    for kind in (ModelKind.CHECKPOINT, ModelKind.UPSCALER):
        for record, aliases in services.models.list(kind, tenant_id=principal.tenant_id):
            desc = record.description or f"{record.family} {record.kind.value}"
            if kind is ModelKind.UPSCALER:
                desc = f"upscaler: {desc}"  # so clients (and the web page) can tell them apart
            engines.append(s.Engine(id=record.id, name=record.name or record.id, description=desc))
            engines += [s.Engine(id=a, name=a, description=f"alias of {record.id}: {desc}") for a in aliases]
    return engines


@router.get("/user/account", response_model=s.AccountResponse)
def user_account(principal: PrincipalDep, services: ServicesDep) -> s.AccountResponse:
    tenant = services.tenants.get(principal.tenant_id)
    org = s.OrganizationMembership(id=tenant.id, name=tenant.name, is_default=True,
                                   role="OWNER" if principal.is_admin else "MEMBER")
    return s.AccountResponse(id=tenant.id, email=tenant.email or f"{tenant.id}@diffusiond.local",
                             organizations=[org])


@router.get("/user/balance", response_model=s.BalanceResponse)
def user_balance(principal: PrincipalDep, services: ServicesDep) -> s.BalanceResponse:
    return s.BalanceResponse(credits=to_credits(services.tenants.get(principal.tenant_id).balance))


@router.post("/generation/{engine_id}/text-to-image", responses=GENERATED)
async def text_to_image(engine_id: str, body: s.TextToImageRequest, request: Request, principal: PrincipalDep,
                        services: ServicesDep, accept: AcceptHeader = "application/json") -> Response:
    model = engine(services, principal, engine_id, ModelKind.CHECKPOINT)
    check_samples(body.samples, accept)
    check_size(body.width, body.height, model.family)
    d = diffusion(model.id, body, body.text_prompts, body.width, body.height)
    spec = GenerateSpec(stages=(Txt2Img(d),), count=body.samples, seed=body.seed)
    return await run(request, services, principal, spec, accept, uploads=[])


@router.post("/generation/{engine_id}/image-to-image", responses=GENERATED,
             openapi_extra=multipart_body(s.ImageToImageForm, {"init_image": True}, flatten=PROMPT_FIELDS))
async def image_to_image(engine_id: str, request: Request, principal: PrincipalDep, services: ServicesDep,
                         accept: AcceptHeader = "application/json") -> Response:
    model = engine(services, principal, engine_id, ModelKind.CHECKPOINT)
    form = await read_form(request)
    body = s.ImageToImageForm.model_validate(form_fields(form))
    check_samples(body.samples, accept)
    init = await upload_image(services, principal, form, "init_image")
    try:
        check_size(init.width, init.height, model.family)
        d = diffusion(model.id, body, body.text_prompts, init.width, init.height)
    except BaseException:
        delete_blobs(services, [init.ref])
        raise
    if body.init_image_mode == "IMAGE_STRENGTH":
        strength, end = 1.0 - body.image_strength, None
    else:
        strength, end = body.step_schedule_start, body.step_schedule_end
    stage = Img2Img(d, init=init.ref, strength=strength, step_schedule_end=end)
    spec = GenerateSpec(stages=(stage,), count=body.samples, seed=body.seed)
    return await run(request, services, principal, spec, accept, uploads=[init.ref])


@router.post("/generation/{engine_id}/image-to-image/masking", responses=GENERATED,
             openapi_extra=multipart_body(s.MaskingForm, {"init_image": True, "mask_image": False},
                                          flatten=PROMPT_FIELDS))
async def masking(engine_id: str, request: Request, principal: PrincipalDep, services: ServicesDep,
                  accept: AcceptHeader = "application/json") -> Response:
    model = engine(services, principal, engine_id, ModelKind.CHECKPOINT)
    form = await read_form(request)
    body = s.MaskingForm.model_validate(form_fields(form))
    check_samples(body.samples, accept)
    needs_mask = body.mask_source is not MaskSource.INIT_IMAGE_ALPHA
    if needs_mask and form.get("mask_image") is None:
        raise InvalidParams(f"mask_source is {body.mask_source.value} but no mask_image was provided",
                            code="invalid_mask_image")
    init = await upload_image(services, principal, form, "init_image", keep_alpha=not needs_mask)
    uploads = [init.ref]
    try:
        mask = await upload_image(services, principal, form, "mask_image") if needs_mask else None
        if mask is not None:
            uploads.append(mask.ref)
            if mask.size != init.size:
                raise InvalidParams(
                    f"init_image is {init.width}x{init.height} but mask_image is {mask.width}x{mask.height}",
                    code="invalid_image_dimensions")
        check_size(init.width, init.height, model.family)
        d = diffusion(model.id, body, body.text_prompts, init.width, init.height)
    except BaseException:
        delete_blobs(services, uploads)
        raise
    stage = Inpaint(d, init=init.ref, mask=mask.ref if mask else None, mask_source=body.mask_source)
    spec = GenerateSpec(stages=(stage,), count=body.samples, seed=body.seed)
    return await run(request, services, principal, spec, accept, uploads=uploads)


@router.post("/generation/{engine_id}/image-to-image/upscale", responses=GENERATED,
             openapi_extra=multipart_body(s.UpscaleForm, {"image": True}))
async def upscale(engine_id: str, request: Request, principal: PrincipalDep, services: ServicesDep,
                  accept: AcceptHeader = "application/json") -> Response:
    model = engine(services, principal, engine_id, ModelKind.UPSCALER)
    form = await read_form(request)
    try:
        body = s.UpscaleForm.model_validate(form_fields(form))
    except pydantic.ValidationError as e:  # upscale sizes are not the diffusion size rule
        raise validation_to_domain(list(e.errors()), {}) from None
    if body.width and body.height:
        raise InvalidParams("only one of width or height may be specified", code="bad_request")
    image = await upload_image(services, principal, form, "image")
    w, h = image.size
    if body.width:
        out = (body.width, round(h * body.width / w))
    elif body.height:
        out = (round(w * body.height / h), body.height)
    else:
        out = (w * 2, h * 2)
    if out[0] * out[1] > UPSCALE_MAX_PIXELS:
        delete_blobs(services, [image.ref])
        raise InvalidParams(f"the requested image would be {out[0]}x{out[1]}, more than the maximum "
                            f"pixel count of {UPSCALE_MAX_PIXELS:,}", code="invalid_pixel_count")
    stage = Upscale(upscaler=model.id, init=image.ref, width=out[0], height=out[1])
    spec = GenerateSpec(stages=(stage,), count=1)
    return await run(request, services, principal, spec, accept, uploads=[image.ref])


# ---- helpers --------------------------------------------------------------------------------------


class Uploaded:
    def __init__(self, ref: ImageRef, width: int, height: int) -> None:
        self.ref, self.width, self.height = ref, width, height

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def check_samples(samples: int, accept: str | None) -> None:
    if samples > 1 and wants_png(accept):
        raise InvalidParams("Sample count may only be greater than 1 when the accept header is set to "
                            "`application/json`", code="invalid_samples")


async def read_form(request: Request) -> FormData:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise InvalidParams("this endpoint takes multipart/form-data", code="bad_request")
    return await request.form(max_files=4, max_fields=MAX_FORM_FIELDS)


async def upload_image(services: Services, principal: Principal, form: FormData, name: str, *,
                       keep_alpha: bool = False) -> Uploaded:
    settings = services.settings
    raw = await read_upload(form, name, settings.max_upload_bytes)
    assert raw is not None
    return await run_in_threadpool(store_upload, services, principal, raw, name, keep_alpha)


def store_upload(services: Services, principal: Principal, raw: tuple[bytes, str], name: str,
                 keep_alpha: bool) -> Uploaded:
    """Validate, re-encode and store one uploaded image."""
    png, width, height = services.uploads.reencode(raw[0], raw[1], field=name, keep_alpha=keep_alpha)
    key = f"inputs/{principal.tenant_id}/{uuid.uuid4().hex}.png"
    services.blobs.put(key, png, "image/png")
    return Uploaded(ImageRef(key, width, height), width, height)


def delete_blobs(services: Services, refs: list[ImageRef]) -> None:
    for ref in refs:
        services.blobs.delete(ref.blob_key)


async def run(request: Request, services: Services, principal: Principal, spec: GenerateSpec, accept: str | None,
              *, uploads: list[ImageRef]) -> Response:
    """Submit the job like any other, wait for it, and answer in the format `accept` asks for.

    A wait that times out, or whose client disconnects, cancels the job and releases its credits.
    """
    # Database and blob work runs in worker threads: the event loop keeps serving other requests.
    try:
        job = await run_in_threadpool(partial(services.jobs.submit, dialect="stability"), principal.tenant_id, spec)
    except BaseException:
        delete_blobs(services, uploads)  # a refused request leaves nothing behind
        raise
    job = await wait_or_cancel(services.jobs, services.events, principal.tenant_id, job.id,
                               services.settings.sync_timeout_seconds, request.is_disconnected)
    return await run_in_threadpool(render_job, services, job, accept)


def render_job(services: Services, job: Job, accept: str | None) -> Response:
    if job.status is not JobStatus.SUCCEEDED:
        err = DomainError(job.error_message or f"generation {job.status.value}", code=job.error_code or "server_error")
        err.status = 400 if job.error_code and job.error_code.startswith("invalid_") else 500
        raise err
    if wants_png(accept):
        art = job.images[0]
        return Response(services.blobs.get(art.blob_key), media_type="image/png",
                        headers={"Seed": str(art.seed), "Finish-Reason": art.finish_reason})
    artifacts = [
        s.ImageArtifact(base64=base64.b64encode(services.blobs.get(a.blob_key)).decode(), seed=a.seed,
                        finishReason=a.finish_reason)  # type: ignore[arg-type]
        for a in job.images
    ]
    return JSONResponse(s.ArtifactsResponse(artifacts=artifacts).model_dump())
