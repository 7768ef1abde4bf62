"""Pixel checks for images of one shape on a plain background (the bundled `shapes` model's world).

Tests across the project use these to assert what a generation, an edit or a LoRA did to pixels:
which palette colour the background and the shape are, where the shape is, what kind and how large.
Pure numpy + PIL, so they run anywhere. Images may be PIL images or (H, W, 3) uint8 arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from diffusiond.engine.training.shapes_dataset import PALETTE, POSITIONS, SHAPES, SIZE_FRACTION

ImageLike = Image.Image | NDArray[Any]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_PALETTE_NAMES: tuple[str, ...] = tuple(PALETTE)
_PALETTE_RGB: FloatArray = np.array([PALETTE[name] for name in _PALETTE_NAMES], dtype=np.float64)


def as_rgb_array(image: ImageLike) -> FloatArray:
    """An image as a float (H, W, 3) array of 0..255 values."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {array.shape}")
    return array


def nearest_color(rgb: FloatArray | tuple[float, float, float]) -> str:
    """The name of the palette colour nearest (Euclidean RGB) to one colour."""
    distances = np.linalg.norm(_PALETTE_RGB - np.asarray(rgb, dtype=np.float64), axis=1)
    return _PALETTE_NAMES[int(np.argmin(distances))]


def color_distance(rgb: FloatArray | tuple[float, float, float], name: str) -> float:
    """Euclidean RGB distance from a colour to the palette colour `name`."""
    target = np.asarray(PALETTE[name], dtype=np.float64)
    return float(np.linalg.norm(np.asarray(rgb, dtype=np.float64) - target))


def border_pixels(image: ImageLike, width: int = 2) -> FloatArray:
    """The pixels of the outer frame, `width` pixels thick, as an (N, 3) array."""
    a = as_rgb_array(image)
    frame = np.zeros(a.shape[:2], dtype=bool)
    frame[:width, :] = frame[-width:, :] = True
    frame[:, :width] = frame[:, -width:] = True
    return a[frame]


def background_rgb(image: ImageLike) -> FloatArray:
    """The background colour: the per-channel median of the border pixels."""
    return np.asarray(np.median(border_pixels(image), axis=0), dtype=np.float64)


def background_color(image: ImageLike) -> str:
    """The palette name of the background colour."""
    return nearest_color(background_rgb(image))


def foreground_mask(image: ImageLike, threshold: float = 60.0) -> BoolArray:
    """Pixels that belong to the shape: closer to the shape colour than to the background.

    The shape colour is first estimated from the pixels more than `threshold` away from the
    background; an empty mask means nothing stands out from the background.
    """
    a = as_rgb_array(image)
    bg = background_rgb(a)
    dist_bg = np.linalg.norm(a - bg, axis=2)
    candidates = dist_bg > threshold
    if candidates.sum() == 0:
        return np.zeros(a.shape[:2], dtype=bool)
    fg = np.median(a[candidates], axis=0)
    dist_fg = np.linalg.norm(a - fg, axis=2)
    mask: BoolArray = (dist_fg < dist_bg) & (dist_bg > threshold / 2)
    return mask


def shape_rgb(image: ImageLike, mask: BoolArray | None = None) -> FloatArray | None:
    """The shape's colour (median of the foreground mask), or None if no shape stands out."""
    a = as_rgb_array(image)
    mask = foreground_mask(a) if mask is None else mask
    if mask.sum() == 0:
        return None
    return np.asarray(np.median(a[mask], axis=0), dtype=np.float64)


def shape_color(image: ImageLike) -> str | None:
    """The palette name of the shape's colour, or None if no shape stands out."""
    rgb = shape_rgb(image)
    return None if rgb is None else nearest_color(rgb)


