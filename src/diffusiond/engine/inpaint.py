"""Inpainting: repaint the masked part of an init image, keep the rest.

Works with ordinary 4-channel UNets (diffusers blends re-noised init latents outside the mask at
every step) and 9-channel inpainting UNets (mask and masked image are UNet inputs). Either way the
result is composited onto the init image with the (blurred) mask, so pixels the mask does not touch
come back unchanged rather than through a lossy VAE round trip.

Mask convention inside this module: mode "L", 255 = repaint, 0 = keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import Diffusion, InpaintFill, MaskSource
from diffusiond.engine.img2img import effective_steps
from diffusiond.engine.progress import StepCallback, cpu_generators
from diffusiond.engine.prompts import Conditioning

if TYPE_CHECKING:
    from PIL import Image


def check_inputs(init: Image.Image, mask: Image.Image | None, source: MaskSource, strength: float) -> None:
    if mask is None and source != MaskSource.INIT_IMAGE_ALPHA:
        raise InvalidParams(f"mask_source {source.value} needs a mask image", field="mask_image")
    if source == MaskSource.INIT_IMAGE_ALPHA and "A" not in init.getbands():
        raise InvalidParams("mask_source INIT_IMAGE_ALPHA needs an init image with an alpha channel")
    if not 0.0 < strength <= 1.0:
        raise InvalidParams("inpainting strength must be in (0, 1]", field="strength")
    if init.width < 8 or init.height < 8:
        raise InvalidParams("init image must be at least 8x8", code="invalid_height_or_width")


def build_mask(
    init: Image.Image, mask: Image.Image | None, source: MaskSource, *, invert: bool = False, blur: int = 0
) -> Image.Image:
    """The repaint mask at the init image's size (255 = repaint)."""
    from PIL import ImageChops, ImageFilter

    if source == MaskSource.INIT_IMAGE_ALPHA:
        result = ImageChops.invert(init.getchannel("A"))  # transparent pixels are repainted
    else:
        assert mask is not None
        result = mask.convert("L")
        if source == MaskSource.MASK_IMAGE_BLACK:
            result = ImageChops.invert(result)
    if result.size != init.size:
        result = result.resize(init.size)
    if invert:
        result = ImageChops.invert(result)
    if blur > 0:
        result = result.filter(ImageFilter.GaussianBlur(blur))
    return result


def fill_masked(image: Image.Image, mask: Image.Image, fill: InpaintFill) -> Image.Image:
    """What the model sees under the mask before denoising (A1111's 'masked content').

    FILL paints the mean colour of the kept pixels; LATENT_NOTHING paints mid-grey, which encodes
    to latents near zero. LATENT_NOISE needs no fill: it runs at strength 1 (pure noise under the mask).
    """
    from PIL import Image as PILImage
    from PIL import ImageStat

    if fill in (InpaintFill.ORIGINAL, InpaintFill.LATENT_NOISE):
        return image
    if fill == InpaintFill.FILL:
        keep = mask.point(lambda v: 255 if v < 128 else 0)
        stat = ImageStat.Stat(image, mask=keep if keep.getbbox() else None)
        colour = tuple(int(c) for c in stat.mean[:3])
    else:
        colour = (127, 127, 127)
    return PILImage.composite(PILImage.new("RGB", image.size, colour), image, mask)


def composite(generated: Image.Image, init: Image.Image, mask: Image.Image) -> Image.Image:
    """Generated pixels where the mask is set, the init image's own pixels elsewhere."""
    from PIL import Image as PILImage

    if generated.size != init.size:
        generated = generated.resize(init.size, PILImage.Resampling.LANCZOS)
    return PILImage.composite(generated.convert("RGB"), init.convert("RGB"), mask)


def run(
    pipe: Any,
    diffusion: Diffusion,
    conditioning: Conditioning,
    inits: Sequence[Image.Image],
    masks: Sequence[Image.Image],
    seeds: Sequence[int],
    callback: StepCallback,
    *,
    strength: float = 1.0,
    fill: InpaintFill = InpaintFill.ORIGINAL,
    only_masked: bool = False,
    only_masked_padding: int = 32,
) -> list[Image.Image]:
    """Inpaint each init image (one per seed) with its prepared mask (see `build_mask`)."""
    # 1. Check inputs
    if not (len(inits) == len(masks) == len(seeds)):
        raise InvalidParams("one init image and mask per output image is required")
    if diffusion.subseed_strength:
        raise InvalidParams("variation seeds (subseed_strength) apply to text-to-image only", field="subseed_strength")
    if fill == InpaintFill.LATENT_NOISE:
        strength = 1.0
    # 2. Prepare images: RGB at a multiple of 8, masked content filled
    rgb = [image.convert("RGB") for image in inits]
    size = (rgb[0].width - rgb[0].width % 8, rgb[0].height - rgb[0].height % 8)
    if any(image.size != rgb[0].size for image in rgb):
        raise InvalidParams("init images of one job must share a size", field="init_image")
    prepared = [fill_masked(img, m, fill).resize(size) for img, m in zip(rgb, masks, strict=True)]
    prepared_masks = [m.resize(size) for m in masks]
    # 3. only_masked: diffusers crops around the mask (plus padding), diffuses the crop at the
    #    requested resolution and pastes it back; it crops one image per call
    common: dict[str, Any] = {
        **conditioning.as_kwargs(),
        "strength": strength,
        "num_inference_steps": effective_steps(diffusion.steps, strength),
        "guidance_scale": diffusion.cfg_scale,
        "output_type": "pil",
    }
    if only_masked:
        generated = []
        for i, (image, mask, seed) in enumerate(zip(prepared, prepared_masks, seeds, strict=True)):
            if mask.getbbox() is None:  # nothing to repaint in this one
                generated.append(image)
                continue
            single = replace(callback, indices=[callback.indices[i]])
            generated += pipe(
                **common, image=image, mask_image=mask, width=diffusion.width, height=diffusion.height,
                padding_mask_crop=only_masked_padding, generator=cpu_generators([seed]),
                callback_on_step_end=single,
            ).images
    # 4. Denoise the whole images as one batch
    else:
        generated = pipe(
            **common, image=prepared, mask_image=prepared_masks, width=size[0], height=size[1],
            num_images_per_prompt=len(seeds), generator=cpu_generators(seeds), callback_on_step_end=callback,
        ).images
    # 5. Composite onto the untouched init images
    return [composite(gen, img, m) for gen, img, m in zip(generated, rgb, masks, strict=True)]
