"""Image size rules per model family (Stability v1's rules for SD engines)."""

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
}
UPSCALE_MAX_PIXELS = 4_194_304
MAX_IMAGES_PER_JOB = 16  # whatever a dialect allows, one job never makes more images than this
MAX_UPLOAD_SIDE = 4096  # pixels a side of an uploaded image, for every dialect


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