def bounding_box(mask: BoolArray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of a mask's True pixels, x1/y1 exclusive, or None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def fill_ratio(mask: BoolArray) -> float:
    """Mask area over bounding-box area: square ~1.0, circle ~0.785, triangle ~0.5."""
    box = bounding_box(mask)
    if box is None:
        return 0.0
    x0, y0, x1, y1 = box
    return float(mask.sum()) / float((x1 - x0) * (y1 - y0))


def shape_template(kind: str, width: int, height: int) -> BoolArray:
    """A filled `kind` (circle, square, triangle) spanning a width x height box, as the dataset draws it."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    u, v = xs / width, ys / height  # 0..1 across the box
    if kind == "circle":
        return np.asarray((u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25, dtype=bool)
    if kind == "square":
        return np.ones((height, width), dtype=bool)
    if kind == "triangle":  # apex at the top centre, base along the bottom
        return np.asarray(np.abs(u - 0.5) <= v / 2, dtype=bool)
    raise ValueError(f"unknown shape {kind!r}; expected one of {SHAPES}")


def template_scores(mask: BoolArray) -> dict[str, float]:
    """IoU of the mask's bounding-box contents with each shape template fitted to that box."""
    box = bounding_box(mask)
    if box is None:
        return dict.fromkeys(SHAPES, 0.0)
    x0, y0, x1, y1 = box
    crop = mask[y0:y1, x0:x1]
    scores: dict[str, float] = {}
    for kind in SHAPES:
        template = shape_template(kind, x1 - x0, y1 - y0)
        scores[kind] = float((crop & template).sum()) / float((crop | template).sum())
    return scores


def largest_component(mask: BoolArray) -> BoolArray:
    """The largest 4-connected region of a mask (drops stray specks)."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, current = 0, 0, 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if labels[y, x]:
            continue
        current += 1
        labels[y, x] = current
        stack, size = [(int(y), int(x))], 0
        while stack:
            cy, cx = stack.pop()
            size += 1
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                if inside and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    return np.asarray(labels == best, dtype=bool) if best else np.zeros(mask.shape, dtype=bool)


def shape_kind(image_or_mask: ImageLike | BoolArray) -> str | None:
    """circle, square or triangle: the best-fitting template (IoU), or None if there is no shape."""
    mask = _mask_of(image_or_mask)
    if mask.sum() == 0:
        return None
    scores = template_scores(mask)
    return max(scores, key=lambda kind: scores[kind])


def centroid(mask: BoolArray) -> tuple[float, float] | None:
    """(x, y) centre of mass of a mask as fractions of width and height, or None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return (float(xs.mean()) + 0.5) / mask.shape[1], (float(ys.mean()) + 0.5) / mask.shape[0]


def box_center(mask: BoolArray) -> tuple[float, float] | None:
    """(x, y) centre of a mask's bounding box as fractions of width and height, or None if empty."""
    box = bounding_box(mask)
    if box is None:
        return None
    return (box[0] + box[2]) / 2 / mask.shape[1], (box[1] + box[3]) / 2 / mask.shape[0]


def shape_position(image_or_mask: ImageLike | BoolArray, center_tolerance: float = 0.08) -> str | None:
    """left, right, top, bottom or center, from the bounding-box centre's offset from the image centre.

    The box centre, not the centroid: a triangle's centroid sits a third of the way up its box.
    """
    mask = _mask_of(image_or_mask)
    c = box_center(mask)
    if c is None:
        return None
    dx, dy = c[0] - 0.5, c[1] - 0.5
    if max(abs(dx), abs(dy)) < center_tolerance:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def area_fraction(image_or_mask: ImageLike | BoolArray) -> float:
    """The shape's area as a fraction of the image."""
    mask = _mask_of(image_or_mask)
    return float(mask.sum()) / float(mask.size)


def shape_size(image_or_mask: ImageLike | BoolArray) -> str | None:
    """small or large: which nominal side length the bounding box's longer side is closer to."""
    mask = _mask_of(image_or_mask)
    box = bounding_box(mask)
    if box is None:
        return None
    side = max(box[2] - box[0], box[3] - box[1]) / max(mask.shape)
    return min(SIZE_FRACTION, key=lambda size: abs(SIZE_FRACTION[size] - side))


def mean_abs_diff(a: ImageLike, b: ImageLike, mask: BoolArray | None = None) -> float:
    """Mean absolute per-channel difference (0..255) of two same-size images, optionally in a mask."""
    x, y = as_rgb_array(a), as_rgb_array(b)
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {x.shape} vs {y.shape}")
    diff = np.abs(x - y)
    if mask is None:
        return float(diff.mean())
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {x.shape[:2]}")
    return float(diff[mask].mean()) if mask.any() else 0.0


def region_color(image: ImageLike, mask: BoolArray) -> str:
    """The palette name of the median colour inside a mask."""
    a = as_rgb_array(image)
    if not mask.any():
        raise ValueError("empty mask")
    return nearest_color(np.median(a[mask], axis=0))


def box_mask(width: int, height: int, box: tuple[int, int, int, int]) -> BoolArray:
    """A boolean (height, width) mask that is True inside box (x0, y0, x1, y1), x1/y1 exclusive."""
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


@dataclass(frozen=True)
class ShapeReading:
    """Everything the checks read off one image; fields are None when no shape stands out."""

    background: str
    color: str | None
    shape: str | None
    position: str | None
    size: str | None
    fill_ratio: float
    area: float


def read_image(image: ImageLike) -> ShapeReading:
    """Read background, shape colour, kind, position and size off one image."""
    a = as_rgb_array(image)
    mask = largest_component(foreground_mask(a))
    rgb = shape_rgb(a, mask) if mask.any() else None
    return ShapeReading(
        background=background_color(a),
        color=None if rgb is None else nearest_color(rgb),
        shape=shape_kind(mask),
        position=shape_position(mask),
        size=shape_size(mask),
        fill_ratio=fill_ratio(mask),
        area=area_fraction(mask),
    )


def _mask_of(image_or_mask: ImageLike | BoolArray) -> BoolArray:
    if isinstance(image_or_mask, np.ndarray) and image_or_mask.dtype == np.bool_:
        return np.asarray(image_or_mask, dtype=bool)
    return largest_component(foreground_mask(image_or_mask))


__all__ = [
    "PALETTE", "POSITIONS", "SHAPES", "ShapeReading", "area_fraction", "as_rgb_array", "background_color",
    "background_rgb", "border_pixels", "bounding_box", "box_center", "box_mask", "centroid", "color_distance",
    "fill_ratio", "foreground_mask", "largest_component", "mean_abs_diff", "nearest_color", "read_image",
    "region_color", "shape_color", "shape_kind", "shape_position", "shape_rgb", "shape_size",
    "shape_template", "template_scores",
]
