"""The AWS-extension API's checkpoints and "models", over the core's registry, uploads and intake.

A checkpoint is files uploaded in parts (`Initial`); activating it completes each file's upload
(checking the ETags), checks what was assembled (models/intake.py: safetensors layout, no pickles,
tars unpacked safely) and registers every model file for the tenant (`Active`), usable at once. A
"model" is a checkpoint made ready as a training base (`Initial` -> `Creating` -> `Complete` or
`Fail`). Names are the file names clients gave; `resolve` maps them to the tenant's registered
models (then to the registry's own ids, for shared models and what merges and trainings made).
"""

from __future__ import annotations

import builtins
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from diffusiond.api.esd import translate as t
from diffusiond.blobs.base import BlobStore
from diffusiond.blobs.direct import DirectUploads
from diffusiond.config import Settings
from diffusiond.domain.clock import now_utc
from diffusiond.domain.errors import Conflict, DomainError, InvalidParams, NotFound
from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.models.intake import IntakeLimits, ModelFile, inspect_upload
from diffusiond.models.registry import ModelRegistry
from diffusiond.store.database import Database, as_utc
from diffusiond.store.tables import EsdCheckpointRow, EsdModelRow

INITIAL, ACTIVE, DISABLED = "Initial", "Active", "Disabled"
MODEL_INITIAL, CREATING, COMPLETE, FAIL = "Initial", "Creating", "Complete", "Fail"


@dataclass(frozen=True)
class Checkpoint:
    id: str
    tenant_id: str
    type: str
    status: str
    files: list[dict[str, Any]]  # {filename, parts_number, upload_id, key, completed}
    models: dict[str, str]  # file name -> registry id
    params: dict[str, Any]
    error: str | None
    created_at: datetime


@dataclass(frozen=True)
class EsdModel:
    id: str
    tenant_id: str
    name: str
    model_type: str
    status: str
    checkpoint_id: str
    base_model: str | None
    params: dict[str, Any]
    error: str | None
    created_at: datetime


