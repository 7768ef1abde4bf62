"""`/v1/jobs` routes (seed 001): parse, authorise, call the job service, render."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

import pydantic
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from diffusiond.api.bodies import read_capped
from diffusiond.api.deps import PrincipalDep, ServicesDep
from diffusiond.api.edge import Dialect, Upload
from diffusiond.api.errors import dialect_route
from diffusiond.api.jobs import schemas as w
from diffusiond.api.jobs.render import CORE_STATUS, job_public, render_error, spec_shape
from diffusiond.api.jobs.resources import ResourceStore, resource_public
from diffusiond.api.jobs.translate import Lookups, request_hash, translate
from diffusiond.api.openapi import (
    IMAGE_TYPES,
    error_responses,
    json_request_body,
    links,
    multipart_body,
    optional,
    raw_body,
)
from diffusiond.auth.keys import Principal
from diffusiond.domain.errors import InvalidParams, NotFound, PayloadTooLarge
from diffusiond.domain.jobs import Job
from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.domain.pricing import to_credits
from diffusiond.engine.detectors import BUILTIN_DETECTORS
from diffusiond.queue.events import Subscription
from diffusiond.services import Services

M = TypeVar("M", bound=pydantic.BaseModel)
# The last named field of a validation error decides the seed's specific error code.
FIELD_CODES = {"width": "invalid_height_or_width", "height": "invalid_height_or_width", "count": "invalid_samples"}
MAX_JSON_BYTES = 1024 * 1024
# A page token is an offset: ASCII digits, few enough for any database's integer (`isdigit` alone
# takes "²" and twenty-digit numbers, and either was a 500).
PAGE_TOKEN = r"^[0-9]{1,9}$"
SSE_KEEPALIVE = 15.0
# One event of the stream (OpenAPI 3.1: an event stream's `schema` describes each event): `job` events
# carry the job object as JSON in `data`, the last is an `end` event.
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {
    "event": {"type": "string", "enum": ["job", "end"]}, "data": {"type": "string"}, "id": {"type": "string"}}}
SSE_POLL = 1.0

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=dialect_route(render_error, FIELD_CODES),
                   responses=error_responses(w.ErrorBody, 400, 401, 413, 429, 500))
NOT_FOUND = error_responses(w.ErrorBody, 404)


class UploadForm(pydantic.BaseModel):
    """The one-step upload's form: just the image, in field `file` (declared with it)."""
# `/v1/blobs` (signed output URLs, served by app.py) answers in this shape too.
DIALECT = Dialect("/v1/jobs", ("/v1/jobs", "/v1/resource", "/v1/blobs"), render_error, uploads=(
    Upload("POST", "/v1/resource/image/upload"),
    Upload("PUT", "/v1/resource/image/{resource_id}", raw=True, keyless=True),
))


# ---- helpers ---------------------------------------------------------------------------------------


async def parse(request: Request, model: type[M]) -> M:
    """The JSON body as `model`; a bad field becomes one 400 naming it (and its seed code)."""
    body = await read_capped(request, MAX_JSON_BYTES, what="body")
    try:
        raw = json.loads(body or b"null")
    except ValueError:
        raise InvalidParams("body: not valid JSON", code="invalid_params") from None
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        loc = [p for p in first.get("loc", ()) if not (isinstance(p, str) and p.startswith(("function-", "list[")))]
        where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "body"
        names = [p for p in loc if isinstance(p, str)]
        code = FIELD_CODES.get(names[-1], "invalid_params") if names else "invalid_params"
        if first.get("type") == "extra_forbidden":
            code = "unknown_field"
        raise InvalidParams(f"{where}: {first.get('msg', 'invalid')}", code=code,
                            field=names[-1] if names else None) from None


def json_body(model: pydantic.BaseModel) -> Response:
    """What `response_model_exclude_none=True` sends, without FastAPI validating the model again.

    For the hot paths (submit, status polls): the model was built and validated just now.
    """
    return Response(model.model_dump_json(by_alias=True, exclude_none=True), media_type="application/json")


def resources(services: Services) -> ResourceStore:
    return ResourceStore(services.db, services.blobs, services.signer, services.uploads)


