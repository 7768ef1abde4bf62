"""Input resources: uploaded images a job refers to by `resourceId`.

Two ways in, as in the seed's integration flow: `POST /v1/resource/image` creates a resource and
returns a signed `putUrl` to PUT the bytes to (no API key needed, like a presigned S3 URL), or
`POST /v1/resource/image/upload` takes a multipart file in one step. Either way the bytes are
validated (size, sniffed type, dimensions, decompression bombs) and re-encoded as PNG.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

from diffusiond.api.jobs import schemas as w
from diffusiond.api.jobs.translate import Resource
from diffusiond.blobs.base import BlobStore
from diffusiond.blobs.images import UploadRules
from diffusiond.blobs.signing import UrlSigner
from diffusiond.domain.errors import InvalidParams, NotFound, Unauthorized
from diffusiond.domain.params import ImageRef
from diffusiond.store.database import Database
from diffusiond.store.tables import ResourceRow

DEFAULT_PUT_EXPIRY = 3600
MAX_PUT_EXPIRY = 7 * 24 * 3600


@dataclass(frozen=True)
class StoredResource:
    id: str
    tenant_id: str
    status: str  # pending | ready
    blob_key: str | None
    width: int | None
    height: int | None


class ResourceStore:
    """Resource rows plus their blobs; a tenant only ever sees its own."""

    def __init__(self, db: Database, blobs: BlobStore, signer: UrlSigner, uploads: UploadRules) -> None:
        self.db = db
        self.blobs = blobs
        self.signer = signer
        self.uploads = uploads

    def create(self, tenant_id: str) -> StoredResource:
        rid = uuid.uuid4().hex
        with self.db.session() as s:
            s.add(ResourceRow(id=rid, tenant_id=tenant_id, status="pending"))
        return StoredResource(rid, tenant_id, "pending", None, None, None)

    def get(self, tenant_id: str, resource_id: str) -> StoredResource:
        with self.db.session() as s:
            row = s.get(ResourceRow, resource_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"resource {resource_id} not found")
            return StoredResource(row.id, row.tenant_id, row.status, row.blob_key, row.width, row.height)

    def for_job(self, tenant_id: str, resource_id: str) -> Resource:
        """The uploaded image a job names; 400 when it is unknown or has no bytes yet."""
        try:
            res = self.get(tenant_id, resource_id)
        except NotFound:
            raise InvalidParams(f"resource {resource_id!r} not found", code="invalid_resource",
                                field="resourceId") from None
        if res.status != "ready" or res.blob_key is None or res.width is None or res.height is None:
            raise InvalidParams(f"resource {resource_id!r} has no uploaded image yet", code="invalid_resource",
                                field="resourceId")
        return Resource(ImageRef(res.blob_key, res.width, res.height), res.width, res.height)

    def store(self, tenant_id: str, resource_id: str, data: bytes, declared_mime: str | None) -> StoredResource:
        """Validate, re-encode and attach the image; a resource takes bytes once."""
        res = self.get(tenant_id, resource_id)
        if res.status != "pending":
            raise InvalidParams(f"resource {resource_id} already has an image", code="resource_uploaded")
        return self._attach(tenant_id, resource_id, *self.uploads.reencode(data, declared_mime, keep_alpha=True))

    def upload(self, tenant_id: str, data: bytes, declared_mime: str | None) -> StoredResource:
        """One step: validate first, so a refused upload leaves no resource behind."""
        png, width, height = self.uploads.reencode(data, declared_mime, keep_alpha=True)
        return self._attach(tenant_id, self.create(tenant_id).id, png, width, height)

    def _attach(self, tenant_id: str, resource_id: str, png: bytes, width: int, height: int) -> StoredResource:
        # A key per upload: two racing PUTs each write their own blob, and only one row update wins.
        key = f"inputs/{tenant_id}/{resource_id}-{uuid.uuid4().hex[:8]}.png"
        self.blobs.put(key, png, "image/png")
        try:
            with self.db.session() as s:
                row = s.get(ResourceRow, resource_id, with_for_update=True)
                assert row is not None
                if row.status != "pending":
                    raise InvalidParams(f"resource {resource_id} already has an image", code="resource_uploaded")
                row.status, row.blob_key, row.mime = "ready", key, "image/png"
                row.width, row.height, row.size = width, height, len(png)
        except BaseException:
            self.blobs.delete(key)
            raise
        return self.get(tenant_id, resource_id)

    # The PUT URL is signed like blob URLs but over a distinct message, so neither verifies as the other.
    def _put_sig(self, resource_id: str, tenant_id: str, expires: int) -> str:
        msg = f"put\n{resource_id}\n{tenant_id}\n{expires}".encode()
        digest = hmac.new(self.signer.secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def put_url(self, res: StoredResource, expire_sec: int | None) -> tuple[str, int]:
        seconds = min(max(expire_sec or DEFAULT_PUT_EXPIRY, 60), MAX_PUT_EXPIRY)
        expires = int(time.time()) + seconds
        query = urlencode({"t": res.tenant_id, "e": expires, "s": self._put_sig(res.id, res.tenant_id, expires)})
        return f"{self.signer.base_url}/v1/resource/image/{res.id}?{query}", expires

    def verify_put(self, resource_id: str, tenant_id: str, expires: int, signature: str) -> None:
        # compare_digest takes str only when it is ASCII; a signature is, so any other is wrong.
        if expires < time.time() or not signature.isascii() or not hmac.compare_digest(
                self._put_sig(resource_id, tenant_id, expires), signature):
            raise Unauthorized("invalid or expired upload URL")


def resource_public(res: StoredResource, put: tuple[str, int] | None = None) -> w.ResourcePublic:
    out = w.ResourcePublic(resourceId=res.id, status=res.status.upper())
    if put is not None:
        out.putUrl, out.expiredIn = put[0], str(put[1] * 1000)
        out.headers = {"Content-Type": "image/png"}
    if res.width is not None and res.height is not None:
        out.meta = w.ResourceMeta(image=w.ImageMeta(format="png", width=res.width, height=res.height))
    return out
