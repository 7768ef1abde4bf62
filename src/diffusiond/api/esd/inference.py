"""AWS-extension inference jobs: a request onto the core (an A1111 request through the shared
translation, on a named endpoint), and a job's outputs in the original's layout.

Outputs are laid out as the original lays them out under `out/<id>/result/`: images re-encoded as
JPEG `image_<n>.jpg` (the worker already stores JPEG), and `<id>_param.json` holding A1111's
`parameters` and `info`. Both are written on first request, next to the job's outputs.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from typing import Any

from diffusiond import __version__
from diffusiond.api.esd import translate as t
from diffusiond.api.esd.catalog import Catalog
from diffusiond.api.esd.schemas import InferenceRequest, InferenceStarted, MergeRequest
from diffusiond.api.vocabulary.a1111_images import InputImages
from diffusiond.api.vocabulary.a1111_processing import (
    Lookups,
    img2img_spec,
    processed_info,
    request_echo,
    txt2img_spec,
)
from diffusiond.api.vocabulary.a1111_schemas import Img2ImgRequest, ProcessingRequest, Txt2ImgRequest
from diffusiond.auth.keys import Principal
from diffusiond.domain.endpoints import Endpoint
from diffusiond.domain.errors import InvalidParams, NotFound
from diffusiond.domain.jobs import Job, JobKind, JobStatus
from diffusiond.domain.merge import MergeMethod, MergeSpec, check_merge_spec
from diffusiond.domain.models import ModelKind
from diffusiond.domain.params import GenerateSpec, HypernetworkRef, ImageFormat
from diffusiond.domain.spec_codec import spec_from_json
from diffusiond.engine.merge import check_family
from diffusiond.services import Services

CONFIG_KEY = "config/aigc.json"
MAX_CONFIG_BYTES = 1024 * 1024
UPLOAD_CONTENT_TYPE = "text/plain;charset=UTF-8"
_UPLOAD_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,4}$")
KINDS_SHOWN = (JobKind.GENERATE, JobKind.MERGE)


def upload_key(tenant_id: str, key: str) -> str:
    """Where `generate-s3-presigned-url-for-uploading?key=` puts a tenant's file."""
    if not _UPLOAD_KEY.match(key) or ".." in key:
        raise InvalidParams("key: letters, digits and ._- in up to five /-separated parts", field="key")
    return f"inputs/{tenant_id}/esd/uploads/{key}"


def read_config(services: Services, tenant_id: str) -> dict[str, Any]:
    """The client's uploaded `config/aigc.json`: the parameters of its next request."""
    try:
        data = services.blobs.get(upload_key(tenant_id, CONFIG_KEY))
    except NotFound:
        raise InvalidParams("no parameters: send prompt (and the other fields), or upload config/aigc.json "
                            "through generate-s3-presigned-url-for-uploading first", field="prompt") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise InvalidParams("config/aigc.json is larger than 1 MiB", code="invalid_file_size", field="config")
    try:
        config = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidParams("config/aigc.json is not JSON", field="config") from None
    if not isinstance(config, dict):
        raise InvalidParams("config/aigc.json must hold a JSON object", field="config")
    return config