def lookups(services: Services, principal: Principal) -> Lookups:
    store = resources(services)

    def detector_known(name: str) -> bool:
        if name in BUILTIN_DETECTORS:
            return True
        try:
            services.models.resolve(name, ModelKind.DETECTOR)
        except NotFound:
            return False
        return True

    def resolve(model_id: str, kind: ModelKind) -> ModelRecord:
        return services.models.resolve_for(principal.tenant_id, model_id, kind)

    return Lookups(resolve=resolve, resource=lambda rid: store.for_job(principal.tenant_id, rid),
                   detector_known=detector_known, default_model=services.settings.default_model)


def public(services: Services, job: Job, *, live: bool = True) -> w.JobPublic:
    size, count = spec_shape(job)
    return job_public(job, services.signer, services.settings.url_expiry_seconds, output_size=size, count=count,
                      queue=services.jobs.queue_position if live else None)


def envelope(services: Services, job: Job) -> w.JobEnvelope:
    return w.JobEnvelope(job=public(services, job))


# ---- jobs ------------------------------------------------------------------------------------------


@router.post("/jobs", response_model=w.JobEnvelope, response_model_exclude_none=True, operation_id="createJob",
             openapi_extra=json_request_body(w.JobCreate),
             responses={200: {"links": links("job_id", "job/id", "getJob", "cancelJob", "deleteJob", "jobEvents")},
                        **error_responses(w.ErrorBody, 402, 409)})
async def create_job(request: Request, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Create a multi-stage job; the same `requestId` with the same body returns the same job."""
    body = await parse(request, w.JobCreate)
    # DNS, the model registry and the database: one trip off the event loop for all of it.
    return json_body(await run_in_threadpool(submit_job, services, principal, body))


def submit_job(services: Services, principal: Principal, body: w.JobCreate) -> w.JobEnvelope:
    spec = translate(body, lookups(services, principal))
    job = services.jobs.submit(principal.tenant_id, spec, dialect="jobs", request_id=body.request_id,
                               request_hash=request_hash(body), notify_url=body.notify_url)
    return envelope(services, job)


@router.post("/jobs/credits", response_model=w.CreditsPublic, openapi_extra=json_request_body(w.CreditsRequest))
async def price_job(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.CreditsPublic:
    """What the stages would cost, without running them."""
    body = await parse(request, w.CreditsRequest)
    spec = await run_in_threadpool(translate, body, lookups(services, principal))
    return w.CreditsPublic(credits=to_credits(services.jobs.price(spec)))


@router.get("/jobs", response_model=w.JobsPage, response_model_exclude_none=True)
def list_jobs(principal: PrincipalDep, services: ServicesDep,
              status: Annotated[w.JobStatusWord | None, Query()] = None,
              page_size: Annotated[int, Query(alias="pageSize", ge=1, le=100)] = 20,
              page_token: Annotated[str | None, Query(alias="pageToken", pattern=PAGE_TOKEN)] = None) -> w.JobsPage:
    """The caller's jobs, newest first; `pageToken` is the `nextPageToken` of the previous page."""
    offset = int(page_token) if page_token else 0
    core = CORE_STATUS.get(status) if status is not None else None
    if status is not None and core is None:
        return w.JobsPage(jobs=[], total=0)
    jobs, total = services.jobs.list(principal.tenant_id, status=core, limit=page_size, offset=offset)
    more = offset + len(jobs) < total
    return w.JobsPage(jobs=[public(services, j) for j in jobs], total=total,
                      nextPageToken=str(offset + len(jobs)) if more else None)


@router.get("/jobs/{job_id}", response_model=w.JobEnvelope, response_model_exclude_none=True,
            operation_id="getJob", responses=NOT_FOUND)
def get_job(job_id: str, principal: PrincipalDep, services: ServicesDep) -> Response:
    return json_body(envelope(services, services.jobs.get(principal.tenant_id, job_id, with_queue=True)))


@router.post("/jobs/{job_id}/cancel", response_model=w.CanceledJob, response_model_exclude_none=True,
             operation_id="cancelJob", responses=NOT_FOUND)
def cancel_job(job_id: str, principal: PrincipalDep, services: ServicesDep) -> w.CanceledJob:
    """A queued job stops at once; a running one within a denoising step. Credits are released."""
    job = services.jobs.cancel(principal.tenant_id, job_id)
    return w.CanceledJob(jobId=job.id, job=public(services, job))


@router.delete("/jobs/{job_id}", response_model=w.CanceledJob, response_model_exclude_none=True,
               operation_id="deleteJob", responses=NOT_FOUND)
def delete_job(job_id: str, principal: PrincipalDep, services: ServicesDep) -> w.CanceledJob:
    """The seed API's DELETE: the same as cancel."""
    return cancel_job(job_id, principal, services)


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse, operation_id="jobEvents",
            responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}}, **NOT_FOUND})
