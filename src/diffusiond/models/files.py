"""Model files where the engine can read them: registered paths as they are, blobs copied locally.

Models a job made (a trained LoRA, a merged checkpoint) live in the blob store, registered with a
`blob:<key>` path, so every worker of a fleet finds them. The engine reads local files; this
resolver hands it the blob store's own file when the store is a local folder, and otherwise a copy
downloaded once into the cache folder.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import replace
from pathlib import Path

from diffusiond.blobs.base import BlobStore
from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.engine.context import ModelResolver

BLOB_PREFIX = "blob:"


def blob_path(key: str) -> str:
    """The registry path of a model stored as the blob `key`."""
    return BLOB_PREFIX + key


class LocalModelFiles:
    """A `ModelResolver` whose records always point at local files."""

    def __init__(self, resolver: ModelResolver, blobs: BlobStore, cache_dir: Path) -> None:
        self.resolver = resolver
        self.blobs = blobs
        self.cache_dir = cache_dir
        self._lock = threading.Lock()

    def resolve(self, model_id: str, kind: ModelKind) -> ModelRecord:
        record = self.resolver.resolve(model_id, kind)
        if not record.path.startswith(BLOB_PREFIX):
            return record
        return replace(record, path=str(self.local(record.path.removeprefix(BLOB_PREFIX))))

    def local(self, key: str) -> Path:
        direct = self.blobs.local_path(key)
        if direct is not None:
            return direct
        name = key.rsplit("/", 1)[-1]
        target = self.cache_dir / hashlib.sha256(key.encode()).hexdigest()[:24] / name
        with self._lock:  # blobs are immutable: a file downloaded once stays right
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f".{name}.{os.getpid()}.part")
                self.blobs.get_file(key, partial)
                os.replace(partial, target)
        return target
