"""Core jobs -> the seed's job object, and domain errors -> the seed's error shape."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from diffusiond.api.errors import request_id
from diffusiond.api.jobs import schemas as w
from diffusiond.blobs.signing import UrlSigner
from diffusiond.domain.errors import DomainError
from diffusiond.domain.jobs import ImageArtifact, Job, JobStatus
from diffusiond.domain.params import Img2Img, Txt2Img, Upscale
from diffusiond.domain.pricing import to_credits, upscale_size
from diffusiond.domain.spec_codec import generate_spec_from_json

STATUS_WORDS: dict[JobStatus, w.JobStatusWord] = {
    JobStatus.QUEUED: w.JobStatusWord.WAITING,
    JobStatus.RUNNING: w.JobStatusWord.RUNNING,
    JobStatus.SUCCEEDED: w.JobStatusWord.SUCCESS,
    JobStatus.FAILED: w.JobStatusWord.FAILED,
    JobStatus.CANCELED: w.JobStatusWord.CANCELED,
}
CORE_STATUS = {word: status for status, word in STATUS_WORDS.items()}

# HTTP status -> google.rpc.Code, for the `code` field of the error body.
RPC_CODES = {400: 3, 401: 16, 402: 9, 403: 7, 404: 5, 409: 6, 413: 3, 429: 8, 500: 13, 503: 14, 504: 4}
QueuePosition = Callable[[Job], tuple[int, int]]


def render_error(request: Request, err: DomainError) -> Response:
    meta = {"field": err.field} if err.field else {}
    meta["requestId"] = request_id(request)
    detail = w.ErrorDetail(type="type.googleapis.com/google.rpc.ErrorInfo", reason=err.code, metadata=meta)
    body = w.ErrorBody(code=RPC_CODES.get(err.status, 2), message=err.message, details=[detail])
    return JSONResponse(body.model_dump(by_alias=True), status_code=err.status)


def image_public(signer: UrlSigner, tenant_id: str, art: ImageArtifact, expires_in: int) -> w.ResourceForClient:
    expires = int(time.time()) + expires_in
    return w.ResourceForClient(
        id=art.id, url=signer.sign(art.blob_key, tenant_id, expires_in), expiredIn=str(expires * 1000),
        meta=w.ResourceMeta(image=w.ImageMeta(format=art.mime.split("/")[-1], width=art.width,
                                              height=art.height)),
    )


def job_public(job: Job, signer: UrlSigner, expires_in: int, *, output_size: tuple[int, int], count: int,
               queue: QueuePosition | None = None) -> w.JobPublic:
    """The seed's job object. `queue` is None where no live rank is wanted (webhook payloads)."""
    # What the job costs: the reservation while it may still run, then what was actually charged
    # (all of it on success, nothing on failure or cancel).
    credits = job.credits_charged if job.status.terminal else job.credits_reserved
    out = w.JobPublic(id=job.id, requestId=job.request_id, status=STATUS_WORDS[job.status],
                      credits=to_credits(credits))
    if job.status is JobStatus.QUEUED:
        if queue is not None:  # a webhook body has no live rank: it would be stale on arrival
            rank, length = queue(job)
            out.waitingInfo = w.WaitingInfo(queueRank=str(rank), queueLen=str(length))
    elif job.status is JobStatus.RUNNING:
        out.runningInfo = w.RunningInfo(processingImages=[
            w.ProcessingImage(resourceImage=pending_image(job, i, output_size),
                              progress=int(job.progress.get(str(i), 0.0) * 100))
            for i in range(count)
        ])
    elif job.status is JobStatus.SUCCEEDED:
        out.successInfo = w.SuccessInfo(
            images=[image_public(signer, job.tenant_id, a, expires_in) for a in job.images])
    else:
        out.failedInfo = w.FailedInfo(reason=job.error_message or job.status.value,
                                      code=(job.error_code or "unknown").upper())
    return out


def pending_image(job: Job, index: int, size: tuple[int, int]) -> w.ResourceForClient:
    """An image still being made: its id and final size are known, its URL is not yet."""
    meta = w.ResourceMeta(image=w.ImageMeta(format="png", width=size[0], height=size[1]))
    return w.ResourceForClient(id=f"{job.id}-{index}", url="", expiredIn="0", meta=meta)


def spec_shape(job: Job) -> tuple[tuple[int, int], int]:
    """(final image size, image count) of a job, from its stored spec."""
    spec = generate_spec_from_json(job.spec_json)
    size = (512, 512)
    for stage in spec.stages:
        if isinstance(stage, Txt2Img | Img2Img):
            size = (stage.diffusion.width, stage.diffusion.height)
        elif isinstance(stage, Upscale):
            size = upscale_size(size, stage)
    return size, spec.count
