"""Registering models from local files and resolving ids or aliases to them."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event as sa_event
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from diffusiond.domain.errors import Conflict, InvalidParams, NotFound
from diffusiond.domain.jobs import Job
from diffusiond.domain.merge import MergeSpec
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.spec_codec import spec_from_json
from diffusiond.domain.training import TrainMethod, TrainSpec
from diffusiond.models.files import blob_path
from diffusiond.store.database import Database, as_utc
from diffusiond.store.tables import ModelAliasRow, ModelRow
from diffusiond.ttl_cache import TtlCache

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
PICKLE_SUFFIXES = {".ckpt", ".pt", ".bin", ".pkl", ".pickle"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
MAX_HEADER = 100 * 1024 * 1024


def safetensors_keys(path: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from a .safetensors header, without reading any tensor data."""
    return safetensors_header(path)[0]


def safetensors_header(path: Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Tensor names and shapes, and the metadata, from a .safetensors header (no tensor data read)."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise InvalidParams(f"{path.name} is not a safetensors file", code="invalid_model_file")
        (size,) = struct.unpack("<Q", raw)
        if size > MAX_HEADER:
            raise InvalidParams(f"{path.name} has an oversized header", code="invalid_model_file")
        try:
            header = json.loads(f.read(size))
        except ValueError:
            raise InvalidParams(f"{path.name} is not a safetensors file", code="invalid_model_file") from None
    if not isinstance(header, dict):
        raise InvalidParams(f"{path.name} is not a safetensors file", code="invalid_model_file")
    metadata = header.get("__metadata__")
    meta = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    keys = {k: v.get("shape", []) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    return keys, meta


def detect_checkpoint_family(keys: dict[str, list[int]], metadata: dict[str, str] | None = None) -> str:
    """SD 1.x / 2.x / XL (and inpainting) from the original single-file key layout, or the family a
    self-describing file's embedded config names (a non-standard architecture, e.g. `shapes`)."""
    from diffusiond.engine.single_file import EMBEDDED_CONFIG, embedded_family

    if metadata and EMBEDDED_CONFIG in metadata:
        return embedded_family(metadata[EMBEDDED_CONFIG])
    if any(k.startswith("conditioner.embedders.1") for k in keys):
        return "sdxl"
    ctx = keys.get("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
    if ctx is not None and len(ctx) == 2 and ctx[1] == 1024:
        return "sd2"
    # SD 1.x's text context is 768 wide; a smaller model in its layout (a test model) is no SD 1.x
    if ctx is not None and len(ctx) == 2 and ctx[1] == 768:
        return "sd15"
    return "unknown"


class ModelRegistry:
    """Models in the database; implements the engine's `ModelResolver`.

    Resolved ids are remembered for `cache_seconds`: every request names a model, and the registry
    changes rarely. Changes made through this registry clear the memory at once; changes made by
    another process (the CLI, another replica) are seen within `cache_seconds`.
    """

    def __init__(self, db: Database, cache_seconds: float = 0.0) -> None:
        self.db = db
        self._cache: TtlCache[tuple[str, ModelKind], ModelRecord] = TtlCache(cache_seconds, max_entries=1000)

    # Models are shared (registered by an operator) or owned by one tenant (made by its jobs). Dialects
    # look models up with `resolve_for` and `list(tenant_id=...)`, so another tenant's model is as
    # unknown as one that does not exist; the engine, running a job already checked, uses `resolve`.

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """A unit of work that changes the registry; the resolve cache is dropped when it ends."""
        try:
            with self.db.session() as s:
                yield s
        finally:
            self._cache.clear()

    def add(self, path: Path, model_id: str, kind: ModelKind = ModelKind.CHECKPOINT, *,
            family: str | None = None, name: str = "", description: str = "",
            trigger_words: tuple[str, ...] = (), replace: bool = False) -> ModelRecord:
        """Register a diffusers folder or a single .safetensors / .pth file (pickles refused)."""
        if not _ID.match(model_id):
            raise InvalidParams(f"invalid model id {model_id!r}", code="invalid_model_id")
        path = path.expanduser().resolve()
        fmt, family = self._inspect(path, kind, family)
        record = ModelRecord(id=model_id, kind=kind, format=fmt, path=str(path), family=family,
                             trigger_words=trigger_words, name=name or model_id, description=description)
        with self._writing() as s:
            existing = s.get(ModelRow, model_id)
            if existing is not None and not replace:
                raise InvalidParams(f"model {model_id!r} already exists", code="model_exists")
            if existing is not None:
                s.delete(existing)
                s.flush()
            s.add(ModelRow(id=model_id, kind=kind.value, format=fmt.value, family=family, path=str(path),
                           name=record.name, description=description, trigger_words=list(trigger_words)))
        return record

    def add_blob(self, key: str, model_id: str, kind: ModelKind, *, family: str, tenant_id: str | None,
                 name: str = "", description: str = "", trigger_words: tuple[str, ...] = ()) -> ModelRecord:
        """Register a .safetensors file already stored (and validated) as the blob `key`, owned by
        `tenant_id` (None: shared); every worker of a fleet finds it through the blob store."""
        if not _ID.match(model_id):
            raise InvalidParams(f"invalid model id {model_id!r}", code="invalid_model_id")
        record = ModelRecord(id=model_id, kind=kind, format=ModelFormat.SAFETENSORS, path=blob_path(key),
                             family=family, trigger_words=trigger_words, name=name or model_id,
                             description=description, tenant_id=tenant_id)
        with self._writing() as s:
            if s.get(ModelRow, model_id) is not None or s.get(ModelAliasRow, model_id) is not None:
                raise Conflict(f"model {model_id!r} already exists", code="model_exists")
            s.add(ModelRow(id=model_id, kind=kind.value, format=record.format.value, family=family,
                           path=record.path, name=record.name, description=description,
                           trigger_words=list(trigger_words), tenant_id=tenant_id))
        return record

    def _inspect(self, path: Path, kind: ModelKind, family: str | None) -> tuple[ModelFormat, str]:
        if path.is_dir():
            if kind is ModelKind.CHECKPOINT and not (path / "model_index.json").is_file():
                raise InvalidParams(f"{path} is not a diffusers folder (no model_index.json)",
                                    code="invalid_model_file")
            return ModelFormat.DIFFUSERS, family or self._folder_family(path)
        if not path.is_file():
            raise InvalidParams(f"{path} does not exist", code="invalid_model_file")
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            raise InvalidParams(
                f"{path.name}: pickle model files are never loaded; convert it to .safetensors",
                code="unsafe_model_format")
        if suffix == ".pth":
            if kind is not ModelKind.UPSCALER:
                raise InvalidParams(".pth files are accepted only for upscalers",
                                    code="unsafe_model_format")
            return ModelFormat.PTH, family or "esrgan"
        if suffix != ".safetensors":
            raise InvalidParams(f"unsupported model file type {suffix!r}", code="invalid_model_file")
        keys, metadata = safetensors_header(path)
        if kind is ModelKind.CHECKPOINT and family is None:
            family = detect_checkpoint_family(keys, metadata)
            if family == "unknown":
                raise InvalidParams(f"{path.name} is not a recognised SD 1.x/2.x/XL checkpoint",
                                    code="invalid_model_file")
        return ModelFormat.SAFETENSORS, family or ("esrgan" if kind is ModelKind.UPSCALER else "sd15")

    @staticmethod
    def _folder_family(path: Path) -> str:
        index = json.loads((path / "model_index.json").read_text()) if (path / "model_index.json").is_file() else {}
        if "diffusiond_family" in index:
            return str(index["diffusiond_family"])
        return "sdxl" if "text_encoder_2" in index else "sd15"

    def alias(self, alias: str, model_id: str) -> None:
        if not _ID.match(alias):
            raise InvalidParams(f"invalid alias {alias!r}", code="invalid_model_id")
        with self._writing() as s:
            if s.get(ModelRow, model_id) is None:
                raise NotFound(f"model {model_id!r} not found")
            if s.get(ModelRow, alias) is not None:
                raise InvalidParams(f"{alias!r} is already a model id", code="model_exists")
            row = s.get(ModelAliasRow, alias)
            if row is None:
                s.add(ModelAliasRow(alias=alias, model_id=model_id))
            else:
                row.model_id = model_id

    def remove(self, model_id: str) -> None:
        with self._writing() as s:
            row = s.get(ModelRow, model_id)
            if row is None:
                raise NotFound(f"model {model_id!r} not found")
            for a in s.scalars(select(ModelAliasRow).where(ModelAliasRow.model_id == model_id)):
                s.delete(a)
            s.delete(row)

    def list(self, kind: ModelKind | None = None, *, tenant_id: str | None = None,
             all_tenants: bool = False) -> list[tuple[ModelRecord, list[str]]]:
        """Models with their aliases: the shared ones and `tenant_id`'s own (or all, for operators)."""
        with self.db.read() as s:
            q = select(ModelRow).order_by(ModelRow.kind, ModelRow.id)
            if kind is not None:
                q = q.where(ModelRow.kind == kind.value)
            if not all_tenants:
                q = q.where(or_(ModelRow.tenant_id.is_(None), ModelRow.tenant_id == tenant_id))
            rows = list(s.scalars(q))
            aliases: dict[str, list[str]] = {}
            for a in s.scalars(select(ModelAliasRow).order_by(ModelAliasRow.alias)):
                aliases.setdefault(a.model_id, []).append(a.alias)
            return [(_record(r), aliases.get(r.id, [])) for r in rows]

    def resolve_for(self, tenant_id: str, model_id: str, kind: ModelKind) -> ModelRecord:
        """The model a tenant names: a shared one or its own; another tenant's is NotFound."""
        record = self.resolve(model_id, kind)
        if record.tenant_id is not None and record.tenant_id != tenant_id:
            raise NotFound(f"{kind.value} {model_id!r} not found")
        return record

    def resolve(self, model_id: str, kind: ModelKind) -> ModelRecord:
        """Any registered model by id or alias (no tenant check: for work already authorised)."""
        record = self._cache.get((model_id, kind))
        if record is None:
            record = self._lookup(model_id, kind)
            self._cache.put((model_id, kind), record)
        return record

    def _lookup(self, model_id: str, kind: ModelKind) -> ModelRecord:
        with self.db.read() as s:
            row = self._row(s, model_id)
            if row is None or row.kind != kind.value:
                raise NotFound(f"{kind.value} {model_id!r} not found")
            return _record(row)

    def register_job_output(self, s: Session, job: Job) -> None:
        """Register the model a training or merge job made, owned by its tenant (a success effect).

        Runs in the job's success transaction. The dialect checked the id was free at submit; if the
        tenant took it meanwhile the model is replaced, and if another tenant did (ids are global) it
        is registered under the id with the job's id appended.
        """
        spec = spec_from_json(job.spec_json, job.kind)
        if not isinstance(spec, TrainSpec | MergeSpec) or not spec.output_model or not job.model_files:
            return
        made = job.model_files[0]
        if isinstance(spec, TrainSpec):
            base = self._row(s, spec.base_model)
            kind = ModelKind.LORA if spec.method is TrainMethod.LORA else ModelKind.CHECKPOINT
            trigger = [spec.trigger_word] if spec.trigger_word else []
            what = f"{spec.method.value} trained on {len(spec.images)} images by job {job.id}"
        else:
            base = self._row(s, spec.primary)
            kind, trigger, what = ModelKind.CHECKPOINT, [], f"merged by job {job.id}"
        model_id = spec.output_model
        existing = s.get(ModelRow, model_id)
        if existing is not None and existing.tenant_id == job.tenant_id:
            s.delete(existing)
            s.flush()
        elif existing is not None or s.get(ModelAliasRow, model_id) is not None:
            model_id = f"{model_id}-{job.id[:8]}"
        s.add(ModelRow(id=model_id, kind=kind.value, format=ModelFormat.SAFETENSORS.value,
                       family=base.family if base else "sd15", path=blob_path(made.blob_key),
                       name=spec.output_name or model_id, description=what, trigger_words=trigger,
                       tenant_id=job.tenant_id))
        s.flush()
        sa_event.listen(s, "after_commit", lambda _session: self._cache.clear(), once=True)

    @staticmethod
    def _row(s: Session, model_id: str) -> ModelRow | None:
        row = s.get(ModelRow, model_id)
        if row is None:
            alias = s.get(ModelAliasRow, model_id)
            row = s.get(ModelRow, alias.model_id) if alias is not None else None
        return row

    def register_builtins(self, *, bundled: bool = True) -> None:
        """The built-in lanczos upscaler and, unless `bundled` is False, the bundled models shipped
        in the package (a bundled model registered by an earlier start stays until removed).

        Replicas starting together on a fresh shared database all run this: the one whose insert
        loses the race finds the row on its second try.
        """
        self._ensure(ModelRow(id="lanczos", kind=ModelKind.UPSCALER.value, format=ModelFormat.BUILTIN.value,
                              family="builtin", path="", name="Lanczos", description="Lanczos resampling"))
        shapes = BUNDLED_DIR / "shapes"
        if bundled and (shapes / "model_index.json").is_file():
            # the package may have moved (new checkout, new venv): the path is refreshed every start
            self._ensure(ModelRow(id="shapes", kind=ModelKind.CHECKPOINT.value, format=ModelFormat.DIFFUSERS.value,
                                  family="shapes", path=str(shapes), name="Shapes (bundled)",
                                  description="diffusiond's bundled model: coloured shapes on backgrounds"))

    def _ensure(self, wanted: ModelRow) -> None:
        """Insert `wanted`, or point an existing row of that id at its path."""
        for attempt in range(2):
            try:
                with self._writing() as s:
                    row = s.get(ModelRow, wanted.id)
                    if row is None:
                        s.add(wanted)
                    else:
                        row.path = wanted.path
                return
            except IntegrityError:  # a concurrent start inserted it first
                if attempt:
                    raise


def _record(row: ModelRow) -> ModelRecord:
    return ModelRecord(id=row.id, kind=ModelKind(row.kind), format=ModelFormat(row.format), path=row.path,
                       family=row.family, trigger_words=tuple(row.trigger_words or ()), name=row.name,
                       description=row.description, tenant_id=row.tenant_id,
                       created_at=as_utc(row.created_at) if row.created_at else None)
