"""Wire types of the custom-model API (seed 002), with the seed's names and ranges.

Requests are strict JSON: numbers are JSON numbers of the declared type (an integer field refuses
`7.0` and `"7"`), unknown fields are refused, so a typo is a 400 that names the field rather than a
silently ignored option. Responses use the seed's camelCase names; prediction parameters keep the
seed's snake_case (`image_size`, `num_images`, ...).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from diffusiond.domain.seeds import MAX_SEED

MAX_NAME = 200
MAX_PROMPT = 2000
MAX_SCALE_CONFIGS = 10  # trained models mixed in one prediction
MAX_SCALE = 2.0
# A name: printable (no control characters), not blank.
NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"


class WireIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _integral(value: object) -> object:
    """JSON Schema counts 5.0 as an integer, so this API takes it as 5 (but never 5.5, "5" or true)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, BeforeValidator(_integral)]


# ---- requests ------------------------------------------------------------------------------------


class ModelCreate(WireIn):
    displayName: str = Field(max_length=MAX_NAME, pattern=NAME_PATTERN,
                             description='Human-readable name for the model (e.g. "Summer Collection Style Model")')
    customModelType: str | None = Field(None, max_length=100, pattern=NAME_PATTERN,
                                        description="Type of custom model (reserved for future use; stored and echoed)")


class ModelRename(WireIn):
    updatedDisplayName: str = Field(max_length=MAX_NAME, pattern=NAME_PATTERN,
                                    description="New display name for the model")


class TrainingSpeedWord(str, Enum):
    FAST = "fast"
    HIGH_QUALITY = "high_quality"


class TrainingCreate(WireIn):
    trainingStrength: Integer = Field(5, ge=0, le=10, description="How strongly the model should learn from your "
                                  "training data: stronger = closer to the pictures (more steps, a higher rate)")
    trainingSpeed: TrainingSpeedWord = Field(TrainingSpeedWord.FAST,
                                             description="Trade-off between training speed and quality")


class ScaleConfig(WireIn):
    modelId: str = Field(min_length=1, max_length=64, description="A custom model of yours")
    trainingId: str | None = Field(None, min_length=1, max_length=64,
                                   description="One of its succeeded trainings (default: its newest succeeded one)")
    scale: float = Field(1.0, ge=0.0, le=MAX_SCALE, description="The trained model's weight (0 turns it off)")


class ImageSize(WireIn):
    width: Integer = Field(ge=64, le=1536, description="512-1536 for SD families; 64-512 for the bundled `shapes`")
    height: Integer = Field(ge=64, le=1536, description="512-1536 for SD families; 64-512 for the bundled `shapes`")


class OutputFormat(str, Enum):
    JPEG = "jpeg"
    PNG = "png"


class PredictionCreate(WireIn):
    scaleConfigs: dict[str, ScaleConfig] = Field(
        default_factory=dict, max_length=MAX_SCALE_CONFIGS,
        description="Which trained models to use and their weights, keyed by any label (\"1\", \"2\", ...)")
    prompt: str = Field(max_length=MAX_PROMPT, pattern=r"\S", description="Text description of the image; must "
                        "include a trained model's trigger word to activate it")
    seed: Integer = Field(0, ge=0, le=MAX_SEED, description="Random seed for reproducible results (0: random); "
                      "image i uses seed + i")
    image_size: ImageSize | None = Field(None, description="Dimensions of the generated images (default: the base "
                                         "model's native size, 512x512 for SD 1.x, 64x64 for `shapes`)")
    num_images: Integer = Field(1, ge=1, le=4, description="Number of images to generate (1-4)")
    output_format: OutputFormat = Field(OutputFormat.PNG, description="Format of the generated images")
    guidance_scale: float = Field(7.5, ge=0.0, le=10.0, description="How closely to follow the prompt (0.0-10.0)")
    num_inference_steps: Integer = Field(30, ge=1, le=50, description="Number of denoising steps (1-50)")


# ---- responses -----------------------------------------------------------------------------------


class StatusWord(str, Enum):
    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class ModelPublic(BaseModel):
    id: str
    displayName: str
    customModelType: str | None = None
    imageCount: int = Field(description="Training images the model has now")
    createdAt: str


class DataCreated(BaseModel):
    dataId: str


class DataPublic(BaseModel):
    dataId: str
    width: int
    height: int
    sizeBytes: int = Field(description="Bytes stored (the picture re-encoded as PNG)")
    createdAt: str
    dataUrl: str | None = Field(None, description="A signed URL of the stored picture, valid until expiresAt")
    expiresAt: str | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str


class TrainingSettingsPublic(BaseModel):
    """What the strength and speed became (the preset table)."""

    steps: int
    learningRate: float
    rank: int
    resolution: int
    trainTextEncoder: bool
    baseModel: str
    imageCount: int


class TrainingCreated(BaseModel):
    trainingId: str
    status: StatusWord
    triggerWord: str


class TrainingPublic(BaseModel):
    id: str
    modelId: str
    status: StatusWord
    triggerWord: str
    progress: float = Field(description="0 to 1")
    step: int | None = None
    totalSteps: int | None = None
    loss: float | None = Field(None, description="The training loss so far (the latest reported)")
    etaSeconds: float | None = None
    queuePosition: int | None = Field(None, description="1 is next; only while queued")
    settings: TrainingSettingsPublic
    createdAt: str
    startedAt: str | None = None
    finishedAt: str | None = None
    error: ErrorInfo | None = None


class PredictionCreated(BaseModel):
    predictionId: str
    status: StatusWord


class PredictionPublic(BaseModel):
    id: str
    status: StatusWord
    progress: float = Field(description="0 to 1")
    outputImages: list[str] = Field(description="Signed, expiring URLs of the images (once succeeded)")
    seeds: list[int] = Field(default_factory=list, description="The seed of each output image")
    outputFormat: OutputFormat
    createdAt: str
    finishedAt: str | None = None
    error: ErrorInfo | None = None


class CustomError(BaseModel):
    """Every error: a stable machine-readable code and a sentence for people."""

    error: ErrorInfo
