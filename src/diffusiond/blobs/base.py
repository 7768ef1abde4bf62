"""The blob store interface."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    """Immutable objects addressed by key. Writes are atomic: a reader sees all bytes or none."""

    def put(self, key: str, data: bytes, mime: str) -> None: ...

    def put_file(self, key: str, path: Path, mime: str) -> None:
        """Store a file without reading it into memory (model files run to gigabytes)."""
        ...

    def get(self, key: str) -> bytes: ...

    def get_file(self, key: str, dest: Path) -> None:
        """Write the blob to `dest` without holding it in memory."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for the blob when the store is local, else None."""
        ...

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        """A direct URL from the store itself (S3), or None when the server must serve it."""
        ...
