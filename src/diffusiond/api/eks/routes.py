"""The EKS API (seed 004): `POST /v1alpha1` and `/v1alpha2` queue tasks; results go to task folders
and registered callbacks. `GET /v1alpha2/tasks/{id}` is this server's status route (the solution
has none) and `GET /v1alpha2/outputs/...` lists a task folder on the local blob store.

Structure errors are plain text 400s (`Incorrect payload structure, ...`); a missing key and
throttling answer as API Gateway does (`{"message": ...}`). A well-formed task that cannot run (an
unknown model, an image link that cannot be fetched) is accepted and fails, as in the solution.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from diffusiond.api.deps import PrincipalDep, ServicesDep
from diffusiond.api.eks import outputs, runtimes
from diffusiond.api.eks import schemas as s
from diffusiond.api.eks.translate import (
    EXTRA_SINGLE,
    IMAGE_TO_IMAGE,
    Task,
    check_tasktype,
    output_folder_name,
    parse_json,
    prepared_content,
    request_hash,
    request_id,
    structure,
    v1alpha1_task,
    v1alpha2_task,
)
from diffusiond.api.errors import dialect_route
from diffusiond.api.vocabulary.a1111_images import InputImages
from diffusiond.api.vocabulary.a1111_processing import (
    Lookups,
    extras_info,
    extras_spec,
    img2img_spec,
    request_echo,
    txt2img_spec,
)
from diffusiond.api.vocabulary.a1111_schemas import ExtrasSingleImageRequest, Img2ImgRequest, Txt2ImgRequest
from diffusiond.auth.keys import Principal
from diffusiond.domain.errors import (
    Conflict,
    DomainError,
    InvalidParams,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from diffusiond.domain.jobs import Job, JobStatus
from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.domain.params import GenerateSpec
from diffusiond.queue.job_service import NotifyTarget
from diffusiond.services import Services
from diffusiond.webhooks.fetch import UrlFetcher

DIALECT = outputs.DIALECT
MAX_BODY = 10 * 1024 * 1024
STATUS_WORDS = {JobStatus.QUEUED: "queued", JobStatus.RUNNING: "running", JobStatus.SUCCEEDED: "completed",
                JobStatus.FAILED: "failed", JobStatus.CANCELED: "canceled"}
TASK_FAILURES = (InvalidParams, NotFound, PayloadTooLarge)  # what fails a task rather than the request


def render_error(request: Request, err: DomainError) -> Response:
    if isinstance(err, Unauthorized):
        return JSONResponse({"message": "Unauthorized"}, status_code=401)
    if isinstance(err, RateLimited):
        return JSONResponse({"message": "Too Many Requests"}, status_code=429, headers={"Retry-After": "1"})
    status = 400 if err.status == 422 else err.status
    return PlainTextResponse(err.message, status_code=status)


PLAIN = {"content": {"text/plain": {"schema": {"type": "string"}}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Incorrect payload structure, <what is missing>", **PLAIN},
    401: {"description": "no or a wrong API key", "model": s.Message},
    402: {"description": "not enough credits", **PLAIN},
    404: {"description": "no such task, or a folder URL that is not (or no longer) signed", **PLAIN},
    409: {"description": "the task id was used with another body", **PLAIN},
    413: {"description": "the body is too large", **PLAIN},
    429: {"description": "throttled (30 requests/s, burst 50 by default)", "model": s.Message},
}
router = APIRouter(tags=["eks"], route_class=dialect_route(render_error), responses=ERRORS)
JSON_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}


# ---- submitting --------------------------------------------------------------------------------------


async def read_body(request: Request) -> Any:
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise PayloadTooLarge("payload too large")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise PayloadTooLarge("payload too large")
    return parse_json(bytes(raw))


@router.post("/v1alpha2", response_model=s.V2Accepted, openapi_extra=JSON_BODY)
async def submit_v1alpha2(request: Request, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Queue a task: `{"task": {"metadata": {id, runtime, tasktype, prefix, context}, "content": {...}}}`."""
    body = await read_body(request)
    task = v1alpha2_task(body)
    runtime = runtimes.by_name(runtimes.runtimes(services.settings), task.runtime)
    if runtime is None:
        names = ", ".join(r.name for r in runtimes.runtimes(services.settings))
        raise structure(f"runtime {task.runtime!r} is not configured (runtimes: {names})")
    check_tasktype(task, runtime)
    job = await run_in_threadpool(accept, services, principal, task, runtime, request_hash(body))
    location = outputs_location(services, job)
    return JSONResponse(s.V2Accepted(id=task.id, runtime=task.runtime, output_location=location,
                                     id_task=task.id).model_dump())


