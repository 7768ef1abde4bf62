"""Upscale: resize each image with an upscaler (lanczos or an ESRGAN-family network).

The optional hires pass (re-diffusing at the new size) is an img2img run, chained by the runner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import Upscale
from diffusiond.engine.progress import StepCallback
from diffusiond.engine.upscalers import Upscaler

if TYPE_CHECKING:
    from PIL import Image

MAX_SIDE = 8192
DEFAULT_SCALE = 2


def check_inputs(stage: Upscale) -> None:
    if stage.scale is not None and stage.scale <= 0:
        raise InvalidParams("scale must be positive", field="scale")
    for name, value in (("width", stage.width), ("height", stage.height)):
        if value is not None and not 1 <= value <= MAX_SIDE:
            raise InvalidParams(f"{name} must be between 1 and {MAX_SIDE}", code="invalid_height_or_width")


def target_size(size: tuple[int, int], stage: Upscale, native_scale: int | None) -> tuple[int, int]:
    """The output size: explicit width/height (one of them keeps the aspect ratio), else a scale."""
    width, height = size
    if stage.width is not None and stage.height is not None:
        return stage.width, stage.height
    if stage.width is not None:
        return stage.width, max(1, round(height * stage.width / width))
    if stage.height is not None:
        return max(1, round(width * stage.height / height)), stage.height
    scale = stage.scale if stage.scale is not None else (native_scale or DEFAULT_SCALE)
    result = (max(1, round(width * scale)), max(1, round(height * scale)))
    if max(result) > MAX_SIDE:
        raise InvalidParams(f"the upscaled image would exceed {MAX_SIDE} pixels a side", code="invalid_height_or_width")
    return result


def run(
    upscaler: Upscaler, images: Sequence[Image.Image], stage: Upscale, callback: StepCallback
) -> list[Image.Image]:
    """Upscale every image; progress moves one image at a time."""
    # 1. Check inputs
    check_inputs(stage)
    results: list[Image.Image] = []
    for position, image in enumerate(images):
        # 2. Size, then 3. the network (if any) followed by a lanczos resize to the exact size
        callback.check_canceled()
        width, height = target_size(image.size, stage, upscaler.scale)
        results.append(upscaler.upscale(image.convert("RGB"), width, height))
        fraction = (callback.stage + 1.0) / callback.stages
        callback.ctx.report_progress(callback.indices[position], fraction)
    return results
