"""Blobs in S3 or any S3-compatible store (MinIO, R2, ...), with presigned download URLs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import NotFound

if TYPE_CHECKING:
    from diffusiond.blobs.direct import S3DirectUploads


class S3BlobStore:
    """One bucket (and optional key prefix). PUTs are atomic in S3: readers never see partial objects."""

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 client: Any | None = None) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client: Any = client or boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise NotFound(f"blob {key!r} not found")
        return self.prefix + key

    def direct_uploads(self, max_bytes: int) -> S3DirectUploads:
        """Presigned uploads (whole objects and multipart) into this store's bucket and prefix."""
        from diffusiond.blobs.direct import S3DirectUploads

        return S3DirectUploads(self.client, self.bucket, self.prefix, max_bytes)

    def put(self, key: str, data: bytes, mime: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=mime)

    def put_file(self, key: str, path: Path, mime: str) -> None:
        # upload_file switches to a multipart upload for large files on its own
        self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs={"ContentType": mime})

    def get_file(self, key: str, dest: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._key(key), str(dest))
        except Exception as e:
            if "404" in str(e) or "Not Found" in str(e):
                raise NotFound(f"blob {key!r} not found") from None
            raise

    def get(self, key: str) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            raise NotFound(f"blob {key!r} not found") from None
        data: bytes = obj["Body"].read()
        return data

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception:
            return False

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def local_path(self, key: str) -> Path | None:
        return None

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_in)
        return url
