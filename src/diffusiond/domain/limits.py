"""What one request may ask for: image sizes per model family (Stability v1's rules for SD engines),
and the most items of every list a request carries, whichever dialect it speaks.

Every dialect's wire types take their list maxima from here, so the documented numbers are these.
Work that grows with a list inside these bounds is priced by it (see `pricing.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusiond.domain.errors import InvalidParams


@dataclass(frozen=True)
class SizeLimits:
    min_side: int
    multiple: int
    min_pixels: int
    max_pixels: int
    native: int  # the side the model was trained at


FAMILY_LIMITS: dict[str, SizeLimits] = {
    "sd15": SizeLimits(128, 64, 262_144, 1_048_576, 512),
    "sd2": SizeLimits(128, 64, 262_144, 1_048_576, 512),
    "sd2-768": SizeLimits(128, 64, 589_824, 1_048_576, 768),
    "sdxl": SizeLimits(128, 64, 262_144, 2_359_296, 1024),
    # The bundled model is trained at 64x64; larger sizes still work, within reason.
    "shapes": SizeLimits(64, 64, 4_096, 262_144, 64),
    "tiny": SizeLimits(32, 8, 1_024, 262_144, 64),
    # The tiny test model capped at 128x128: a fuzzer's affordable jobs stay seconds long on a CPU.
    "tiny-128": SizeLimits(32, 8, 1_024, 16_384, 64),
}
UPSCALE_MAX_PIXELS = 4_194_304
MAX_IMAGES_PER_JOB = 16  # whatever a dialect allows, one job never makes more images than this
MAX_UPLOAD_SIDE = 4096  # pixels a side of an uploaded image, for every dialect

# ---- lists ----------------------------------------------------------------------------------------
MAX_PROMPTS = 32  # prompts in one list (positive, or negative); each is one text-encoder pass
MAX_STAGES = 12  # stages of one job
MAX_LORAS = 10  # LoRAs applied to one diffusion pass
MAX_EMBEDDINGS = 20  # textual-inversion embeddings loaded for one diffusion pass
MAX_ADETAILER_REGIONS = 8  # detect-and-repaint passes of one adetailer stage
MAX_EXTENSION_UNITS = 8  # ControlNet / animateDiff units on the wire (refused while unsupported)
MAX_SAMPLES = 10  # images one synchronous request makes (Stability v1's `samples`)
MAX_COUNT = 8  # images one `/v1/jobs` job makes (`inputInitialize.count`)
MAX_INPUT_IMAGES = 8  # images one request carries inline (A1111 `init_images`, `imageList`; EKS content)

# ---- numbers --------------------------------------------------------------------------------------
# Every float on the wire is finite (NaN and Infinity are refused); weights are also bounded, so sums
# of them stay finite too.
MAX_WEIGHT = 100.0  # magnitude of a prompt, LoRA or embedding weight


def limits_for(family: str) -> SizeLimits:
    return FAMILY_LIMITS.get(family, FAMILY_LIMITS["sd15"])


def check_size(width: int, height: int, family: str) -> None:
    """Raise the Stability-named error for a width/height the family cannot take."""
    lim = limits_for(family)
    if width % lim.multiple or height % lim.multiple or min(width, height) < lim.min_side:
        raise InvalidParams(
            f"height and width must be specified in increments of {lim.multiple} "
            f"and be at least {lim.min_side}",
            code="invalid_height_or_width",
        )
    if not lim.min_pixels <= width * height <= lim.max_pixels:
        raise InvalidParams(
            f"incorrect number of pixels: {lim.min_pixels:,} <= height * width <= {lim.max_pixels:,} "
            f"for this engine, got {width * height:,}",
            code="invalid_pixel_count",
        )
