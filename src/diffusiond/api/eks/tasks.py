"""Accepting an EKS task: its job, as the solution's runtime worker would run it.

The same task id with the same body is the job it made; otherwise the content is prepared as the
worker prepares it (routing keys out, linked images fetched behind the SSRF guard) and translated
as A1111 would run it. What fails there fails the task: its result file is written, then the job is
recorded as failed, so its callbacks point at that file.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from diffusiond.api.a1111.translate import embeddings
from diffusiond.api.eks import outputs, runtimes
from diffusiond.api.eks.translate import EXTRA_SINGLE, IMAGE_TO_IMAGE, Task, output_folder_name, prepared_content
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
from diffusiond.domain.errors import Conflict, DomainError, InvalidParams, NotFound, PayloadTooLarge
from diffusiond.domain.jobs import Job
from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.domain.params import GenerateSpec
from diffusiond.queue.job_service import NotifyTarget
from diffusiond.services import Services
from diffusiond.webhooks.fetch import UrlFetcher

DIALECT = outputs.DIALECT
TASK_FAILURES = (InvalidParams, NotFound, PayloadTooLarge)  # what fails a task rather than the request


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
                   embeddings=lambda: embeddings(services, principal), styles={})
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