class Catalog:
    """Checkpoints, models and name lookups of the AWS-extension dialect, per tenant."""

    def __init__(self, db: Database, blobs: BlobStore, uploads: DirectUploads, registry: ModelRegistry,
                 settings: Settings) -> None:
        self.db = db
        self.blobs = blobs
        self.uploads = uploads
        self.registry = registry
        self.settings = settings
        self.limits = IntakeLimits(max_bytes=settings.max_model_bytes, max_members=settings.max_archive_members)
        # One request resolves several names: the tenant's checkpoints are read once per Catalog (which
        # lives for one request); anything that changes them forgets it.
        self._seen: dict[str, builtins.list[Checkpoint]] = {}

    # ---- locations ---------------------------------------------------------------------------------

    def s3_url(self, key: str) -> str:
        """Where a key lives, written as the original writes its locations."""
        bucket = self.settings.s3_bucket or "diffusiond-local"
        prefix = self.settings.s3_prefix.strip("/")
        return f"s3://{bucket}/{prefix + '/' if prefix else ''}{key}"

    def location(self, checkpoint: Checkpoint) -> str:
        return self.s3_url(f"models/{checkpoint.tenant_id}/{checkpoint.id}")

    # ---- checkpoints ---------------------------------------------------------------------------------

    def create(self, tenant_id: str, type_: str, files: Sequence[tuple[str, int]],
               params: dict[str, Any]) -> tuple[Checkpoint, dict[str, list[str]]]:
        """A new `Initial` checkpoint, and the part-upload URLs of each of its files."""
        if not files:
            raise InvalidParams("no checkpoint name (file names) detected", field="filenames")
        names = [t.file_name(name) for name, _ in files]
        if len(set(names)) != len(names):
            raise InvalidParams("filenames: each file name may appear once", field="filenames")
        for name, parts in files:
            if not 1 <= parts <= self.settings.max_model_parts:
                raise InvalidParams(f"{name}: parts_number must be between 1 and {self.settings.max_model_parts}",
                                    field="parts_number")
        checkpoint_id = str(uuid.uuid4())
        expiry = self.settings.url_expiry_seconds
        records: list[dict[str, Any]] = []
        urls: dict[str, list[str]] = {}
        multipart: dict[str, Any] = {}
        for (given, parts), name in zip(files, names, strict=True):
            key = f"staging/{tenant_id}/esd/{checkpoint_id}/{name}"
            upload_id = self.uploads.start(key)
            records.append({"filename": name, "parts_number": parts, "upload_id": upload_id, "key": key,
                            "completed": False})
            urls[given] = [self.uploads.part_url(key, upload_id, n, expiry) for n in range(1, parts + 1)]
            multipart[given] = {"upload_id": upload_id, "bucket": self.settings.s3_bucket or "diffusiond-local",
                                "key": key}
        now = now_utc()
        self._seen.clear()
        shown = {**params, "created": t.start_time(now), "multipart_upload": multipart}
        with self.db.session() as s:
            row = EsdCheckpointRow(id=checkpoint_id, tenant_id=tenant_id, type=type_, status=INITIAL, files=records,
                                   models={}, params=shown, created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            return _checkpoint(row), urls

    def get(self, tenant_id: str, checkpoint_id: str) -> Checkpoint:
        with self.db.read() as s:
            row = s.get(EsdCheckpointRow, checkpoint_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"checkpoint not found with id {checkpoint_id}")
            return _checkpoint(row)

    def activate(self, tenant_id: str, checkpoint_id: str, tags: dict[str, Any]) -> Checkpoint:
        """Complete every file's upload, check what arrived, register its models: `Active`.

        A wrong or missing ETag changes nothing (send the right ones again). A file that completes
        but is not an acceptable model disables the checkpoint with the reason: its bytes are gone.
        """
        checkpoint = self.get(tenant_id, checkpoint_id)
        if checkpoint.status == ACTIVE:
            return checkpoint
        if checkpoint.status != INITIAL:
            raise InvalidParams(f"checkpoint {checkpoint_id} is {checkpoint.status}", code="invalid_status")
        for i, record in enumerate(checkpoint.files):
            if not record.get("completed"):
                self._complete(checkpoint, i, record, tags)
        try:
            models = self._register_all(self.get(tenant_id, checkpoint_id))
        except DomainError as e:
            self._set(checkpoint_id, status=DISABLED, error=e.message)
            raise
        self._set(checkpoint_id, status=ACTIVE, models=models)
        return self.get(tenant_id, checkpoint_id)

    def disable(self, tenant_id: str, checkpoint_id: str) -> Checkpoint:
        checkpoint = self.get(tenant_id, checkpoint_id)
        for record in checkpoint.files:
            if not record.get("completed"):
                self.uploads.abort(record["key"], record["upload_id"])
        self._set(checkpoint_id, status=DISABLED)
        return self.get(tenant_id, checkpoint_id)

    def _complete(self, checkpoint: Checkpoint, index: int, record: dict[str, Any], tags: dict[str, Any]) -> None:
        given = tags.get(record["filename"])
        if not isinstance(given, list) or not given:
            raise InvalidParams(f"multi_parts_tags: no ETags for {record['filename']}", code="invalid_parts",
                                field="multi_parts_tags")
        try:
            parts = [(int(p["PartNumber"]), str(p["ETag"])) for p in given]
        except (KeyError, TypeError, ValueError):
            raise InvalidParams(f"multi_parts_tags: {record['filename']} needs [{{ETag, PartNumber}}, ...]",
                                code="invalid_parts", field="multi_parts_tags") from None
        if len(parts) != record["parts_number"]:
            raise InvalidParams(f"{record['filename']}: {len(parts)} ETags for {record['parts_number']} parts",
                                code="invalid_parts", field="multi_parts_tags")
        self.uploads.complete(record["key"], record["upload_id"], parts)
        with self.db.session() as s:
            row = s.get(EsdCheckpointRow, checkpoint.id, with_for_update=True)
            assert row is not None
            files = [dict(f) for f in row.files]
            files[index]["completed"] = True
            row.files = files
            row.updated_at = now_utc()

    def _register_all(self, checkpoint: Checkpoint) -> dict[str, str]:
        """Check every completed file and register the models in it; all or none."""
        registered: dict[str, str] = {}
        stored: list[str] = []
        try:
            for record in checkpoint.files:
                with self._local_copy(record["key"]) as (path, work):
                    found = inspect_upload(path, record["filename"], work / "unpacked", self.limits)
                    for model in found:
                        self._check_kind(checkpoint, model)
                        model_id, key = self._register(checkpoint, model)
                        stored.append(key)
                        registered[model.name] = model_id
                        registered.setdefault(record["filename"], model_id)  # a tar named like its model
                self.blobs.delete(record["key"])
        except BaseException:
            for model_id in set(registered.values()):
                self.registry.remove(model_id)
            for key in stored:
                self.blobs.delete(key)
            for record in checkpoint.files:
                self.blobs.delete(record["key"])
            raise
        return registered

    @contextmanager
    def _local_copy(self, key: str) -> Iterator[tuple[Path, Path]]:
        work = Path(self.settings.home).resolve() / "cache" / "intake" / uuid.uuid4().hex
        work.mkdir(parents=True)
        try:
            local = self.blobs.local_path(key)
            if local is None or not local.is_file():
                local = work / "upload"
                self.blobs.get_file(key, local)
            yield local, work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _check_kind(checkpoint: Checkpoint, model: ModelFile) -> None:
        wanted = t.KINDS[checkpoint.type]
        if model.kind is not wanted:
            raise InvalidParams(f"{model.name} is a {model.kind.value} file, not the {checkpoint.type} the "
                                "checkpoint was declared as", code="wrong_model_kind", field="checkpoint_type")

    def _register(self, checkpoint: Checkpoint, model: ModelFile) -> tuple[str, str]:
        name = model.name if model.name.lower().endswith(".safetensors") else f"{model.name}.safetensors"
        key = f"models/{checkpoint.tenant_id}/{checkpoint.id}/{name}"
        self.blobs.put_file(key, model.path, "application/octet-stream")
        base = f"esd-{checkpoint.id[:8]}-{t.model_id_part(model.name)}"
        for attempt in range(3):
            model_id = base if attempt == 0 else f"{base}-{uuid.uuid4().hex[:6]}"
            try:
                self.registry.add_blob(key, model_id, model.kind, family=model.family, tenant_id=checkpoint.tenant_id,
                                       name=model.name, description=f"uploaded as checkpoint {checkpoint.id}")
                return model_id, key
            except Conflict:
                continue
        raise Conflict(f"could not register {model.name}", code="model_exists")

    def _set(self, checkpoint_id: str, **values: Any) -> None:
        self._seen.clear()
        with self.db.session() as s:
            row = s.get(EsdCheckpointRow, checkpoint_id, with_for_update=True)
            assert row is not None
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = now_utc()

    def checkpoints(self, tenant_id: str) -> builtins.list[Checkpoint]:
        seen = self._seen.get(tenant_id)
        if seen is None:
            with self.db.read() as s:
                rows = s.scalars(select(EsdCheckpointRow).where(EsdCheckpointRow.tenant_id == tenant_id)
                                 .order_by(EsdCheckpointRow.created_at.desc(), EsdCheckpointRow.id))
                seen = self._seen[tenant_id] = [_checkpoint(r) for r in rows]
        return list(seen)

    def made_models(self, tenant_id: str) -> builtins.list[ModelRecord]:
        """The tenant's own registered models that no checkpoint uploaded: merges and trainings."""
        uploaded = {m for c in self.checkpoints(tenant_id) for m in c.models.values()}
        return [r for r, _ in self.registry.list(tenant_id=tenant_id)
                if r.tenant_id == tenant_id and r.id not in uploaded]

    # ---- names -----------------------------------------------------------------------------------------

    def resolve(self, tenant_id: str, name: str, kind: ModelKind) -> ModelRecord:
        """A model by the name the client knows: an `Active` checkpoint's file name (or its stem), then a
        registry id (shared models, and the tenant's merges and trainings) with or without `.safetensors`."""
        wanted = name.strip()
        stem = _stem(wanted)
        for checkpoint in self.checkpoints(tenant_id):
            if checkpoint.status != ACTIVE or t.KINDS[checkpoint.type] is not kind:
                continue
            for file_name, model_id in checkpoint.models.items():
                if file_name == wanted or _stem(file_name) == stem:
                    return self.registry.resolve_for(tenant_id, model_id, kind)
        for candidate in dict.fromkeys((wanted, stem)):
            try:
                return self.registry.resolve_for(tenant_id, candidate, kind)
            except (NotFound, InvalidParams):
                continue
        raise NotFound(f"{kind.value} {name!r} not found", code="model_not_found")

    def names(self, tenant_id: str, kind: ModelKind) -> builtins.list[str]:
        """Every name `resolve` knows for a kind: uploaded file names, then registry ids."""
        out: builtins.list[str] = []
        uploaded: set[str] = set()
        for checkpoint in self.checkpoints(tenant_id):
            uploaded.update(checkpoint.models.values())
            if checkpoint.status == ACTIVE and t.KINDS[checkpoint.type] is kind:
                out += [n for n in checkpoint.models if n.lower().endswith(".safetensors") and n not in out]
        out += [r.id for r, _ in self.registry.list(kind, tenant_id=tenant_id) if r.id not in uploaded]
        return out

    # ---- models (training bases) -------------------------------------------------------------------------

    def create_model(self, tenant_id: str, name: str, model_type: str, checkpoint_id: str | None,
                     files: Sequence[tuple[str, int]], params: dict[str, Any]) -> tuple[EsdModel, dict[str, list[str]]]:
        urls: dict[str, list[str]] = {}
        if checkpoint_id:
            checkpoint = self.get(tenant_id, checkpoint_id)
            if checkpoint.status != ACTIVE:
                raise InvalidParams(f"checkpoint with id ({checkpoint_id}) is not Active to use",
                                    code="invalid_status", field="checkpoint_id")
        elif files:
            checkpoint, urls = self.create(tenant_id, "Stable-diffusion", files, {"created_for_model": name})
        else:
            raise InvalidParams("either checkpoint_id or filenames need to be provided", field="checkpoint_id")
        if checkpoint.type != "Stable-diffusion":
            raise InvalidParams(f"checkpoint {checkpoint.id} is a {checkpoint.type} checkpoint, not Stable-diffusion",
                                code="wrong_model_kind", field="checkpoint_id")
        now = now_utc()
        with self.db.session() as s:
            row = EsdModelRow(id=str(uuid.uuid4()), tenant_id=tenant_id, name=name, model_type=model_type,
                              status=MODEL_INITIAL, checkpoint_id=checkpoint.id, params=dict(params), created_at=now,
                              updated_at=now)
            s.add(row)
            s.flush()
            return _model(row), urls

    def get_model(self, tenant_id: str, model_id: str) -> EsdModel:
        with self.db.read() as s:
            row = s.get(EsdModelRow, model_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"model with id {model_id} is not found")
            return _model(row)

    def start_model(self, tenant_id: str, model_id: str, tags: dict[str, Any]) -> EsdModel:
        """`Creating`: its checkpoint is completed if it was uploaded for it, checked, and the model is
        `Complete` with the registered checkpoint as its base (or `Fail`, with the reason)."""
        model = self.get_model(tenant_id, model_id)
        if model.status == COMPLETE:
            return model
        if model.status != MODEL_INITIAL:
            raise InvalidParams(f"model {model_id} is {model.status}", code="invalid_status")
        self._set_model(model_id, status=CREATING)
        try:
            checkpoint = self.get(tenant_id, model.checkpoint_id)
            if checkpoint.status == INITIAL:
                checkpoint = self.activate(tenant_id, checkpoint.id, tags)
            if checkpoint.status != ACTIVE:
                raise InvalidParams(f"checkpoint {checkpoint.id} is {checkpoint.status}", code="invalid_status")
            base = next(iter(checkpoint.models.values()))
            record = self.registry.resolve_for(tenant_id, base, ModelKind.CHECKPOINT)
        except DomainError as e:
            if e.code != "invalid_parts":  # the right ETags may still come: it stays Initial
                self._set_model(model_id, status=FAIL, error=e.message)
            else:
                self._set_model(model_id, status=MODEL_INITIAL)
            raise
        config = {"model_name": model.name, "base_model": record.id, "family": record.family,
                  "src": record.name, "resolution": 512, "model_type": model.model_type}
        params = {**model.params, "resp": {"config_dict": config}}
        self._set_model(model_id, status=COMPLETE, base_model=record.id, params=params)
        return self.get_model(tenant_id, model_id)

    def fail_model(self, tenant_id: str, model_id: str) -> EsdModel:
        model = self.get_model(tenant_id, model_id)
        if model.status != COMPLETE:
            self._set_model(model_id, status=FAIL, error="marked Fail by the client")
        return self.get_model(tenant_id, model_id)

    def models(self, tenant_id: str) -> builtins.list[EsdModel]:
        with self.db.read() as s:
            rows = s.scalars(select(EsdModelRow).where(EsdModelRow.tenant_id == tenant_id)
                             .order_by(EsdModelRow.created_at.desc(), EsdModelRow.id))
            return [_model(r) for r in rows]

    def model_output(self, model: EsdModel) -> str:
        return self.s3_url(f"models/{model.tenant_id}/model/{model.name}/{model.id}/output")

    def _set_model(self, model_id: str, **values: Any) -> None:
        with self.db.session() as s:
            row = s.get(EsdModelRow, model_id, with_for_update=True)
            assert row is not None
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = now_utc()


def _stem(name: str) -> str:
    return name[: -len(".safetensors")] if name.lower().endswith(".safetensors") else name


def _checkpoint(row: EsdCheckpointRow) -> Checkpoint:
    return Checkpoint(id=row.id, tenant_id=row.tenant_id, type=row.type, status=row.status,
                      files=[dict(f) for f in row.files or []], models=dict(row.models or {}),
                      params=dict(row.params or {}), error=row.error, created_at=as_utc(row.created_at))


def _model(row: EsdModelRow) -> EsdModel:
    return EsdModel(id=row.id, tenant_id=row.tenant_id, name=row.name, model_type=row.model_type, status=row.status,
                    checkpoint_id=row.checkpoint_id, base_model=row.base_model, params=dict(row.params or {}),
                    error=row.error, created_at=as_utc(row.created_at))
