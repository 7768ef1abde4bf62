"""The AWS-extension API's datasets and trainings, over the core's datasets and `train` jobs.

A dataset's files go straight to storage through signed URLs; `Enabled` checks each one with the
shared image rules and adds it to the core dataset (status words kept as the API spells them:
`Initialed`, `Enabled`, `Disabled`). A training (`Initial`) gathers its pictures from datasets (by
name or `s3://.../dataset/<name>`) and uploaded tar archives, its settings from the DreamBooth
`db_config.json` (in `db_config.tar`, or inline as `params.db_config`), and on `Training` becomes a
core `train` job: a LoRA by default, a full UNet fine-tune with `use_lora: false`. Its status
follows the job (`Complete`, `Fail`); the model it made is registered for the tenant.
"""

from __future__ import annotations

import builtins
import json
import math
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from diffusiond.api.esd import translate as t
from diffusiond.api.esd.catalog import COMPLETE, Catalog
from diffusiond.blobs.base import BlobStore
from diffusiond.blobs.direct import DirectUploads
from diffusiond.blobs.images import UploadRules
from diffusiond.config import Settings
from diffusiond.datasets.service import DatasetService
from diffusiond.domain.clock import now_utc
from diffusiond.domain.datasets import Dataset, DatasetItem
from diffusiond.domain.errors import InvalidParams, NotFound
from diffusiond.domain.jobs import Job, JobKind, JobStatus
from diffusiond.domain.params import ImageRef
from diffusiond.domain.training import (
    MAX_TRAINING_IMAGES,
    MAX_TRAINING_STEPS,
    MixedPrecision,
    TrainingImage,
    TrainMethod,
    TrainSettings,
    TrainSpec,
    check_train_spec,
)
from diffusiond.models.intake import IntakeLimits, unpack_tar
from diffusiond.queue.job_service import JobService
from diffusiond.store.database import Database, as_utc
from diffusiond.store.tables import EsdTrainingRow

INITIALED, ENABLED, DISABLED = "Initialed", "Enabled", "Disabled"
T_INITIAL, TRAINING, T_COMPLETE, T_FAIL = "Initial", "Training", "Complete", "Fail"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
CONFIG_FILE = "db_config.json"


@dataclass(frozen=True)
class Training:
    id: str
    tenant_id: str
    train_type: str
    model_id: str
    status: str  # Initial | Training | Complete | Fail, from the job once there is one
    params: dict[str, Any]
    files: list[str]
    job_id: str | None
    output_model: str | None
    error: str | None
    created_at: datetime


