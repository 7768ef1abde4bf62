"""Stability v1 wire types, with the spec's ranges."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from diffusiond.domain import limits
from diffusiond.domain.params import MaskSource


class WireIn(BaseModel):
    """A request type: NaN and Infinity (JSON literals or form strings) are refused in every float."""

    model_config = ConfigDict(allow_inf_nan=False)


class StabilitySampler(str, Enum):
    DDIM = "DDIM"
    DDPM = "DDPM"
    K_DPMPP_2M = "K_DPMPP_2M"
    K_DPMPP_2S_ANCESTRAL = "K_DPMPP_2S_ANCESTRAL"
    K_DPM_2 = "K_DPM_2"
    K_DPM_2_ANCESTRAL = "K_DPM_2_ANCESTRAL"
    K_EULER = "K_EULER"
    K_EULER_ANCESTRAL = "K_EULER_ANCESTRAL"
    K_HEUN = "K_HEUN"
    K_LMS = "K_LMS"


class ClipGuidancePreset(str, Enum):
    FAST_BLUE = "FAST_BLUE"
    FAST_GREEN = "FAST_GREEN"
    NONE = "NONE"
    SIMPLE = "SIMPLE"
    SLOW = "SLOW"
    SLOWER = "SLOWER"
    SLOWEST = "SLOWEST"


class StylePreset(str, Enum):
    MODEL_3D = "3d-model"
    ANALOG_FILM = "analog-film"
    ANIME = "anime"
    CINEMATIC = "cinematic"
    COMIC_BOOK = "comic-book"
    DIGITAL_ART = "digital-art"
    ENHANCE = "enhance"
    FANTASY_ART = "fantasy-art"
    ISOMETRIC = "isometric"
    LINE_ART = "line-art"
    LOW_POLY = "low-poly"
    MODELING_COMPOUND = "modeling-compound"
    NEON_PUNK = "neon-punk"
    ORIGAMI = "origami"
    PHOTOGRAPHIC = "photographic"
    PIXEL_ART = "pixel-art"
    TILE_TEXTURE = "tile-texture"


class TextPrompt(WireIn):
    text: str = Field(max_length=2000)
    weight: float = Field(1.0, ge=-limits.MAX_WEIGHT, le=limits.MAX_WEIGHT)


class GenerationOptions(WireIn):
    """GenerationRequestOptionalParams."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    cfg_scale: float = Field(7.0, ge=0, le=35)
    clip_guidance_preset: ClipGuidancePreset = ClipGuidancePreset.NONE
    sampler: StabilitySampler | None = None
    samples: int = Field(1, ge=1, le=limits.MAX_SAMPLES)
    seed: int = Field(0, ge=0, le=4294967295)
    steps: int = Field(30, ge=10, le=150)
    style_preset: StylePreset | None = None


class TextToImageRequest(GenerationOptions):
    text_prompts: list[TextPrompt] = Field(min_length=1, max_length=limits.MAX_PROMPTS)
    height: int = 512
    width: int = 512


class ImageToImageForm(GenerationOptions):
    text_prompts: list[TextPrompt] = Field(min_length=1, max_length=limits.MAX_PROMPTS)
    init_image_mode: Literal["IMAGE_STRENGTH", "STEP_SCHEDULE"] = "IMAGE_STRENGTH"
    image_strength: float = Field(0.35, ge=0, le=1)
    step_schedule_start: float = Field(0.65, ge=0, le=1)
    step_schedule_end: float | None = Field(None, ge=0, le=1)


class MaskingForm(GenerationOptions):
    text_prompts: list[TextPrompt] = Field(min_length=1, max_length=limits.MAX_PROMPTS)
    mask_source: MaskSource


class UpscaleForm(WireIn):
    width: int | None = Field(None, ge=512)
    height: int | None = Field(None, ge=512)


class ImageArtifact(BaseModel):
    base64: str
    seed: int
    finishReason: Literal["SUCCESS", "ERROR", "CONTENT_FILTERED"]


class ArtifactsResponse(BaseModel):
    artifacts: list[ImageArtifact]


class Engine(BaseModel):
    id: str
    name: str
    description: str
    type: Literal["AUDIO", "CLASSIFICATION", "PICTURE", "STORAGE", "TEXT", "VIDEO"] = "PICTURE"


class OrganizationMembership(BaseModel):
    id: str
    name: str
    role: str
    is_default: bool


class AccountResponse(BaseModel):
    id: str
    email: str
    organizations: list[OrganizationMembership]
    profile_picture: str | None = None


class BalanceResponse(BaseModel):
    credits: float


class StabilityError(BaseModel):
    id: str
    name: str
    message: str
