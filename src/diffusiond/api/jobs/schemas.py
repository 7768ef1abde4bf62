"""Wire types of the `/v1/jobs` dialect (seed 001).

Requests accept the seed's camelCase names and their snake_case spellings (clients in the wild
send both), numbers as JSON numbers or strings ("512"), and refuse unknown fields so a typo is a
400 rather than a silently ignored option. Responses use the seed's names; int64 values are
strings, as in the seed (protobuf JSON).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from diffusiond.domain import limits


class WireIn(BaseModel):
    # allow_inf_nan=False: NaN and Infinity (JSON literals or strings) are refused in every float.
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True,
                              extra="forbid", allow_inf_nan=False)


class StageType(str, Enum):
    DEFAULT = "DEFAULT"
    INPUT_INITIALIZE = "INPUT_INITIALIZE"
    DIFFUSION = "DIFFUSION"
    IMAGE_TO_UPSCALER = "IMAGE_TO_UPSCALER"
    IMAGE_TO_ADETAILER = "IMAGE_TO_ADETAILER"
    IMAGE_TO_INPAINT = "IMAGE_TO_INPAINT"
    IMAGE_TO_ANIMATE_DIFF = "IMAGE_TO_ANIMATE_DIFF"


class JobStatusWord(str, Enum):
    """The seed's job status enum. diffusiond never reports CREATED or PENDING: a job is queued
    (WAITING) the moment it is accepted."""

    DEFAULT = "DEFAULT"
    CREATED = "CREATED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    CANCELED = "CANCELED"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    WAITING = "WAITING"


# ---- requests ------------------------------------------------------------------------------------


Weight = Annotated[float, Field(ge=-limits.MAX_WEIGHT, le=limits.MAX_WEIGHT)]


class PromptIn(WireIn):
    text: str = Field(max_length=4000)
    weight: Weight = 1.0


Prompts = Annotated[list[PromptIn], Field(max_length=limits.MAX_PROMPTS)] | str | None


class InputInitializeIn(WireIn):
    seed: int = 0  # 0 or -1: random
    image_resource_id: str | None = None
    count: int = 1


class LoraItemIn(WireIn):
    lora_model: str
    weight: Weight = 1.0
    block_weight: str | None = None
    lora_access_key: str | None = None


class LoraMixIn(str, Enum):
    MERGED = "merged"  # the adapters' weight changes add up, one pass on the whole prompt (A1111's way)
    COMPOSED = "composed"  # each adapter on the prompt without the others' trigger words, effects added


class LoraIn(WireIn):
    items: list[LoraItemIn] = Field(default_factory=list, max_length=limits.MAX_LORAS)
    mix: LoraMixIn = LoraMixIn.MERGED


class EmbeddingItemIn(WireIn):
    model: str
    weight: Weight = 1.0
    embedding_access_key: str | None = None


class EmbeddingIn(WireIn):
    items: list[EmbeddingItemIn] = Field(default_factory=list, max_length=limits.MAX_EMBEDDINGS)


class ControlnetIn(WireIn):
    args: list[dict[str, Any]] = Field(default_factory=list, max_length=limits.MAX_EXTENSION_UNITS)


class AnimateDiffIn(WireIn):
    args: list[dict[str, Any]] = Field(default_factory=list, max_length=limits.MAX_EXTENSION_UNITS)


class LayerDiffusionIn(WireIn):
    enable: bool = False
    weight: float = 0.0


class DiffusionIn(WireIn):
    width: int | None = None
    height: int | None = None
    prompts: Prompts = None
    negative_prompts: Prompts = None
    sd_model: str | None = None
    sd_vae: str | None = None
    sampler: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    clip_skip: int | None = None
    denoising_strength: float | None = None
    eta_noise_seed_delta: int | None = None
    controlnet: ControlnetIn | None = None
    lora: LoraIn | None = None
    animate_diff: AnimateDiffIn | None = None
    embedding: EmbeddingIn | None = None
    v1_clip: bool | None = None
    model_access_key: str | None = None
    schedule_name: str | None = None
    enable_ella: bool | None = None
    enable_pix2pix: bool | None = Field(default=None, alias="enablePix2pix")
    use_hunyuan_dit: bool | None = None
    layer_diffusion: LayerDiffusionIn | None = None
    clip_encoder_name: str | None = None


class ImageToUpscalerIn(WireIn):
    hr_upscaler: str | None = None
    hr_resize_x: int | None = None
    hr_resize_y: int | None = None
    hr_scale: float | None = None
    hr_second_pass_steps: int | None = None
    denoising_strength: float | None = None
    diffusion: DiffusionIn | None = None


class AdetailerArgIn(WireIn):
    ad_model: str
    ad_prompt: Prompts = None
    ad_negative_prompt: Prompts = None
    ad_confidence: float | None = None
    ad_dilate_erode: int | None = None
    ad_mask_merge_invert: str | None = None
    ad_denoising_strength: float | None = None
    ad_inpaint_only_masked: bool | None = None
    ad_inpaint_only_masked_padding: int | None = None
    ad_use_inpaint_width_height: bool | None = None
    ad_inpaint_width: int | None = None
    ad_inpaint_height: int | None = None
    ad_use_steps: bool | None = None
    ad_steps: int | None = None
    ad_use_cfg_scale: bool | None = None
    ad_cfg_scale: float | None = None
    lora: LoraIn | None = None
    ad_use_checkpoint: bool | None = None
    ad_checkpoint: str | None = None
    ad_use_sampler: bool | None = None
    ad_sampler: str | None = None
    ad_use_noise_multiplier: bool | None = None
    ad_noise_multiplier: float | None = None
    ad_use_clip_skip: bool | None = None
    ad_clip_skip: int | None = None


class ImageToAdetailerIn(WireIn):
    args: list[AdetailerArgIn] = Field(min_length=1, max_length=limits.MAX_ADETAILER_REGIONS)
    diffusion: DiffusionIn | None = None


class ImageToInpaintIn(WireIn):
    resize_mode: str | None = None
    mask_image_resource_id: str
    mask_blur: int | None = None
    inpainting_fill: str | None = None
    inpaint_full_res: bool | None = None
    inpaint_full_res_padding: int | None = None
    inpaint_mask_invert: int | bool | None = None
    diffusion: DiffusionIn | None = None


class StageIn(WireIn):
    type: StageType = StageType.DEFAULT
    input_initialize: InputInitializeIn | None = None
    diffusion: DiffusionIn | None = None
    image_to_upscaler: ImageToUpscalerIn | None = None
    image_to_adetailer: ImageToAdetailerIn | None = None
    image_to_inpaint: ImageToInpaintIn | None = None
    image_to_animate_diff: dict[str, Any] | None = None


class StagesIn(WireIn):
    stages: list[StageIn] = Field(min_length=1, max_length=limits.MAX_STAGES)


class JobCreate(StagesIn):
    request_id: str = Field(min_length=1, max_length=200)
    notify_url: str | None = Field(default=None, max_length=2000)


class CreditsRequest(StagesIn):
    """`POST /v1/jobs/credits` takes a job body; `requestId` and `notifyUrl` are optional there."""

    request_id: str | None = Field(default=None, max_length=200)
    notify_url: str | None = Field(default=None, max_length=2000)


class ResourceCreate(WireIn):
    expire_sec: int | None = None


# ---- responses -----------------------------------------------------------------------------------


class ImageMeta(BaseModel):
    format: str
    width: int
    height: int


class ResourceMeta(BaseModel):
    image: ImageMeta


class ResourceForClient(BaseModel):
    """An image: `expiredIn` is when `url` stops working, Unix epoch milliseconds (int64 string)."""

    id: str
    url: str
    expiredIn: str
    meta: ResourceMeta


class ProcessingImage(BaseModel):
    """An image being made; `progress` is a whole percentage (int32 in the seed's API)."""

    resourceImage: ResourceForClient
    progress: int


class WorkflowFinishItem(BaseModel):
    status: JobStatusWord
    progress: float
    step: int
    id: str
    ctime: str
    mtime: str
    nodes: dict[str, Any] = Field(default_factory=dict)
    finishedNodes: dict[str, Any] = Field(default_factory=dict)


class WaitingInfo(BaseModel):
    queueRank: str
    queueLen: str


class FailedInfo(BaseModel):
    reason: str
    code: str


class RunningInfo(BaseModel):
    processingImages: list[ProcessingImage]
    workflowFinishItem: WorkflowFinishItem | None = None


class SuccessInfo(BaseModel):
    images: list[ResourceForClient]
    videos: list[ResourceForClient] = Field(default_factory=list)
    workflowFinishItem: WorkflowFinishItem | None = None


class JobPublic(BaseModel):
    id: str
    requestId: str | None = None
    status: JobStatusWord
    credits: float
    waitingInfo: WaitingInfo | None = None
    failedInfo: FailedInfo | None = None
    runningInfo: RunningInfo | None = None
    successInfo: SuccessInfo | None = None


class JobEnvelope(BaseModel):
    job: JobPublic


class CanceledJob(JobEnvelope):
    """The cancel answer: the seed API's `jobId`, and the job as it now is."""

    jobId: str


class JobsPage(BaseModel):
    jobs: list[JobPublic]
    total: int
    nextPageToken: str | None = None


class CreditsPublic(BaseModel):
    credits: float


class ResourcePublic(BaseModel):
    resourceId: str
    putUrl: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    expiredIn: str | None = None
    status: str
    meta: ResourceMeta | None = None


class ErrorDetail(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    type: str = Field(alias="@type")
    reason: str
    domain: str = "diffusiond"
    metadata: dict[str, str] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """google.rpc.Status, the seed's default error shape; `details[0].reason` is the stable code."""

    code: int
    message: str
    details: list[ErrorDetail]
