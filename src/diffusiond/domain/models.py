"""Model registry records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


class ModelKind(str, Enum):
    CHECKPOINT = "checkpoint"
    LORA = "lora"
    EMBEDDING = "embedding"
    HYPERNETWORK = "hypernetwork"
    CONTROLNET = "controlnet"
    VAE = "vae"
    UPSCALER = "upscaler"
    DETECTOR = "detector"


class ModelFormat(str, Enum):
    DIFFUSERS = "diffusers"  # a diffusers folder of .safetensors files
    SAFETENSORS = "safetensors"  # a single .safetensors file
    PTH = "pth"  # torch zip archive, read only with the weights-only loader (upscalers)
    BUILTIN = "builtin"  # no weights (the lanczos upscaler)


@dataclass(frozen=True)
class ModelRecord:
    """A registered model; `path` is a local file or folder the engine can read."""

    id: str
    kind: ModelKind
    format: ModelFormat
    path: str
    family: str = "sd15"  # sd15 | sd2 | sdxl | shapes | esrgan | ...
    trigger_words: tuple[str, ...] = field(default=())
    name: str = ""
    description: str = ""
    tenant_id: str | None = None  # None: every tenant may use it; else only its owner (trained models)
    created_at: datetime | None = None
