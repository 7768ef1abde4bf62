"""Direct uploads: clients PUT bytes straight to storage through signed URLs, whole or in parts.

Two implementations behind one interface, picked in services.py with the blob store:

- `S3DirectUploads`: real S3 presigned URLs, `put_object` for an object and S3 multipart uploads
  (`create_multipart_upload`, presigned `upload_part` per part, `complete_multipart_upload` with the
  client's ETags) for a large file;
- `LocalDirectUploads`: the server signs the URLs itself and serves them (`/v1/uploads/...` in
  app.py). Parts are kept under the staging folder with their MD5 as ETag, quoted as S3 sends it;
  completing checks the ETags and assembles the parts into the blob.

Either way the completed object is a blob at the key asked for, still unchecked: its user (e.g.
models/intake.py) validates it before anything trusts it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from diffusiond.blobs.base import BlobStore
from diffusiond.domain.errors import InvalidParams, NotFound, PayloadTooLarge, Unauthorized

_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_PART_NUMBER = 10_000  # S3's limit


class DirectUploads(Protocol):
    def object_url(self, key: str, *, content_type: str | None, expires_in: int) -> str:
        """A URL the client PUTs one object's bytes to (with exactly `content_type`, when given)."""
        ...

    def start(self, key: str) -> str:
        """Begin a multipart upload to `key`; returns its upload id."""
        ...

    def part_url(self, key: str, upload_id: str, part_number: int, expires_in: int) -> str:
        """A URL the client PUTs part `part_number` (1-based) to; the answer's ETag header names it."""
        ...

    def complete(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> None:
        """Join the parts, in part-number order, into the blob `key`; every ETag must match its part."""
        ...

    def abort(self, key: str, upload_id: str) -> None: ...


def normalize_etag(etag: str) -> str:
    return etag.strip().strip('"').lower()


def check_parts(parts: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    ordered = sorted(parts)
    numbers = [n for n, _ in ordered]
    if not ordered or numbers != list(range(1, len(ordered) + 1)):
        raise InvalidParams("parts must be numbered 1, 2, ... without gaps or repeats", code="invalid_parts")
    return ordered


# ---- S3 -----------------------------------------------------------------------------------------------


class S3DirectUploads:
    """Presigned S3 URLs on the blob store's bucket (and key prefix)."""

    def __init__(self, client: Any, bucket: str, prefix: str, max_bytes: int) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.max_bytes = max_bytes

    def object_url(self, key: str, *, content_type: str | None, expires_in: int) -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key}
        if content_type:
            params["ContentType"] = content_type
        url: str = self.client.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_in)
        return url

    def start(self, key: str) -> str:
        upload_id: str = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.prefix + key)["UploadId"]
        return upload_id

    def part_url(self, key: str, upload_id: str, part_number: int, expires_in: int) -> str:
        url: str = self.client.generate_presigned_url(
            "upload_part", ExpiresIn=expires_in,
            Params={"Bucket": self.bucket, "Key": self.prefix + key, "UploadId": upload_id, "PartNumber": part_number})
        return url

    def complete(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> None:
        from botocore.exceptions import ClientError

        ordered = check_parts(parts)
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{normalize_etag(e)}"'} for n, e in ordered]})
            size = int(self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)["ContentLength"])
        except ClientError as e:
            error = e.response.get("Error", {})
            raise InvalidParams(f"the upload could not be completed: {error.get('Code')}: {error.get('Message')}",
                                code="invalid_parts") from None
        if size > self.max_bytes:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
            raise PayloadTooLarge(f"the file is {size:,} bytes; the most allowed is {self.max_bytes:,}")

    def abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(Exception):  # completed or gone already
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id)


# ---- local: the server signs and receives ---------------------------------------------------------------