def submit(services: Services, principal: Principal, body: InferenceRequest) -> InferenceStarted:
    """Translate and queue one inference job on the named endpoint.

    A malformed request is an error (400). A well-formed one whose endpoint cannot take it (unknown,
    deleted, not yet `InService`) answers `status: failure` with the reason, as the original does.
    """
    tenant = principal.tenant_id
    # 1. Check what the request is, and find its parameters
    task = body.task_type
    if task not in t.TASK_TYPES:
        raise InvalidParams(f"task_type {task!r} is not supported (txt2img, img2img)", field="task_type")
    config = read_config(services, tenant) if t.uses_config(body) else None
    names = t.model_names(body, config)
    t.check_controlnet(names, config, task)
    # 2. The endpoint must be in service
    try:
        endpoint = services.endpoints.serving(tenant, body.sagemaker_endpoint)
    except (NotFound, InvalidParams) as e:
        return InferenceStarted(inference_id=str(uuid.uuid4()), status="failure", error=f"error info {e.message}")
    # 3. The A1111 request, through the shared translation
    catalog = Catalog(services.db, services.blobs, services.direct_uploads, services.models, services.settings)
    fields = t.a1111_fields(body, config)
    prompt, hypernets = t.hypernetworks_of(str(fields.get("prompt") or ""), names["hypernetwork"])
    fields["prompt"] = prompt
    for name in names["lora"]:
        catalog_resolve(catalog, tenant, name, ModelKind.LORA, "lora_model")
    refs = tuple(HypernetworkRef(catalog_resolve(catalog, tenant, n, ModelKind.HYPERNETWORK, "hypernetwork_model"), w)
                 for n, w in hypernets)
    embeddings = [catalog_resolve(catalog, tenant, n, ModelKind.EMBEDDING, "embeddings") for n in names["embedding"]]
    checkpoint = names["checkpoint"][0] if names["checkpoint"] else services.settings.default_model
    images = InputImages(services.uploads, services.blobs, tenant)
    lookups = Lookups(resolve=lambda name, kind: catalog.resolve(tenant, name, kind), default_model=checkpoint,
                      image=images, options={"sd_model_checkpoint": checkpoint},
                      embeddings=lambda: embedding_words(catalog, tenant, embeddings))
    try:
        request: ProcessingRequest
        if task == "txt2img":
            request = Txt2ImgRequest.model_validate(fields)
            spec = txt2img_spec(request, lookups)
        else:
            request = Img2ImgRequest.model_validate(fields)
            spec = img2img_spec(request, lookups)
        spec = replace(t.with_hypernetworks(spec, refs), output_format=ImageFormat.JPEG)
        job = services.jobs.submit(tenant, spec, dialect="esd", endpoint=endpoint.id, parent_id=endpoint.id)
    except BaseException:
        images.discard()
        raise
    # 4. Keep the request beside the job: its parameter output is built from it
    # (without its images: A1111 leaves them out of `parameters` too, and they are stored already)
    kept = {"task_type": task, "request": request.model_dump(exclude={"init_images", "mask"}),
            "model_name": checkpoint}
    services.blobs.put(f"outputs/{tenant}/{job.id}/request.json", json.dumps(kept).encode(), "application/json")
    return InferenceStarted(inference_id=job.id, status="inprogress", endpoint_name=endpoint.name,
                            output_path=catalog.s3_url(f"outputs/{tenant}/{job.id}/result"))


def catalog_resolve(catalog: Catalog, tenant_id: str, name: str, kind: ModelKind, field: str) -> str:
    try:
        return catalog.resolve(tenant_id, name, kind).id
    except NotFound:
        raise InvalidParams(f"{field}: {kind.value} {name!r} not found", code="model_not_found", field=field) from None


def embedding_words(catalog: Catalog, tenant_id: str, listed: list[str]) -> dict[str, str]:
    """Textual-inversion words: each of the tenant's embeddings by its file stem (as A1111 names them)."""
    words: dict[str, str] = {}
    for name in catalog.names(tenant_id, ModelKind.EMBEDDING):
        stem = re.sub(r"\.safetensors$", "", name, flags=re.IGNORECASE)
        words[stem] = catalog.resolve(tenant_id, name, ModelKind.EMBEDDING).id
    for model_id in listed:
        words.setdefault(model_id, model_id)
    return words


# ---- merges ------------------------------------------------------------------------------------------

METHODS = {"weighted_sum": MergeMethod.WEIGHTED_SUM, "weighted sum": MergeMethod.WEIGHTED_SUM,
           "add_difference": MergeMethod.ADD_DIFFERENCE, "add difference": MergeMethod.ADD_DIFFERENCE}


def submit_merge(services: Services, principal: Principal, body: MergeRequest) -> InferenceStarted:
    """A `merge` job: two checkpoints by weighted sum, or add-difference with a third; one family."""
    tenant = principal.tenant_id
    catalog = Catalog(services.db, services.blobs, services.direct_uploads, services.models, services.settings)
    wanted = [("primary_model_name", body.primary_model_name), ("secondary_model_name", body.secondary_model_name)]
    if body.tertiary_model_name:
        wanted.append(("tertiary_model_name", body.tertiary_model_name))
    records = []
    for field, name in wanted:
        try:
            records.append(catalog.resolve(tenant, name, ModelKind.CHECKPOINT))
        except NotFound:
            raise InvalidParams(f"{field}: checkpoint {name!r} not found", code="model_not_found",
                                field=field) from None
    method_name = (body.method or ("add_difference" if body.tertiary_model_name else "weighted_sum")).lower()
    method = METHODS.get(method_name)
    if method is None:
        raise InvalidParams(f"method {body.method!r}: weighted_sum or add_difference", field="method")
    check_family(records)
    display = body.model_name or f"{t.model_id_part(records[0].name or records[0].id)}-merged"
    spec = MergeSpec(primary=records[0].id, secondary=records[1].id, tertiary=records[2].id if len(records) > 2
                     else None, multiplier=body.multiplier, method=method,
                     output_model=f"{t.model_id_part(display)}-{uuid.uuid4().hex[:8]}", output_name=display)
    check_merge_spec(spec)
    job = services.jobs.submit(tenant, spec, dialect="esd")
    return InferenceStarted(inference_id=job.id, status="inprogress", endpoint_name="",
                            output_path=catalog.s3_url(f"outputs/{tenant}/{job.id}"), model_name=spec.output_model)


