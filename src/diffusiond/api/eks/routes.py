"""The EKS API (seed 004): `POST /v1alpha1` and `/v1alpha2` queue tasks; results go to task folders
and registered callbacks. `GET /v1alpha2/tasks/{id}` is this server's status route (the solution
has none) and `GET /v1alpha2/outputs/...` lists a task folder on the local blob store.

Structure errors are plain text 400s (`Incorrect payload structure, ...`); a missing key and
throttling answer as API Gateway does (`{"message": ...}`). A well-formed task that cannot run (an
unknown model, an image link that cannot be fetched) is accepted and fails, as in the solution.
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from diffusiond.api.deps import PrincipalDep, ServicesDep
from diffusiond.api.edge import Dialect, Upload
from diffusiond.api.eks import outputs, runtimes, tasks
from diffusiond.api.eks import schemas as s
from diffusiond.api.eks.translate import (
    check_tasktype,
    parse_json,
    request_hash,
    request_id,
    structure,
    v1alpha1_task,
    v1alpha2_task,
)
from diffusiond.api.errors import dialect_route
from diffusiond.api.openapi import RATE_LIMIT_HEADERS
from diffusiond.domain.errors import (
    DomainError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from diffusiond.domain.jobs import Job, JobStatus
from diffusiond.domain.limits import MAX_INPUT_IMAGES
from diffusiond.services import Services

DIALECT = outputs.DIALECT
MAX_BODY = 10 * 1024 * 1024
STATUS_WORDS = {JobStatus.QUEUED: "queued", JobStatus.RUNNING: "running", JobStatus.SUCCEEDED: "completed",
                JobStatus.FAILED: "failed", JobStatus.CANCELED: "canceled"}


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
    401: {"description": "no or a wrong API key", "model": s.EksMessage},
    402: {"description": "not enough credits", **PLAIN},
    404: {"description": "no such task, or a folder URL that is not (or no longer) signed", **PLAIN},
    409: {"description": "the task id was used with another body", **PLAIN},
    413: {"description": "the body is too large", **PLAIN},
    429: {"description": "throttled (30 requests/s, burst 50 by default)", "model": s.EksMessage,
          "headers": RATE_LIMIT_HEADERS},
}
router = APIRouter(tags=["eks"], route_class=dialect_route(render_error), responses=ERRORS)
# A task's content may carry its images inline (base64 `init_images`, an extras `image`).
EDGE = Dialect("eks", ("/v1alpha1", "/v1alpha2", "//v1alpha1", "//v1alpha2"), render_error, uploads=tuple(
    Upload("POST", path, files=MAX_INPUT_IMAGES, json=True)
    for path in ("/v1alpha1", "/v1alpha2", "/v1alpha1/", "/v1alpha2/", "//v1alpha1", "//v1alpha2",
                 "//v1alpha1/", "//v1alpha2/")))
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
    job = await run_in_threadpool(tasks.accept, services, principal, task, runtime, request_hash(body))
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
    job = await run_in_threadpool(tasks.accept, services, principal, task, runtime, request_hash(body))
    return JSONResponse(s.V1Accepted(id_task=task.id, sd_model_checkpoint=task.checkpoint,
                                     output_location=outputs_location(services, job)).model_dump())


# The solution's base URL ends in "/", so its own test script posts to //v1alpha2/ (and, for
# ComfyUI runtimes, to //v1alpha2).
for _path, _endpoint in (("/v1alpha2/", submit_v1alpha2), ("//v1alpha2/", submit_v1alpha2),
                         ("//v1alpha2", submit_v1alpha2), ("/v1alpha1/", submit_v1alpha1),
                         ("//v1alpha1/", submit_v1alpha1), ("//v1alpha1", submit_v1alpha1)):
    router.add_api_route(_path, _endpoint, methods=["POST"], include_in_schema=False)


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