class Trainings:
    def __init__(self, db: Database, blobs: BlobStore, uploads: DirectUploads, datasets: DatasetService,
                 images: UploadRules, catalog: Catalog, jobs: JobService, settings: Settings) -> None:
        self.db = db
        self.blobs = blobs
        self.uploads = uploads
        self.datasets = datasets
        self.images = images
        self.catalog = catalog
        self.jobs = jobs
        self.settings = settings

    # ---- datasets ------------------------------------------------------------------------------------

    def create_dataset(self, tenant_id: str, name: str, content: list[dict[str, Any]],
                       params: dict[str, Any]) -> tuple[Dataset, dict[str, str]]:
        files = [{"given": c["filename"], "filename": t.file_name(c["filename"]), "name": c.get("name") or "",
                  "type": c.get("type") or "image"} for c in content]
        if len({f["filename"] for f in files}) != len(files):
            raise InvalidParams("content: each file name may appear once", field="content")
        if any(k.startswith("_") for k in params):
            raise InvalidParams("params: names starting with _ are reserved", field="params")
        dataset = self.datasets.create(tenant_id, name, status=INITIALED, params={**params, "_content": files})
        urls = {f["given"]: self.uploads.object_url(self._staged(dataset, f["filename"]), content_type=None,
                                                    expires_in=self.settings.url_expiry_seconds) for f in files}
        return dataset, urls

    def _staged(self, dataset: Dataset, filename: str) -> str:
        return f"staging/{dataset.tenant_id}/esd/datasets/{dataset.id}/{filename}"

    def set_dataset_status(self, tenant_id: str, name: str, status: str) -> Dataset:
        """`Enabled` the first time: every uploaded file is checked (all before any is kept) and added."""
        try:
            dataset = self.datasets.named(tenant_id, name)
        except NotFound:
            raise NotFound(f"dataset {name} is not found") from None
        if status == ENABLED and dataset.status == INITIALED:
            files = dataset.params.get("_content", [])
            staged = [(f, self._fetch(dataset, f)) for f in files]
            for f, data in staged:
                self.images.decode(data, field=f["filename"])
            for f, data in staged:
                self.datasets.add_item(tenant_id, dataset.id, data, name=f["filename"],
                                       params={"type": f["type"], "name": f["name"]})
            for f, _ in staged:
                self.blobs.delete(self._staged(dataset, f["filename"]))
        return self.datasets.update(tenant_id, dataset.id, status=status)

    def _fetch(self, dataset: Dataset, f: dict[str, Any]) -> bytes:
        key = self._staged(dataset, f["filename"])
        try:
            data = self.blobs.get(key)
        except NotFound:
            raise InvalidParams(f"{f['given']} was never uploaded to its URL", code="missing_upload",
                                field="content") from None
        if len(data) > self.images.max_bytes:
            raise InvalidParams(f"{f['given']}: {len(data):,} bytes; an image may have {self.images.max_bytes:,}",
                                code="invalid_file_size", field="content")
        return data

    def dataset_items(self, tenant_id: str, name: str) -> tuple[Dataset, builtins.list[DatasetItem]]:
        try:
            dataset = self.datasets.named(tenant_id, name)
        except NotFound:
            raise NotFound(f"dataset {name} is not found") from None
        return dataset, self.datasets.items(tenant_id, dataset.id)

    # ---- trainings -----------------------------------------------------------------------------------

    def create(self, tenant_id: str, train_type: str, model_id: str, params: dict[str, Any],
               filenames: builtins.list[str]) -> tuple[Training, dict[str, str]]:
        model = self.catalog.get_model(tenant_id, model_id)
        if model.status != COMPLETE:
            raise InvalidParams(f"model {model_id} is in {model.status} state, not valid to be used for train",
                                code="invalid_status", field="model_id")
        names = [t.file_name(f) for f in filenames]
        if len(set(names)) != len(names):
            raise InvalidParams("filenames: each file name may appear once", field="filenames")
        training_id = str(uuid.uuid4())
        urls = {given: self.uploads.object_url(self._input(tenant_id, training_id, name), content_type=None,
                                               expires_in=self.settings.url_expiry_seconds)
                for given, name in zip(filenames, names, strict=True)}
        now = now_utc()
        with self.db.session() as s:
            row = EsdTrainingRow(id=training_id, tenant_id=tenant_id, train_type=train_type, model_id=model_id,
                                 status=T_INITIAL, params=dict(params), files=names, created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            return _training(row), urls

    def input_location(self, training: Training) -> str:
        return self.catalog.s3_url(f"staging/{training.tenant_id}/esd/train/{training.id}")

    @staticmethod
    def _input(tenant_id: str, training_id: str, name: str) -> str:
        return f"staging/{tenant_id}/esd/train/{training_id}/{name}"

    def get(self, tenant_id: str, training_id: str) -> Training:
        with self.db.read() as s:
            row = s.get(EsdTrainingRow, training_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"train job with id {training_id} is not found")
            training = _training(row)
        return self._with_job(training, self._job(training))

    def start(self, tenant_id: str, training_id: str) -> Training:
        """`Training`: the inputs are gathered and checked, and the core `train` job submitted."""
        training = self.get(tenant_id, training_id)
        if training.status != T_INITIAL:
            return training
        model = self.catalog.get_model(tenant_id, training.model_id)
        if model.status != COMPLETE or model.base_model is None:
            raise InvalidParams(f"model {model.id} is in {model.status} state, not valid to be used for train",
                                code="invalid_status", field="model_id")
        work = Path(self.settings.home).resolve() / "cache" / "train-inputs" / uuid.uuid4().hex
        stored: builtins.list[str] = []
        try:
            config = self._config(training, work)
            spec = self._spec(training, model.base_model, model.name, config, work, stored)
            check_train_spec(spec)
            job = self.jobs.submit(tenant_id, spec, dialect="esd", parent_id=training.id)
        except BaseException:
            for key in stored:
                self.blobs.delete(key)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._set(training.id, status=TRAINING, job_id=job.id, output_model=spec.output_model)
        return self.get(tenant_id, training_id)

    def fail(self, tenant_id: str, training_id: str) -> Training:
        training = self.get(tenant_id, training_id)
        if training.job_id is not None and training.status == TRAINING:
            self.jobs.cancel(tenant_id, training.job_id)
        if training.status in (T_INITIAL, TRAINING):
            self._set(training.id, status=T_FAIL, error="marked Fail by the client")
        return self.get(tenant_id, training_id)

    def list(self, tenant_id: str) -> builtins.list[Training]:
        with self.db.read() as s:
            rows = s.scalars(select(EsdTrainingRow).where(EsdTrainingRow.tenant_id == tenant_id)
                             .order_by(EsdTrainingRow.created_at.desc(), EsdTrainingRow.id))
            trainings = [_training(r) for r in rows]
        jobs, _ = self.jobs.list(tenant_id, dialect="esd", kinds=[JobKind.TRAIN], limit=10_000)
        by_id = {j.id: j for j in jobs}
        return [self._with_job(tr, by_id.get(tr.job_id or "")) for tr in trainings]

    def _job(self, training: Training) -> Job | None:
        if training.job_id is None:
            return None
        try:
            return self.jobs.get(training.tenant_id, training.job_id)
        except NotFound:
            return None

    @staticmethod
    def _with_job(training: Training, job: Job | None) -> Training:
        if job is None or training.status != TRAINING:
            return training
        from dataclasses import replace

        if job.status is JobStatus.SUCCEEDED:
            return replace(training, status=T_COMPLETE)
        if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
            return replace(training, status=T_FAIL, error=job.error_message)
        return training

    def _set(self, training_id: str, **values: Any) -> None:
        with self.db.session() as s:
            row = s.get(EsdTrainingRow, training_id, with_for_update=True)
            assert row is not None
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = now_utc()

    # ---- gathering a training's inputs -------------------------------------------------------------------

    def _config(self, training: Training, work: Path) -> dict[str, Any]:
        """The DreamBooth config: `params.db_config` (or `config_params`), else db_config.json from a tar."""
        for key in ("db_config", "config_params"):
            inline = training.params.get(key)
            if isinstance(inline, dict):
                return inline
        for name in training.files:
            if name.endswith(".json") or "config" in name:
                path = self._download(training, name, work)
                if name.endswith(".json"):
                    return _json_object(path.read_bytes(), name)
                for member in unpack_tar(path, work / "config", self._limits()):
                    if member.name == CONFIG_FILE:
                        return _json_object(member.read_bytes(), CONFIG_FILE)
                raise InvalidParams(f"{name} holds no {CONFIG_FILE}", code="invalid_training_data", field="filenames")
        return {}

    def _download(self, training: Training, name: str, work: Path) -> Path:
        work.mkdir(parents=True, exist_ok=True)
        path = work / f"{uuid.uuid4().hex}-{name}"
        try:
            self.blobs.get_file(self._input(training.tenant_id, training.id, name), path)
        except NotFound:
            raise InvalidParams(f"{name} was never uploaded to its URL", code="missing_upload",
                                field="filenames") from None
        return path

    def _limits(self) -> IntakeLimits:
        return IntakeLimits(max_bytes=self.images.max_bytes * MAX_TRAINING_IMAGES, max_members=4 * MAX_TRAINING_IMAGES)

    def _spec(self, training: Training, base_model: str, model_name: str, config: dict[str, Any], work: Path,
              stored: builtins.list[str]) -> TrainSpec:
        tp = training.params.get("training_params") or {}
        if not isinstance(tp, dict):
            raise InvalidParams("params.training_params must be an object", field="training_params")
        concept = (config.get("concepts_list") or [{}])[0]
        if not isinstance(concept, dict):
            raise InvalidParams("concepts_list[0] must be an object", field="concepts_list")
        prompt = str(concept.get("instance_prompt") or "")
        trigger = str(tp.get("trigger_word") or concept.get("instance_token") or "").strip()
        images = self._images(training, tp, concept, prompt, work, stored)
        use_lora = _flag(config.get("use_lora", tp.get("model_type", "Lora") == "Lora"))
        name = str(tp.get("model_name") or config.get("model_name") or model_name)
        settings = train_settings(config, len(images), use_lora)
        seed = int(config.get("seed") or 0)
        return TrainSpec(base_model=base_model, images=tuple(images), trigger_word=trigger, settings=settings,
                         method=TrainMethod.LORA if use_lora else TrainMethod.FULL,
                         output_model=f"{t.model_id_part(name)}-{training.id[:8]}", output_name=name,
                         seed=max(seed, 0))

    def _images(self, training: Training, tp: dict[str, Any], concept: dict[str, Any], prompt: str, work: Path,
                stored: builtins.list[str]) -> builtins.list[TrainingImage]:
        sources = [str(s) for key in ("dataset_name", "s3_data_path_list", "data_tar_list")
                   for s in _as_list(tp.get(key))]
        if concept.get("instance_data_dir"):
            sources.append(str(concept["instance_data_dir"]))
        sources += [n for n in training.files if n.endswith(".tar") and "config" not in n and n not in sources]
        images: builtins.list[TrainingImage] = []
        for source in dict.fromkeys(sources):
            base = source.rstrip("/").rsplit("/", 1)[-1]
            if base in training.files:
                images += self._tar_images(training, base, prompt, work, stored)
                continue
            try:
                dataset = self.datasets.named(training.tenant_id, base)
            except NotFound:
                raise InvalidParams(f"training data {source!r}: no dataset or uploaded file of that name",
                                    code="invalid_training_data", field="training_params") from None
            images += [TrainingImage(i.training_image().image, i.caption or prompt)
                       for i in self.datasets.items(training.tenant_id, dataset.id)]
        return images

    def _tar_images(self, training: Training, name: str, prompt: str, work: Path,
                    stored: builtins.list[str]) -> builtins.list[TrainingImage]:
        """The pictures of an uploaded tar, each checked by the shared image rules; a `.txt` beside a
        picture is its caption."""
        archive = self._download(training, name, work)
        files = unpack_tar(archive, work / uuid.uuid4().hex, self._limits())
        captions = {f.with_suffix(""): f.read_text(errors="replace").strip() for f in files if f.suffix == ".txt"}
        out: builtins.list[TrainingImage] = []
        for f in sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES):
            png, width, height = self.images.reencode(f.read_bytes(), field=f.name)
            key = f"inputs/{training.tenant_id}/esd/train/{training.id}/{len(stored)}.png"
            self.blobs.put(key, png, "image/png")
            stored.append(key)
            out.append(TrainingImage(ImageRef(key, width, height), captions.get(f.with_suffix(""), prompt)))
        return out


