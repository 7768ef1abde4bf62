"""Image to image: noise an init image part of the way and denoise it back under a prompt."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import Diffusion
from diffusiond.engine.progress import StepCallback, cpu_generators
from diffusiond.engine.prompts import Conditioning

if TYPE_CHECKING:
    from PIL import Image


def check_inputs(inits: Sequence[Image.Image], seeds: Sequence[int], strength: float, end: float | None) -> None:
    if len(inits) != len(seeds):
        raise InvalidParams("one init image per output image is required", field="init_image")
    if not 0.0 <= strength <= 1.0:
        raise InvalidParams("strength must be between 0 and 1", field="strength")
    if end is not None and not 0.0 < end <= 1.0:
        raise InvalidParams("step_schedule_end must be in (0, 1]", field="step_schedule_end")
    for image in inits:
        if image.width < 8 or image.height < 8:
            raise InvalidParams("init image must be at least 8x8", code="invalid_height_or_width")


def effective_steps(steps: int, strength: float) -> int:
    """diffusers runs int(steps * strength) steps; make a tiny strength still run one."""
    return max(steps, math.ceil(1.0 / strength)) if steps * strength < 1.0 else steps


def run(
    pipe: Any,
    diffusion: Diffusion,
    conditioning: Conditioning,
    inits: Sequence[Image.Image],
    seeds: Sequence[int],
    strength: float,
    callback: StepCallback,
    step_schedule_end: float | None = None,
) -> list[Image.Image]:
    """Re-diffuse each init image (one per seed); the output keeps each init image's size."""
    # 1. Check inputs
    check_inputs(inits, seeds, strength, step_schedule_end)
    if diffusion.subseed_strength:
        raise InvalidParams("variation seeds (subseed_strength) apply to text-to-image only", field="subseed_strength")
    # 2. Strength 0 means "keep the image": no noise is added, so nothing may change
    if strength == 0.0:
        return [image.copy() for image in inits]
    # 3. Prepare images: the VAE needs multiples of 8; the result is resized back afterwards
    sizes = [image.size for image in inits]
    prepared = [_to_multiple_of_8(image.convert("RGB")) for image in inits]
    if len({image.size for image in prepared}) > 1:
        raise InvalidParams("init images of one job must share a size", field="init_image")
    callback.stop_at = step_schedule_end
    # 4. Denoise from the partly-noised init latents
    output = pipe(
        **conditioning.as_kwargs(),
        image=prepared,
        strength=strength,
        num_inference_steps=effective_steps(diffusion.steps, strength),
        guidance_scale=diffusion.cfg_scale,
        generator=cpu_generators(seeds),
        callback_on_step_end=callback,
        num_images_per_prompt=len(seeds),
        output_type="pil",
    )
    # 5. Back to the callers' sizes
    return [_resize(image, size) for image, size in zip(output.images, sizes, strict=True)]


def _to_multiple_of_8(image: Image.Image) -> Image.Image:
    width, height = image.width - image.width % 8, image.height - image.height % 8
    return _resize(image, (width, height))


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    from PIL import Image as PILImage

    return image if image.size == size else image.resize(size, PILImage.Resampling.LANCZOS)