# ---- jobs as the API shows them ---------------------------------------------------------------------


def esd_job(services: Services, tenant_id: str, job_id: str) -> Job:
    """One of the tenant's inference (or merge) jobs submitted through this API."""
    try:
        job = services.jobs.get(tenant_id, job_id)
    except NotFound:
        job = None
    if job is None or job.dialect != "esd" or job.kind not in KINDS_SHOWN:
        raise NotFound(f"There is no inference job info item for id: {job_id}")
    return job


def job_item(job: Job, endpoints: dict[str, Endpoint]) -> dict[str, Any]:
    spec = spec_from_json(job.spec_json, job.kind)
    endpoint = endpoints.get(job.endpoint)
    item: dict[str, Any] = {
        "InferenceJobId": job.id, "startTime": t.start_time(job.created_at), "status": t.INFERENCE_STATUS[job.status],
        "taskType": t.task_type_of(spec) if isinstance(spec, GenerateSpec) else "merge",
        "endpoint_name": endpoint.name if endpoint is not None else "",
    }
    if job.finished_at is not None:
        item["completeTime"] = t.complete_time(job.finished_at)
    if job.status is JobStatus.SUCCEEDED and job.kind is JobKind.GENERATE:
        item["image_names"] = [f"image_{i}.jpg" for i in range(len(job.images))]
        item["inference_info_name"] = f"/tmp/{job.id}_param.json"
        item["sagemakerRaw"] = ""
    if isinstance(spec, MergeSpec):
        item["model_name"] = spec.output_model
    if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
        item["error"] = job.error_message or job.status.value
    return item


def image_urls(services: Services, tenant_id: str, job_id: str) -> list[str]:
    """One signed URL per image, each ending in `image_<n>.jpg`; none until the job succeeded."""
    try:
        job = esd_job(services, tenant_id, job_id)
    except NotFound:
        return []
    if job.status is not JobStatus.SUCCEEDED:
        return []
    urls = []
    for i, image in enumerate(job.images):
        key = f"outputs/{tenant_id}/{job.id}/result/image_{i}.jpg"
        if not services.blobs.exists(key):
            services.blobs.put(key, services.blobs.get(image.blob_key), "image/jpeg")
        urls.append(services.signer.sign(key, tenant_id, services.settings.url_expiry_seconds))
    return urls


def param_urls(services: Services, tenant_id: str, job_id: str, endpoints: dict[str, Endpoint]) -> list[str]:
    """The signed URL of `<id>_param.json` (A1111's `parameters` and `info`); none until it succeeded."""
    try:
        job = esd_job(services, tenant_id, job_id)
    except NotFound:
        return []
    if job.status is not JobStatus.SUCCEEDED or job.kind is not JobKind.GENERATE:
        return []
    key = f"outputs/{tenant_id}/{job.id}/result/{job.id}_param.json"
    if not services.blobs.exists(key):
        document = param_document(services, tenant_id, job, endpoints)
        services.blobs.put(key, json.dumps(document).encode(), "application/json")
    return [services.signer.sign(key, tenant_id, services.settings.url_expiry_seconds)]


def param_document(services: Services, tenant_id: str, job: Job, endpoints: dict[str, Endpoint]) -> dict[str, Any]:
    spec = spec_from_json(job.spec_json, job.kind)
    assert isinstance(spec, GenerateSpec)
    try:
        kept = json.loads(services.blobs.get(f"outputs/{tenant_id}/{job.id}/request.json"))
    except (NotFound, ValueError):
        kept = {"task_type": t.task_type_of(spec), "request": {}, "model_name": ""}
    request: ProcessingRequest = (Img2ImgRequest if kept["task_type"] == "img2img" else Txt2ImgRequest).model_validate(
        kept["request"])
    stamp = (job.finished_at or job.created_at).strftime("%Y%m%d%H%M%S")
    info = processed_info(request, spec, model_name=str(kept.get("model_name") or ""), job_timestamp=stamp,
                          version=__version__)
    endpoint = endpoints.get(job.endpoint)
    return {"parameters": request_echo(request), "info": json.dumps(info),
            "endpont_name": endpoint.name if endpoint is not None else "", "inference_id": job.id, "sns_info": {}}