class LocalDirectUploads:
    """Signed URLs to this server's `/v1/uploads/...` routes; parts wait under `staging`."""

    def __init__(self, blobs: BlobStore, staging: Path, secret: bytes, base_url: str, *, max_part_bytes: int,
                 max_bytes: int) -> None:
        self.blobs = blobs
        self.staging = staging
        self.secret = secret
        self.base_url = base_url.rstrip("/")
        self.max_part_bytes = max_part_bytes
        self.max_bytes = max_bytes

    def _sig(self, *fields: object) -> str:
        msg = "\n".join(str(f) for f in fields).encode()
        return base64.urlsafe_b64encode(hmac.new(self.secret, msg, hashlib.sha256).digest()).decode().rstrip("=")

    def _verify(self, signature: str, expires: int, *fields: object) -> None:
        # bytes: compare_digest refuses str with non-ASCII characters, and a signature is what the client sent
        expected = self._sig(*fields, expires).encode()
        if expires < time.time() or not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
            raise Unauthorized("the upload URL is invalid or expired", code="invalid_signature")

    # -- URLs

    def object_url(self, key: str, *, content_type: str | None, expires_in: int) -> str:
        expires = int(time.time() + expires_in)
        query = {"e": expires, "c": content_type or "", "s": self._sig("object", key, content_type or "", expires)}
        return f"{self.base_url}/v1/uploads/objects/{quote(key)}?{urlencode(query)}"

    def start(self, key: str) -> str:
        upload_id = uuid.uuid4().hex
        folder = self.staging / upload_id
        folder.mkdir(parents=True)
        (folder / "upload.json").write_text(json.dumps({"key": key}))
        return upload_id

    def part_url(self, key: str, upload_id: str, part_number: int, expires_in: int) -> str:
        expires = int(time.time() + expires_in)
        query = {"e": expires, "s": self._sig("part", upload_id, part_number, expires)}
        return f"{self.base_url}/v1/uploads/parts/{upload_id}/{part_number}?{urlencode(query)}"

    # -- receiving (the routes call these)

    def open_object(self, key: str, content_type: str, expires: int, signature: str,
                    sent_type: str | None) -> Receiver:
        """A receiver for a PUT to an object URL, once its signature checks out."""
        self._verify(signature, expires, "object", key, content_type)
        if content_type and (sent_type or "").lower().replace(" ", "") != content_type.lower().replace(" ", ""):
            raise Unauthorized(f"the upload URL was signed for Content-Type {content_type!r}",
                               code="invalid_signature")
        self.staging.mkdir(parents=True, exist_ok=True)

        def commit(path: Path) -> None:
            try:
                self.blobs.put_file(key, path, content_type or "application/octet-stream")
            finally:
                path.unlink(missing_ok=True)

        return Receiver(self.staging, self.max_part_bytes, commit)

    def open_part(self, upload_id: str, part_number: int, expires: int, signature: str) -> Receiver:
        self._verify(signature, expires, "part", upload_id, part_number)
        folder = self._folder(upload_id)
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise InvalidParams(f"part numbers run from 1 to {MAX_PART_NUMBER}", code="invalid_parts")

        def commit(path: Path) -> None:
            os.replace(path, folder / f"{part_number}.part")

        return Receiver(folder, self.max_part_bytes, commit)

    def _folder(self, upload_id: str) -> Path:
        folder = self.staging / upload_id
        if not _UPLOAD_ID.match(upload_id) or not (folder / "upload.json").is_file():
            raise NotFound("no such upload (it was completed, aborted or never started)", code="no_such_upload")
        return folder

    # -- finishing

    def complete(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> None:
        folder = self._folder(upload_id)
        if json.loads((folder / "upload.json").read_text()).get("key") != key:
            raise NotFound("no such upload for this file", code="no_such_upload")
        ordered = check_parts(parts)
        total = 0
        for number, etag in ordered:
            part = folder / f"{number}.part"
            if not part.is_file():
                raise InvalidParams(f"part {number} was never uploaded", code="invalid_parts")
            if normalize_etag(etag) != file_md5(part):
                raise InvalidParams(f"part {number}: the ETag {etag} does not match the uploaded part",
                                    code="invalid_parts")
            total += part.stat().st_size
        if total > self.max_bytes:
            raise PayloadTooLarge(f"the file is {total:,} bytes; the most allowed is {self.max_bytes:,}")
        assembled = folder / "assembled"
        with assembled.open("wb") as out:
            for number, _ in ordered:
                with (folder / f"{number}.part").open("rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
        self.blobs.put_file(key, assembled, "application/octet-stream")
        shutil.rmtree(folder, ignore_errors=True)  # parts not listed go too, as S3 drops them

    def abort(self, key: str, upload_id: str) -> None:
        if _UPLOAD_ID.match(upload_id):
            shutil.rmtree(self.staging / upload_id, ignore_errors=True)


class Receiver:
    """Streams one PUT body to a temporary file, within a size limit, then commits it."""

    def __init__(self, folder: Path, limit: int, commit: Any) -> None:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".recv-")
        self._file = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.limit = limit
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._commit = commit

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise PayloadTooLarge(f"this upload is larger than {self.limit:,} bytes, the most one PUT may carry")
        self._md5.update(chunk)
        self._file.write(chunk)

    def finish(self) -> str:
        """Commit the bytes; returns their ETag, quoted as S3 sends it."""
        self._file.close()
        etag = f'"{self._md5.hexdigest()}"'
        self._commit(self.path)
        return etag

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