def job_events(job_id: str, principal: PrincipalDep, services: ServicesDep) -> StreamingResponse:
    """Server-Sent Events: a `job` event with the job object on every change, until it ends."""
    services.jobs.get(principal.tenant_id, job_id)  # 404 before the stream starts
    return StreamingResponse(sse_stream(services, principal.tenant_id, job_id), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


async def sse_stream(services: Services, tenant_id: str, job_id: str) -> AsyncIterator[str]:
    async with services.events.subscribe(job_id) as changes:  # before reading: no change is missed
        async for chunk in _sse_events(services, tenant_id, job_id, changes):
            yield chunk


async def _sse_events(services: Services, tenant_id: str, job_id: str,
                      changes: Subscription) -> AsyncIterator[str]:
    last: str | None = None
    n = 0
    idle = 0.0
    while True:
        # The queue rank is read with the row, in the worker thread: nothing blocks the event loop.
        job = await run_in_threadpool(services.jobs.get, tenant_id, job_id, with_queue=True)
        data = json.dumps(public(services, job).model_dump(mode="json", exclude_none=True), sort_keys=True)
        # Signed URLs change every second; compare on what a client cares about.
        key = json.dumps([job.status.value, job.progress, job.attempt])
        if key != last:
            n += 1
            last, idle = key, 0.0
            yield f"event: job\nid: {n}\ndata: {data}\n\n"
            if job.status.terminal:
                yield "event: end\ndata: {}\n\n"
                return
        elif idle >= SSE_KEEPALIVE:
            idle = 0.0
            yield ": keep-alive\n\n"
        await changes.wait(SSE_POLL)
        idle += SSE_POLL


# ---- resources -------------------------------------------------------------------------------------


@router.post("/resource/image", response_model=w.ResourcePublic, response_model_exclude_none=True,
             operation_id="createResource", openapi_extra=optional(json_request_body(w.ResourceCreate)),
             responses={200: {"links": links("resource_id", "resourceId", "getResource")}})
async def create_resource(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.ResourcePublic:
    """Step one of an upload: a resource id and a signed URL to PUT the image bytes to."""
    body = await parse(request, w.ResourceCreate) if request.headers.get("content-length", "0") != "0" \
        else w.ResourceCreate()
    store = resources(services)
    res = store.create(principal.tenant_id)
    return resource_public(res, store.put_url(res, body.expire_sec))


@router.put("/resource/image/{resource_id}", response_model=w.ResourcePublic, response_model_exclude_none=True,
            openapi_extra=raw_body(*IMAGE_TYPES), responses=NOT_FOUND)
async def put_resource(resource_id: str, request: Request, services: ServicesDep, t: str = Query(),
                       e: int = Query(), s: str = Query()) -> w.ResourcePublic:
    """Step two: the image bytes, to the signed URL step one returned (no API key needed)."""
    store = resources(services)
    store.verify_put(resource_id, t, e, s)
    data = await read_capped(request, services.settings.max_upload_bytes)
    res = await run_in_threadpool(store.store, t, resource_id, data, request.headers.get("content-type"))
    return resource_public(res)


@router.post("/resource/image/upload", response_model=w.ResourcePublic, response_model_exclude_none=True,
             openapi_extra=multipart_body(UploadForm, {"file": True}))
async def upload_resource(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.ResourcePublic:
    """One-step upload: a multipart form with the image in field `file` (or `image`)."""
    limit = services.settings.max_upload_bytes
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit + 64 * 1024:
        raise PayloadTooLarge(f"file: the upload is larger than {limit:,} bytes")
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get("file") or form.get("image")
    if not isinstance(upload, UploadFile):
        raise InvalidParams("file: a multipart file field named 'file' is required", code="invalid_params",
                            field="file")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"file: the upload is larger than {limit:,} bytes")
    res = await run_in_threadpool(resources(services).upload, principal.tenant_id, data, upload.content_type)
    return resource_public(res)


@router.get("/resource/image/{resource_id}", response_model=w.ResourcePublic, response_model_exclude_none=True,
            operation_id="getResource", responses=NOT_FOUND)
def get_resource(resource_id: str, principal: PrincipalDep, services: ServicesDep) -> w.ResourcePublic:
    return resource_public(resources(services).get(principal.tenant_id, resource_id))
