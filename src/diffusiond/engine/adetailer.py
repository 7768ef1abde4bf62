"""Adetailer: find regions with a detector, then repaint each one with its own prompt.

For every `AdetailerRegion` of the stage, in order, and every image: the detector proposes
regions, those below `confidence` are dropped, each mask is dilated (or eroded, negative
`dilation`) and blurred, and the image is inpainted under it. With `mask_merge` "none" each region
is repainted in turn; "merge" repaints their union once; "merge_invert" repaints everything but
their union. Inpainting composites onto the untouched image, so pixels outside the (blurred)
masks come back unchanged. An image with no detections is returned as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import Adetailer, AdetailerRegion, Diffusion
from diffusiond.engine.detectors import Detection, Detector, ModelLookup, load_detector
from diffusiond.engine.progress import StepCallback

if TYPE_CHECKING:
    from PIL import Image

# `Engine._diffuse(diffusion, task, seeds, callback, body)`: runs body(pipe, conditioning) on the
# model's pipeline for `task` with the job's LoRAs and embeddings applied.
Diffuse = Callable[[Diffusion, Any, list[int], StepCallback, Callable[[Any, Any], Any]], Any]
MAX_DILATION = 128


def check_inputs(stage: Adetailer, images: Sequence[Image.Image], seeds: Sequence[int]) -> None:
    if not stage.regions:
        raise InvalidParams("an adetailer stage needs at least one region pass", field="args")
    if len(images) != len(seeds):
        raise InvalidParams("one input image per output image is required")
    for region in stage.regions:
        if not 0.0 <= region.confidence <= 1.0:
            raise InvalidParams("confidence must be between 0 and 1", field="adConfidence")
        if abs(region.dilation) > MAX_DILATION:
            raise InvalidParams(f"dilation must be within ±{MAX_DILATION}", field="adDilateErode")
        if region.mask_merge not in ("none", "merge", "merge_invert"):
            raise InvalidParams(f"unknown mask merge {region.mask_merge!r}", field="adMaskMergeInvert")
        if not 0.0 < region.strength <= 1.0:
            raise InvalidParams("denoising strength must be in (0, 1]", field="adDenoisingStrength")


def region_masks(detections: Sequence[Detection], region: AdetailerRegion) -> list[Image.Image]:
    """The masks to repaint, in order (mode "L", 255 = repaint), after confidence, dilation and merge."""
    from PIL import ImageChops, ImageFilter

    kept = [d for d in detections if d.score >= region.confidence]
    masks = []
    for d in kept:
        mask = d.mask
        if region.dilation:
            size = 2 * abs(region.dilation) + 1
            grow = ImageFilter.MaxFilter(size) if region.dilation > 0 else ImageFilter.MinFilter(size)
            mask = mask.filter(grow)
        masks.append(mask)
    if not masks or region.mask_merge == "none":
        return [m for m in masks if m.getbbox() is not None]
    union = masks[0]
    for m in masks[1:]:
        union = ImageChops.lighter(union, m)
    if region.mask_merge == "merge_invert":
        union = ImageChops.invert(union)
    return [union] if union.getbbox() is not None else []


def blurred(mask: Image.Image, radius: int) -> Image.Image:
    from PIL import ImageFilter

    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def run(stage: Adetailer, images: Sequence[Image.Image], seeds: Sequence[int], callback: StepCallback,
        resolver: ModelLookup | None, diffuse: Diffuse,
        detectors: dict[str, Detector] | None = None) -> list[Image.Image]:
    """Detect and repaint; returns one image per input image, at the input's size."""
    # 1. Check inputs and load the detectors
    check_inputs(stage, images, seeds)
    loaded = dict(detectors or {})
    for region in stage.regions:
        if region.detector not in loaded:
            loaded[region.detector] = load_detector(region.detector, resolver)
    results = [image.convert("RGB") for image in images]
    passes = len(stage.regions)
    for r, region in enumerate(stage.regions):
        for i, seed in enumerate(seeds):
            # 2. Detect on the current image (earlier passes may have changed it)
            callback.check_canceled()
            masks = region_masks(loaded[region.detector].detect(results[i]), region)
            # 3. Repaint each mask with this pass's own prompt and settings
            for mask in masks:
                single = replace(callback, indices=[callback.indices[i]])
                results[i] = repaint(diffuse, region, results[i], blurred(mask, region.mask_blur), seed, single)
            fraction = (callback.stage + (r * len(seeds) + i + 1) / (passes * len(seeds))) / callback.stages
            callback.ctx.report_progress(callback.indices[i], min(fraction, 1.0))
    return results


def repaint(diffuse: Diffuse, region: AdetailerRegion, image: Image.Image, mask: Image.Image, seed: int,
            callback: StepCallback) -> Image.Image:
    """Inpaint one image under one mask with the region pass's settings."""
    from diffusiond.engine import inpaint
    from diffusiond.engine.model_cache import Task

    def body(pipe: Any, cond: Any) -> list[Image.Image]:
        return inpaint.run(pipe, region.diffusion, cond, [image], [mask], [seed], callback,
                           strength=region.strength, only_masked=region.only_masked,
                           only_masked_padding=region.padding)

    out: list[Image.Image] = diffuse(region.diffusion, Task.INPAINT, [seed], callback, body)
    return out[0]
