"""AWS-extension `/inference/*`: the connection test, inference jobs and their outputs, upload URLs,
model lists and merges."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from diffusiond.api.deps import PrincipalDep, ServicesDep
from diffusiond.api.esd import inference
from diffusiond.api.esd import schemas as w
from diffusiond.api.esd.render import CORS, EsdRoute, catalog, inference_errors, parse
from diffusiond.api.openapi import json_request_body
from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelKind
from diffusiond.services import Services

router = APIRouter(tags=["aws extension: inference"], route_class=EsdRoute, responses=inference_errors())
JobId = Annotated[str, Query(max_length=100)]
PREFLIGHT_HEADERS = "Content-Type,x-api-key,Authorization"


def endpoints_by_id(services: Services, tenant_id: str) -> dict[str, Any]:
    return {e.id: e for e in services.endpoints.list(tenant_id)}


@router.options("/inference/{path:path}", include_in_schema=False)
@router.options("/api/inference/{path:path}", include_in_schema=False)
def preflight(path: str) -> Response:
    """CORS preflight: the extension's browser code calls `/inference/*` from the WebUI's page."""
    return Response(status_code=204, headers={**CORS, "Access-Control-Allow-Headers": PREFLIGHT_HEADERS})


@router.get("/inference/test-connection", response_model=w.Message)
def test_connection() -> w.Message:
    """Needs no key (an API Gateway mock in the original)."""
    return w.Message(message="Success")


RUN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "`inprogress` with the job's id, or `failure` with the reason when the endpoint cannot "
                         "take it (unknown, deleted, not InService)"},
    **inference_errors(400, 401, 402, 404, 413, 429)}


@router.post("/inference/run-sagemaker-inference", response_model=w.InferenceStarted,
             response_model_exclude_none=True, openapi_extra=json_request_body(w.InferenceRequest),
             responses=RUN_RESPONSES)
@router.post("/api/inference/run-sagemaker-inference", response_model=w.InferenceStarted,
             response_model_exclude_none=True, openapi_extra=json_request_body(w.InferenceRequest),
             responses=RUN_RESPONSES)
async def run_sagemaker_inference(request: Request, principal: PrincipalDep,
                                  services: ServicesDep) -> w.InferenceStarted:
    """A txt2img or img2img job on the named endpoint: A1111's fields in the body, or (the client's
    way) a model map with the parameters in the uploaded `config/aigc.json`."""
    body = await parse(request, w.InferenceRequest)
    return await run_in_threadpool(inference.submit, services, principal, body)


@router.get("/inference/list-inference-jobs", response_model=list[w.InferenceJob], response_model_exclude_none=True,
            responses=inference_errors(401))
def list_inference_jobs(principal: PrincipalDep, services: ServicesDep) -> list[dict[str, Any]]:
    jobs, _ = services.jobs.list(principal.tenant_id, dialect="esd", kinds=inference.KINDS_SHOWN, limit=1000)
    endpoints = endpoints_by_id(services, principal.tenant_id)
    return [inference.job_item(job, endpoints) for job in jobs]


@router.get("/inference/get-inference-job", response_model=w.InferenceJob, response_model_exclude_none=True,
            responses=inference_errors(401, 404))
def get_inference_job(principal: PrincipalDep, services: ServicesDep, jobID: JobId = "") -> dict[str, Any]:
    job = inference.esd_job(services, principal.tenant_id, jobID)
    return inference.job_item(job, endpoints_by_id(services, principal.tenant_id))


@router.get("/inference/get-inference-job-image-output", response_model=list[str], responses=inference_errors(401))
def get_inference_job_image_output(principal: PrincipalDep, services: ServicesDep, jobID: JobId = "") -> list[str]:
    """Signed URLs of the job's JPEG images (`.../image_<n>.jpg`); `[]` for an unknown or unfinished job."""
    return inference.image_urls(services, principal.tenant_id, jobID)


@router.get("/inference/get-inference-job-param-output", response_model=list[str], responses=inference_errors(401))
def get_inference_job_param_output(principal: PrincipalDep, services: ServicesDep, jobID: JobId = "") -> list[str]:
    """The signed URL of `<jobID>_param.json`: A1111's `parameters` and its `info` string."""
    return inference.param_urls(services, principal.tenant_id, jobID, endpoints_by_id(services, principal.tenant_id))


@router.get("/inference/generate-s3-presigned-url-for-uploading", response_model=str,
            responses=inference_errors(400, 401))
def generate_s3_presigned_url_for_uploading(
        principal: PrincipalDep, services: ServicesDep, key: Annotated[str, Query(max_length=600)] = "",
        s3_bucket_name: Annotated[str, Query(max_length=200)] = "") -> str:
    """A URL to PUT one file to, with `Content-Type: text/plain;charset=UTF-8`, for an hour: the
    client uploads its parameters as `config/aigc.json` this way."""
    if not key:
        raise InvalidParams("Key parameter is required", field="key")
    target = inference.upload_key(principal.tenant_id, key)
    return services.direct_uploads.object_url(target, content_type=inference.UPLOAD_CONTENT_TYPE, expires_in=3600)


def model_list(kind: ModelKind, path: str, summary: str) -> None:
    def handler(principal: PrincipalDep, services: ServicesDep) -> list[str]:
        return catalog(services).names(principal.tenant_id, kind)

    handler.__name__ = path.replace("-", "_")
    router.get(f"/inference/{path}", response_model=list[str], responses=inference_errors(401),
               summary=summary)(handler)


model_list(ModelKind.EMBEDDING, "get-texual-inversion-list", "Textual inversions (embeddings) the key's tenant may use")
model_list(ModelKind.LORA, "get-lora-list", "LoRAs the key's tenant may use")
model_list(ModelKind.HYPERNETWORK, "get-hypernetwork-list", "Hypernetworks the key's tenant may use")
model_list(ModelKind.CONTROLNET, "get-controlnet-model-list", "ControlNet models uploaded (not usable yet)")


@router.post("/inference/run-model-merge", response_model=w.InferenceStarted, response_model_exclude_none=True,
             openapi_extra=json_request_body(w.MergeRequest), responses=inference_errors(400, 401, 402, 429))
async def run_model_merge(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.InferenceStarted:
    """A merge job: `(1 - m) * primary + m * secondary`, or `primary + m * (secondary - tertiary)`; its
    result is registered as a checkpoint named `model_name` in the answer (see list-inference-jobs)."""
    body = await parse(request, w.MergeRequest)
    return await run_in_threadpool(inference.submit_merge, services, principal, body)