@router.post("/v1alpha1", response_model=s.V1Accepted, openapi_extra=JSON_BODY)
async def submit_v1alpha1(request: Request, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Queue a task given as an A1111 body, routed by `alwayson_scripts` (task, id_task, sd_model_checkpoint)."""
    body = await read_body(request)
    task = v1alpha1_task(body)
    assert task.checkpoint is not None
    runtime = runtimes.by_checkpoint(runtimes.runtimes(services.settings), task.checkpoint,
                                     services.settings.default_model)
    if runtime is None:
        raise structure(f"no runtime serves sd_model_checkpoint {task.checkpoint!r}")
    check_tasktype(task, runtime)
    job = await run_in_threadpool(accept, services, principal, task, runtime, request_hash(body))
    return JSONResponse(s.V1Accepted(id_task=task.id, sd_model_checkpoint=task.checkpoint,
                                     output_location=outputs_location(services, job)).model_dump())


# The solution's base URL ends in "/", so its own test script posts to //v1alpha2/ (and, for
# ComfyUI runtimes, to //v1alpha2).
for _path, _endpoint in (("/v1alpha2/", submit_v1alpha2), ("//v1alpha2/", submit_v1alpha2),
                         ("//v1alpha2", submit_v1alpha2), ("/v1alpha1/", submit_v1alpha1),
                         ("//v1alpha1/", submit_v1alpha1), ("//v1alpha1", submit_v1alpha1)):
    router.add_api_route(_path, _endpoint, methods=["POST"], include_in_schema=False)


def accept(services: Services, principal: Principal, task: Task, runtime: runtimes.Runtime, digest: str) -> Job:
    """The task's job: the one its id already made (same body), a queued one, or one that failed at once."""
    try:
        existing = services.jobs.get_by_request(principal.tenant_id, task.request_id)
    except NotFound:
        existing = None
    if existing is not None:
        if existing.dialect_data.get("hash") != digest:
            raise Conflict(f"task id {task.id} was already used with a different body", code="idempotency_conflict")
        return existing
    folder = outputs.folder(principal.tenant_id, task.prefix, task.id)
    data: dict[str, Any] = {"version": task.version, "id": task.id, "runtime": task.runtime,
                            "tasktype": task.tasktype, "prefix": task.prefix, "context": task.context,
                            "folder": folder, "hash": digest, "location": output_folder_name(task.prefix, task.id)}
    targets = services.callbacks.targets(principal.tenant_id, DIALECT)
    images = InputImages(services.uploads, services.blobs, principal.tenant_id)
    try:
        spec = translate(services, principal, task, runtime, images, data)
    except TASK_FAILURES as e:
        images.discard()
        return failed(services, principal, task, data, targets, digest, e)
    try:
        return services.jobs.submit(principal.tenant_id, spec, dialect=DIALECT, request_id=task.request_id,
                                    request_hash=digest, endpoint=runtime.endpoint, notify_targets=targets,
                                    dialect_data=data)
    except BaseException:
        images.discard()
        raise


def failed(services: Services, principal: Principal, task: Task, data: dict[str, Any],
           targets: list[NotifyTarget], digest: str, error: DomainError) -> Job:
    """A task that cannot run: its result file first, then the failed job (whose callbacks point at it)."""
    job_id = uuid.uuid4().hex
    outputs.write_result(services.blobs, data, job_id, 0, [], error)
    return services.jobs.submit_failed(principal.tenant_id, dialect=DIALECT, request_id=task.request_id,
                                       request_hash=digest, code=error.code, message=error.message,
                                       notify_targets=targets, dialect_data=data, job_id=job_id)


def translate(services: Services, principal: Principal, task: Task, runtime: runtimes.Runtime, images: InputImages,
              data: dict[str, Any]) -> GenerateSpec:
    """Prepare the content as the runtime worker does and translate it as A1111 would run it."""
    model = runtime.model or services.settings.default_model
    switch = task.content.get("alwayson_scripts", {}).get("sd_model_checkpoint") \
        if isinstance(task.content.get("alwayson_scripts"), dict) else None
    if runtime.dynamic_model and switch:
        model = str(switch)
    fetcher = UrlFetcher(services.jobs.url_policy, services.settings.fetch_max_bytes,
                         services.settings.fetch_timeout_seconds)
    content = prepared_content(task, model, lambda url: fetcher.fetch(url, s3=s3_reader(services, principal)))

    def resolve(name: str, kind: ModelKind) -> ModelRecord:
        return services.models.resolve_for(principal.tenant_id, name, kind)

    look = Lookups(resolve=resolve, default_model=model, image=images, options={"live_previews_enable": False},
                   embeddings=lambda: _embeddings(services, principal), styles={})
    if task.tasktype == EXTRA_SINGLE:
        extras = ExtrasSingleImageRequest.model_validate(content)
        if not extras.image:
            raise InvalidParams("image: an image is required", field="image")
        data["html_info"] = extras_info(extras)
        return extras_spec(extras, images(extras.image, "image", None, 0), look)
    if task.tasktype == IMAGE_TO_IMAGE:
        i2i = Img2ImgRequest.model_validate(content)
        data["parameters"] = request_echo(i2i)
        return img2img_spec(i2i, look)
    t2i = Txt2ImgRequest.model_validate(content)
    data["parameters"] = request_echo(t2i)
    return txt2img_spec(t2i, look)


def _embeddings(services: Services, principal: Principal) -> dict[str, str]:
    from diffusiond.api.a1111.translate import embeddings

    return embeddings(services, principal)


def s3_reader(services: Services, principal: Principal) -> Callable[[str, str], bytes] | None:
    """s3:// links into this server's own bucket, within the caller's own folders; others are refused."""
    settings = services.settings
    if settings.blob_store != "s3":
        return None
    prefix = settings.s3_prefix.strip("/")

    def read(bucket: str, key: str) -> bytes:
        inner = key[len(prefix) + 1:] if prefix and key.startswith(prefix + "/") else key
        own = (f"outputs/{principal.tenant_id}/", f"inputs/{principal.tenant_id}/")
        if bucket != settings.s3_bucket or not inner.startswith(own) or (prefix and inner == key):
            raise InvalidParams(f"s3://{bucket}/{key}: only this tenant's own files in this server's bucket are read",
                                code="invalid_url", field="url")
        return services.blobs.get(inner)

    return read


def outputs_location(services: Services, job: Job) -> str:
    return outputs.Locations(services.settings, services.signer).folder(job.tenant_id, job.dialect_data["folder"])


# ---- reading ----------------------------------------------------------------------------------------


@router.get("/v1alpha2/tasks/{task_id}", response_model=s.TaskStatus)
def task_status(task_id: str, principal: PrincipalDep, services: ServicesDep) -> s.TaskStatus:
    """A task's status, progress and outputs (this server's addition; the solution has no status route)."""
    job = None
    for version in ("v1alpha2", "v1alpha1"):
        with contextlib.suppress(NotFound):
            job = job or services.jobs.get_by_request(principal.tenant_id, request_id(version, task_id))
    if job is None:
        raise NotFound(f"task {task_id} not found")
    data = job.dialect_data
    where = outputs.Locations(services.settings, services.signer)
    done = job.status.terminal
    error = s.TaskError(code=job.error_code or "", message=job.error_message or "") \
        if job.status in (JobStatus.FAILED, JobStatus.CANCELED) else None
    return s.TaskStatus(
        id=task_id, runtime=str(data.get("runtime")), tasktype=str(data.get("tasktype")),
        status=STATUS_WORDS[job.status], progress=job.overall_progress,
        output_location=where.folder(job.tenant_id, data["folder"]),
        images=[where.file(job.tenant_id, a.blob_key) for a in job.images],
        output_url=where.file(job.tenant_id, outputs.out_key(job, job.attempt)) if done and job.status is not
        JobStatus.CANCELED else None,
        error=error, context=data.get("context"), created_at=job.created_at.isoformat(),
        finished_at=job.finished_at.isoformat() if job.finished_at else None)


@router.get("/v1alpha2/outputs/{key:path}", response_model=s.OutputListing)
def list_outputs(key: str, services: ServicesDep, t: str = Query(), e: int = Query(), s_: str = Query(alias="s")
                 ) -> s.OutputListing:
    """A task folder's files as signed URLs, through the signed URL `output_location` gave (local store)."""
    if not key.startswith(f"{outputs.root(t)}/") or not services.signer.verify(key, t, e, s_):
        raise NotFound("not found")
    path = services.blobs.local_path(key)
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if path is not None and path.is_dir() else []
    where = outputs.Locations(services.settings, services.signer)
    return s.OutputListing(location=key.removeprefix(f"{outputs.root(t)}/"), files=[
        s.OutputFile(name=p.name, size=p.stat().st_size, url=where.file(t, f"{key}/{p.name}")) for p in files])
