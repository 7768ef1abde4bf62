"""The narrow view of the platform that engine code gets while it runs a job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.domain.params import ImageRef

if TYPE_CHECKING:
    from PIL import Image


class WorkContext(Protocol):
    """What a running job may do: read its inputs, report progress, notice a cancel."""

    def load_image(self, ref: ImageRef) -> Image.Image: ...

    def report_progress(self, image_index: int, fraction: float) -> None: ...

    def is_canceled(self) -> bool: ...


class ModelResolver(Protocol):
    """Finds a registered model (by id or alias) and its local files."""

    def resolve(self, model_id: str, kind: ModelKind) -> ModelRecord: ...


class Canceled(Exception):
    """Raised inside the denoising loop when the job was canceled."""


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    finish_reason: str = "SUCCESS"  # SUCCESS | CONTENT_FILTERED | ERROR