def train_settings(config: dict[str, Any], images: int, use_lora: bool) -> TrainSettings:
    """The DreamBooth extension's knobs as the core's settings (README, "Training through the AWS
    extension API"): steps from `max_train_steps`, else epochs over the pictures."""
    try:
        batch = max(1, int(config.get("train_batch_size") or 1))
        steps = int(config.get("max_train_steps") or 0)
        if steps <= 0:
            epochs = int(config.get("num_train_epochs") or 100)
            steps = epochs * max(1, math.ceil(images / batch))
        lr_key = "lora_learning_rate" if use_lora and config.get("lora_learning_rate") else "learning_rate"
        default_lr = 1e-4 if use_lora else 2e-6
        rank = int(config.get("lora_unet_rank") or 8)
        precision = str(config.get("mixed_precision") or "auto").lower()
        return TrainSettings(
            steps=min(steps, MAX_TRAINING_STEPS), learning_rate=float(config.get(lr_key) or default_lr),
            rank=rank, alpha=float(config.get("lora_alpha") or rank), batch_size=batch,
            resolution=int(config.get("resolution") or 512),
            train_text_encoder=_flag(config.get("train_text_encoder", False)),
            gradient_checkpointing=_flag(config.get("gradient_checkpointing", False)),
            mixed_precision=MixedPrecision(precision) if precision in {m.value for m in MixedPrecision}
            else MixedPrecision.AUTO,
            checkpoint_every=int(config.get("save_every_n_steps") or 50))
    except (TypeError, ValueError) as e:
        raise InvalidParams(f"db_config: {e}", code="invalid_params", field="db_config") from None


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _as_list(value: Any) -> builtins.list[Any]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _json_object(data: bytes, name: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise InvalidParams(f"{name} is not JSON", code="invalid_training_data", field="filenames") from None
    if not isinstance(value, dict):
        raise InvalidParams(f"{name} must hold a JSON object", code="invalid_training_data", field="filenames")
    return value


def _training(row: EsdTrainingRow) -> Training:
    return Training(id=row.id, tenant_id=row.tenant_id, train_type=row.train_type, model_id=row.model_id,
                    status=row.status, params=dict(row.params or {}), files=list(row.files or []), job_id=row.job_id,
                    output_model=row.output_model, error=row.error, created_at=as_utc(row.created_at))
