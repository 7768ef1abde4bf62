"""`/v1/uploads`: where the signed upload URLs of the local store point (blobs/direct.py).

With the S3 store clients upload to S3 itself and these routes are never named in a URL. The
signature in the query authorises the PUT (no API key, like a presigned S3 URL); the body is
streamed to disk within the part size limit and never held in memory.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from diffusiond.api.deps import ServicesDep
from diffusiond.api.edge import Dialect, Upload
from diffusiond.api.errors import dialect_route
from diffusiond.api.openapi import error_responses, raw_body
from diffusiond.blobs.direct import LocalDirectUploads, Receiver
from diffusiond.config import Settings
from diffusiond.domain.errors import DomainError, NotFound, PayloadTooLarge


class UploadError(BaseModel):
    code: str
    message: str


def render_error(request: Request, err: DomainError) -> Response:
    return JSONResponse(UploadError(code=err.code, message=err.message).model_dump(), status_code=err.status)


ERRORS = error_responses(UploadError, 400, 401, 404, 413, 429, 500)
RAW_BODY = raw_body("application/octet-stream")
ETAG = {"ETag": {"description": "The MD5 of the bytes, quoted as S3 sends it", "schema": {"type": "string"}}}

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], route_class=dialect_route(render_error))


def dialect(settings: Settings) -> Dialect:
    """Raw bodies up to a model file's part, authorised by the URL's signature (no key)."""
    return Dialect("uploads", ("/v1/uploads",), render_error, uploads=tuple(
        Upload("PUT", path, raw=True, keyless=True, max_bytes=settings.max_model_part_bytes)
        for path in ("/v1/uploads/parts/{upload_id}/{part_number}", "/v1/uploads/objects/{key:path}")))


def local(services: Any) -> LocalDirectUploads:
    uploads = services.direct_uploads
    if not isinstance(uploads, LocalDirectUploads):
        raise NotFound("uploads go straight to the S3 store; this server does not receive them")
    return uploads


async def receive(request: Request, receiver: Receiver) -> str:
    """Stream the body into `receiver` (refusing a declared or actual size over its limit)."""
    declared = request.headers.get("content-length")
    try:
        if declared is not None and declared.isdigit() and int(declared) > receiver.limit:
            raise PayloadTooLarge(f"this upload is larger than {receiver.limit:,} bytes, the most one PUT may carry")
        async for chunk in request.stream():
            if chunk:
                await anyio.to_thread.run_sync(receiver.write, chunk)
        return await anyio.to_thread.run_sync(receiver.finish)
    except BaseException:
        receiver.discard()
        raise


# A browser uploads straight here too (the AWS extension's page PUTs its config): CORS as S3 buckets
# configured for it answer, with the ETag readable.
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "ETag"}


@router.options("/{path:path}", include_in_schema=False)
def preflight(path: str) -> Response:
    return Response(status_code=204, headers={**CORS, "Access-Control-Allow-Methods": "PUT,OPTIONS",
                                              "Access-Control-Allow-Headers": "Content-Type"})


@router.put("/parts/{upload_id}/{part_number}", status_code=200, openapi_extra=RAW_BODY,
            responses={200: {"description": "The part is stored", "headers": ETAG}, **ERRORS})
async def put_part(upload_id: str, part_number: int, request: Request, services: ServicesDep,
                   e: int = Query(), s: str = Query(max_length=100)) -> Response:
    """One part of a multipart upload; the ETag header of the answer names it when completing."""
    uploads = local(services)
    receiver = await anyio.to_thread.run_sync(uploads.open_part, upload_id, part_number, e, s)
    etag = await receive(request, receiver)
    return Response(status_code=200, headers={"ETag": etag, **CORS})


@router.put("/objects/{key:path}", status_code=200, openapi_extra=RAW_BODY,
            responses={200: {"description": "The object is stored", "headers": ETAG}, **ERRORS})
async def put_object(key: str, request: Request, services: ServicesDep, e: int = Query(),
                     c: str = Query("", max_length=200), s: str = Query(max_length=100)) -> Response:
    """A whole object, with exactly the Content-Type the URL was signed for (when it names one)."""
    uploads = local(services)
    sent = request.headers.get("content-type")
    receiver = await anyio.to_thread.run_sync(lambda: uploads.open_object(key, c, e, s, sent))
    etag = await receive(request, receiver)
    return Response(status_code=200, headers={"ETag": etag, **CORS})
