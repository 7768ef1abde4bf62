"""Custom-model wire types <-> core types: bodies to training settings and generation specs, core
datasets and jobs to the seed's objects.

A custom model is a dataset of the tenant's pictures (its display name and type in the dataset's
params), a training is a `train` job whose parent is the model, a prediction is a `generate` job.
"""

from __future__ import annotations

import math
import secrets
import string
import time
from collections.abc import Collection
from datetime import UTC, datetime
from typing import TypeVar

import pydantic

from diffusiond.api.custom import schemas as w
from diffusiond.blobs.signing import UrlSigner
from diffusiond.domain.datasets import Dataset, DatasetItem
from diffusiond.domain.errors import DomainError, InvalidParams
from diffusiond.domain.jobs import Job, JobStatus
from diffusiond.domain.limits import check_size, limits_for
from diffusiond.domain.params import (
    Diffusion,
    GenerateSpec,
    ImageFormat,
    LoraMix,
    LoraRef,
    Txt2Img,
    WeightedPrompt,
)
from diffusiond.domain.spec_codec import generate_spec_from_json, spec_from_json
from diffusiond.domain.training import TrainingSpeed, TrainSettings, TrainSpec, preset

STATUS_WORDS: dict[JobStatus, w.StatusWord] = {
    JobStatus.QUEUED: w.StatusWord.QUEUED,
    JobStatus.RUNNING: w.StatusWord.PROCESSING,
    JobStatus.SUCCEEDED: w.StatusWord.SUCCEEDED,
    JobStatus.FAILED: w.StatusWord.FAILED,
    JobStatus.CANCELED: w.StatusWord.CANCELED,
}

# The first field named in a validation error decides the code of the 400.
FIELD_CODES = {
    "displayName": "invalid_display_name", "updatedDisplayName": "invalid_display_name",
    "customModelType": "invalid_custom_model_type", "trainingStrength": "invalid_training_strength",
    "trainingSpeed": "invalid_training_speed", "scaleConfigs": "invalid_scale_configs", "prompt": "invalid_prompt",
    "seed": "invalid_seed", "image_size": "invalid_image_size", "num_images": "invalid_num_images",
    "output_format": "invalid_output_format", "guidance_scale": "invalid_guidance_scale",
    "num_inference_steps": "invalid_num_inference_steps",
}
# The seed's image sides for SD families; a family trained smaller (the bundled `shapes`) takes its
# own range: its smallest side up to its largest square.
SEED_SIDES = (512, 1536)
M = TypeVar("M", bound=pydantic.BaseModel)


# ---- requests ------------------------------------------------------------------------------------


def parse(raw: bytes, model: type[M]) -> M:
    """The JSON body as `model`, or one 400 naming the first bad field and its code."""
    try:
        return model.model_validate_json(raw or b"null")
    except pydantic.ValidationError as e:
        errors = e.errors()
        # An unknown field first: it is most often a misspelling of the field reported missing.
        first = next((err for err in errors if err.get("type") == "extra_forbidden"), errors[0])
        loc = [str(p) for p in first.get("loc", ())]
        where = ".".join(loc) or "body"
        if first.get("type") == "json_invalid":
            raise InvalidParams("body: not valid JSON", code="invalid_json") from None
        if not loc and first.get("type") == "model_type":
            raise InvalidParams("body: a JSON object is required", code="invalid_json") from None
        if first.get("type") == "extra_forbidden":
            raise InvalidParams(f"{where}: unknown field", code="unknown_field", field=loc[-1]) from None
        code = FIELD_CODES.get(loc[0], "invalid_request") if loc else "invalid_request"
        raise InvalidParams(f"{where}: {first.get('msg', 'invalid')}", code=code, field=loc[0] if loc else None) \
            from None


def training_settings(body: w.TrainingCreate, family: str) -> TrainSettings:
    """The preset table's settings for the strength and speed, at the base family's native size."""
    return preset(body.trainingStrength, TrainingSpeed(body.trainingSpeed.value), limits_for(family).native)


def side_range(family: str) -> tuple[int, int]:
    lim = limits_for(family)
    if lim.native >= SEED_SIDES[0]:
        return SEED_SIDES
    return lim.min_side, math.isqrt(lim.max_pixels)


def check_image_size(width: int, height: int, family: str) -> None:
    """The seed's side range for the family, then the family's own rule (multiples, pixel count)."""
    low, high = side_range(family)
    if not (low <= width <= high and low <= height <= high):
        raise InvalidParams(f"image_size: width and height must be between {low} and {high} for this base "
                            f"model, got {width}x{height}", code="invalid_image_size", field="image_size")
    try:
        check_size(width, height, family)
    except InvalidParams as e:
        raise InvalidParams(f"image_size: {e.message}", code="invalid_image_size", field="image_size") from None


