"""Custom models on the core: a model is a dataset, a training a `train` job, a prediction a `generate` job.

Every lookup is the tenant's own: another tenant's id, a soft-deleted one and an id the core keeps
for another dialect (a `/v1/jobs` job, another dialect's dataset) are all NotFound, with this API's
codes. Nothing is written before a request is known to be valid: an upload is validated before it
is stored, and a training's pictures are copied only after its spec is checked (and removed again
if the submit is refused).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace

from diffusiond.api.custom import schemas as w
from diffusiond.api.custom import translate as t
from diffusiond.domain.datasets import Dataset, DatasetItem
from diffusiond.domain.errors import Conflict, DomainError, InvalidParams, NotFound
from diffusiond.domain.jobs import Job, JobKind, JobStatus
from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.domain.params import ImageRef, LoraRef
from diffusiond.domain.training import (
    MAX_TRAINING_IMAGES,
    TrainingImage,
    TrainSpec,
    caption_with_trigger,
    check_train_spec,
)
from diffusiond.services import Services

DIALECT = "custom"
MODEL_STATUS = "custom_model"  # the datasets this API made (other dialects' datasets are not models here)
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # ids this API hands out; anything else cannot exist
_LIST_LIMIT = 1000


class Unavailable(DomainError):
    status = 503
    code = "unavailable"


@dataclass(frozen=True)
class Mixed:
    """A succeeded training chosen by a prediction, and the LoRA it made."""

    training: Job
    lora: ModelRecord
    base_model: str
    scale: float


class CustomModelService:
    """The custom-model API's operations over the core's datasets, jobs and model registry."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.datasets = services.datasets
        self.jobs = services.jobs
        self.models = services.models
        self.blobs = services.blobs

    # ---- models ----------------------------------------------------------------------------------

    def create_model(self, tenant_id: str, display_name: str, model_type: str | None) -> Dataset:
        params: dict[str, object] = {"displayName": display_name}
        if model_type is not None:
            params["customModelType"] = model_type
        # Display names need not be unique; the dataset's own name is a fresh id.
        return self.datasets.create(tenant_id, f"custom-model-{uuid.uuid4().hex}", status=MODEL_STATUS, params=params)

    def model(self, tenant_id: str, model_id: str) -> Dataset:
        missing = NotFound(f"model {model_id[:64]!r} not found", code="model_not_found")
        if not _ID.fullmatch(model_id):
            raise missing
        try:
            model = self.datasets.get(tenant_id, model_id)
        except NotFound:
            raise missing from None
        if model.status != MODEL_STATUS:
            raise missing
        return model

    def rename(self, tenant_id: str, model_id: str, display_name: str) -> Dataset:
        self.model(tenant_id, model_id)
        return self.datasets.update(tenant_id, model_id, params={"displayName": display_name})

    def delete_model(self, tenant_id: str, model_id: str) -> None:
        """Soft delete: the model, its pictures, trainings and predictions stay in the database."""
        self.model(tenant_id, model_id)
        self.datasets.soft_delete(tenant_id, model_id)

    # ---- training images -------------------------------------------------------------------------

    def add_image(self, tenant_id: str, model_id: str, data: bytes, declared_mime: str | None) -> DatasetItem:
        model = self.model(tenant_id, model_id)
        if model.item_count >= MAX_TRAINING_IMAGES:
            raise Conflict(f"a model holds at most {MAX_TRAINING_IMAGES} training images; delete some first",
                                code="too_many_training_images")
        return self.datasets.add_item(tenant_id, model_id, data, declared_mime)

    def images(self, tenant_id: str, model_id: str) -> list[DatasetItem]:
        self.model(tenant_id, model_id)
        return self.datasets.items(tenant_id, model_id)

    def image(self, tenant_id: str, model_id: str, data_id: str) -> DatasetItem:
        self.model(tenant_id, model_id)
        missing = NotFound(f"training image {data_id[:64]!r} not found", code="data_not_found")
        if not _ID.fullmatch(data_id):
            raise missing
        try:
            return self.datasets.item(tenant_id, model_id, data_id)
        except NotFound:
            raise missing from None

    def replace_image(self, tenant_id: str, model_id: str, data_id: str, data: bytes,
                      declared_mime: str | None) -> DatasetItem:
        self.image(tenant_id, model_id, data_id)
        return self.datasets.replace_item(tenant_id, model_id, data_id, data, declared_mime)

    def delete_image(self, tenant_id: str, model_id: str, data_id: str) -> None:
        """Permanent. Trainings already started keep their own copy (see `start_training`)."""
        self.image(tenant_id, model_id, data_id)
        self.datasets.delete_item(tenant_id, model_id, data_id)

    # ---- trainings -------------------------------------------------------------------------------

    def base_model(self, tenant_id: str) -> ModelRecord:
        settings = self.services.settings
        base = settings.custom_base_model or settings.default_model
        try:
            return self.models.resolve_for(tenant_id, base, ModelKind.CHECKPOINT)
        except NotFound:
            raise Unavailable(f"the base model for trainings ({base!r}) is not installed on this server",
                              code="base_model_unavailable") from None

    def start_training(self, tenant_id: str, model_id: str, body: w.TrainingCreate) -> Job:
        """A `train` job on a snapshot of the model's current pictures, with a new trigger word."""
        model = self.model(tenant_id, model_id)
        items = self.datasets.items(tenant_id, model_id)
        least = self.services.settings.custom_min_images
        if len(items) < least:
            raise Conflict(f"a training needs at least {least} training images; this model has {len(items)}",
                                code="not_enough_training_images")
        if len(items) > MAX_TRAINING_IMAGES:
            raise Conflict(f"a training takes at most {MAX_TRAINING_IMAGES} images; this model has {len(items)}",
                                code="too_many_training_images")
        base = self.base_model(tenant_id)
        trigger = t.trigger_word(self.trigger_words(tenant_id))
        name = str(model.params.get("displayName", model_id))
        draft = TrainSpec(base_model=base.id, images=tuple(i.training_image() for i in items), trigger_word=trigger,
                          settings=t.training_settings(body, base.family),
                          output_model=f"custom-{uuid.uuid4().hex[:24]}", output_name=f"{name} ({trigger})"[:200])
        check_train_spec(draft)
        images = self.snapshot(tenant_id, items, trigger)
        try:
            return self.jobs.submit(tenant_id, replace(draft, images=images), dialect=DIALECT, parent_id=model_id)
        except BaseException:
            for image in images:
                self.blobs.delete(image.image.blob_key)
            raise

    def snapshot(self, tenant_id: str, items: list[DatasetItem], trigger: str) -> tuple[TrainingImage, ...]:
        """Copies of the pictures a training learns from: replacing or deleting a picture later does
        not change a training already started (or its history)."""
        folder = f"inputs/{tenant_id}/trainings/{uuid.uuid4().hex}"
        images: list[TrainingImage] = []
        try:
            for item in items:
                key = f"{folder}/{item.id}.png"
                local = self.blobs.local_path(item.blob_key)
                if local is not None:
                    self.blobs.put_file(key, local, "image/png")
                else:
                    self.blobs.put(key, self.blobs.get(item.blob_key), "image/png")
                images.append(TrainingImage(ImageRef(key, item.width, item.height),
                                            caption_with_trigger(item.caption, trigger)))
        except BaseException:
            for image in images:
                self.blobs.delete(image.image.blob_key)
            raise
        return tuple(images)

    def trigger_words(self, tenant_id: str) -> set[str]:
        """Trigger words the tenant can use or will have: its (and shared) LoRAs', and its trainings'
        still queued or running. A failed or canceled training made no model, so its word is free."""
        words = {word for record, _ in self.models.list(ModelKind.LORA, tenant_id=tenant_id)
                 for word in record.trigger_words}
        for status in (JobStatus.QUEUED, JobStatus.RUNNING):
            jobs, _ = self.jobs.list(tenant_id, status=status, dialect=DIALECT, limit=_LIST_LIMIT)
            words |= {t.train_spec(j).trigger_word for j in jobs if j.kind is JobKind.TRAIN}
        return words

    def trainings(self, tenant_id: str, model_id: str) -> list[Job]:
        self.model(tenant_id, model_id)
        jobs, _ = self.jobs.list(tenant_id, parent_id=model_id, dialect=DIALECT, limit=_LIST_LIMIT)
        return [j for j in jobs if j.kind is JobKind.TRAIN]

    def training(self, tenant_id: str, model_id: str, training_id: str) -> Job:
        self.model(tenant_id, model_id)
        missing = NotFound(f"training {training_id[:64]!r} not found", code="training_not_found")
        if not _ID.fullmatch(training_id):
            raise missing
        try:
            job = self.jobs.get(tenant_id, training_id, with_queue=True)
        except NotFound:
            raise missing from None
        if job.kind is not JobKind.TRAIN or job.dialect != DIALECT or job.parent_id != model_id:
            raise missing
        return job

    def cancel_training(self, tenant_id: str, model_id: str, training_id: str) -> Job:
        """A queued training stops at once, a running one between two steps; credits are released."""
        job = self.training(tenant_id, model_id, training_id)
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            raise Conflict(f"training {training_id} already {job.status.value}", code="training_finished")
        try:
            self.jobs.cancel(tenant_id, training_id)
        except InvalidParams as e:  # it finished meanwhile
            raise Conflict(e.message, code="training_finished") from None
        return self.training(tenant_id, model_id, training_id)

    def delete_training(self, tenant_id: str, model_id: str, training_id: str) -> None:
        """Soft delete: hidden, kept; a running training is not canceled. Its model can no longer be
        used in new predictions."""
        self.training(tenant_id, model_id, training_id)
        self.jobs.hide(tenant_id, training_id)

    # ---- predictions -----------------------------------------------------------------------------

    def predict(self, tenant_id: str, body: w.PredictionCreate) -> Job:
        mixed = [self.mixed(tenant_id, c) for _, c in sorted(body.scaleConfigs.items())]
        if mixed:
            families = {m.lora.family for m in mixed}
            if len(families) > 1:
                raise InvalidParams(f"scaleConfigs: these trainings are for different base model families "
                                    f"({', '.join(sorted(families))}) and cannot be mixed",
                                    code="incompatible_trainings", field="scaleConfigs")
            base = self.models.resolve(mixed[0].base_model, ModelKind.CHECKPOINT)
        else:
            base = self.base_model(tenant_id)
        loras = tuple(LoraRef(m.lora.id, m.scale) for m in mixed)
        spec = t.prediction_spec(body, base.id, base.family, loras)
        return self.jobs.submit(tenant_id, spec, dialect=DIALECT)

    def mixed(self, tenant_id: str, config: w.ScaleConfig) -> Mixed:
        """The training a scale config names (or its model's newest succeeded one) and its LoRA."""
        if config.trainingId is not None:
            job = self.training(tenant_id, config.modelId, config.trainingId)
        else:
            self.model(tenant_id, config.modelId)
            done, _ = self.jobs.list(tenant_id, parent_id=config.modelId, dialect=DIALECT,
                                     status=JobStatus.SUCCEEDED, limit=_LIST_LIMIT)
            trained = [j for j in done if j.kind is JobKind.TRAIN]
            if not trained:
                raise Conflict(f"model {config.modelId} has no succeeded training yet", code="training_not_ready")
            job = trained[0]
        if job.status is not JobStatus.SUCCEEDED:
            raise Conflict(f"training {job.id} is {t.STATUS_WORDS[job.status].value}; only a succeeded "
                           "training can be used", code="training_not_ready")
        spec = t.train_spec(job)
        lora = self.trained_model(tenant_id, job, spec)
        try:
            self.models.resolve(spec.base_model, ModelKind.CHECKPOINT)
        except NotFound:
            raise Conflict(f"training {job.id} was made for base model {spec.base_model!r}, which is no longer "
                           "installed", code="base_model_removed") from None
        return Mixed(job, lora, spec.base_model, config.scale)

    def trained_model(self, tenant_id: str, job: Job, spec: TrainSpec) -> ModelRecord:
        # The registry appends the job's id when the output id was taken by another tenant meanwhile.
        for model_id in (spec.output_model, f"{spec.output_model}-{job.id[:8]}"):
            try:
                return self.models.resolve_for(tenant_id, model_id, ModelKind.LORA)
            except NotFound:
                continue
        raise Conflict(f"training {job.id} succeeded but made no model", code="training_not_ready")

    def prediction(self, tenant_id: str, prediction_id: str) -> Job:
        missing = NotFound(f"prediction {prediction_id[:64]!r} not found", code="prediction_not_found")
        if not _ID.fullmatch(prediction_id):
            raise missing
        try:
            job = self.jobs.get(tenant_id, prediction_id)
        except NotFound:
            raise missing from None
        if job.kind is not JobKind.GENERATE or job.dialect != DIALECT:
            raise missing
        return job

    def delete_prediction(self, tenant_id: str, prediction_id: str) -> None:
        self.prediction(tenant_id, prediction_id)
        self.jobs.hide(tenant_id, prediction_id)