def prediction_spec(body: w.PredictionCreate, base_model: str, family: str, loras: tuple[LoraRef, ...]) -> GenerateSpec:
    """One txt2img pass on the base model with the trained LoRAs at their scales, composed: each runs on
    the prompt without the other models' trigger words (`engine/lora_mix.py`)."""
    native = limits_for(family).native
    width, height = (body.image_size.width, body.image_size.height) if body.image_size else (native, native)
    check_image_size(width, height, family)
    diffusion = Diffusion(model=base_model, prompts=(WeightedPrompt(body.prompt),), width=width, height=height,
                          steps=body.num_inference_steps, cfg_scale=body.guidance_scale, loras=loras,
                          lora_mix=LoraMix.COMPOSED)
    return GenerateSpec(stages=(Txt2Img(diffusion),), count=body.num_images, seed=body.seed,
                        output_format=ImageFormat(body.output_format.value))


TRIGGER_LETTERS = string.ascii_uppercase
TRIGGER_DIGITS = string.digits


def trigger_word(taken: Collection[str] = ()) -> str:
    """A new trigger word in the seed's style (`FJA90AB`: three letters, two digits, two letters) that
    is not in `taken`; 26^5 x 10^2 words make a clash rare, and a clash draws again."""
    for _ in range(1000):
        word = "".join([*(secrets.choice(TRIGGER_LETTERS) for _ in range(3)),
                        *(secrets.choice(TRIGGER_DIGITS) for _ in range(2)),
                        *(secrets.choice(TRIGGER_LETTERS) for _ in range(2))])
        if word not in taken:
            return word
    raise DomainError("could not find a free trigger word", code="server_error")  # pragma: no cover


# ---- responses -----------------------------------------------------------------------------------


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment is not None else None


def model_public(model: Dataset) -> w.ModelPublic:
    kind = model.params.get("customModelType")
    return w.ModelPublic(id=model.id, displayName=str(model.params.get("displayName", "")),
                         customModelType=str(kind) if kind is not None else None, imageCount=model.item_count,
                         createdAt=iso(model.created_at) or "")


def data_public(item: DatasetItem, signer: UrlSigner | None = None, tenant_id: str = "",
                expires_in: int = 0) -> w.DataPublic:
    out = w.DataPublic(dataId=item.id, width=item.width, height=item.height, sizeBytes=item.size,
                       createdAt=iso(item.created_at) or "")
    if signer is not None:
        out.dataUrl = signer.sign(item.blob_key, tenant_id, expires_in)
        out.expiresAt = iso(datetime.fromtimestamp(int(time.time()) + expires_in, UTC))
    return out


def error_info(job: Job) -> w.ErrorInfo | None:
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELED):
        return None
    return w.ErrorInfo(code=job.error_code or job.status.value, message=job.error_message or job.status.value)


def train_spec(job: Job) -> TrainSpec:
    spec = spec_from_json(job.spec_json, job.kind)
    assert isinstance(spec, TrainSpec)
    return spec


def training_public(job: Job) -> w.TrainingPublic:
    spec = train_spec(job)
    s = spec.settings
    m = job.metrics
    settings = w.TrainingSettingsPublic(steps=s.steps, learningRate=s.learning_rate, rank=s.rank,
                                        resolution=s.resolution, trainTextEncoder=s.train_text_encoder,
                                        baseModel=spec.base_model, imageCount=len(spec.images))
    queued = job.status is JobStatus.QUEUED and job.queue_position is not None
    return w.TrainingPublic(
        id=job.id, modelId=job.parent_id or "", status=STATUS_WORDS[job.status], triggerWord=spec.trigger_word,
        progress=round(job.overall_progress, 4),
        step=int(m["step"]) if "step" in m else None,
        totalSteps=int(m.get("total_steps", s.steps)),
        loss=m.get("loss"), etaSeconds=m.get("eta_seconds"),
        queuePosition=job.queue_position[0] if queued and job.queue_position else None,
        settings=settings, createdAt=iso(job.created_at) or "", startedAt=iso(job.started_at),
        finishedAt=iso(job.finished_at), error=error_info(job),
    )


def prediction_public(job: Job, signer: UrlSigner, expires_in: int) -> w.PredictionPublic:
    spec = generate_spec_from_json(job.spec_json)
    images = job.images if job.status is JobStatus.SUCCEEDED else ()
    return w.PredictionPublic(
        id=job.id, status=STATUS_WORDS[job.status], progress=round(job.overall_progress, 4),
        outputImages=[signer.sign(a.blob_key, job.tenant_id, expires_in) for a in images],
        seeds=[a.seed for a in images], outputFormat=w.OutputFormat(spec.output_format.value),
        createdAt=iso(job.created_at) or "", finishedAt=iso(job.finished_at), error=error_info(job),
    )
