"""A deterministic synthetic dataset: one coloured shape on a coloured background, with a caption.

Every sample carries a `ShapeLabel` (what was drawn) next to its caption (how it was described), so
the trainer, the tests and `diffusiond.testing.shapes_checks` all agree on the vocabulary and the
geometry. Captions mention a random subset of the attributes, the way real captions do; an attribute
that a caption leaves out is still drawn, so the model learns a sensible default for it.

Pure numpy + PIL: no torch, so the tests and the pixel checks can use it cheaply.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

# Well-separated sRGB colours: the nearest palette entry of a flat colour is never ambiguous
# (the closest pair, orange/yellow, is still ~80 apart in RGB distance).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (250, 225, 40),
    "cyan": (40, 215, 225),
    "magenta": (225, 45, 205),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "orange": (250, 135, 20),
    "purple": (115, 40, 170),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
Shape = Literal["circle", "square", "triangle"]
SHAPES: tuple[Shape, ...] = ("circle", "square", "triangle")
Size = Literal["small", "large"]
SIZES: tuple[Size, ...] = ("small", "large")
Position = Literal["left", "right", "top", "bottom", "center"]
POSITIONS: tuple[Position, ...] = ("left", "right", "top", "bottom", "center")

# Shape extent (bounding-box side) as a fraction of the image side.
SIZE_FRACTION: dict[Size, float] = {"small": 0.30, "large": 0.55}
# Centre of the shape as fractions of (width, height); large shapes sit nearer the middle so they
# stay inside the frame and the border pixels stay background.
_OFFSET: dict[Size, float] = {"small": 0.24, "large": 0.17}
_DIRECTION: dict[Position, tuple[int, int]] = {
    "left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1), "center": (0, 0),
}
POSITION_PHRASE: dict[Position, str] = {
    "left": "on the left", "right": "on the right", "top": "at the top",
    "bottom": "at the bottom", "center": "in the center",
}
_SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges like a real photo of a shape


@dataclass(frozen=True)
class ShapeLabel:
    """What one image shows: the ground truth a caption describes."""

    color: str
    background: str
    shape: Shape
    size: Size
    position: Position

    def as_dict(self) -> dict[str, str]:
        """The label as a plain JSON-able dict."""
        return dict(asdict(self))


@dataclass(frozen=True)
class ShapeSample:
    """One dataset item: the image, its caption and the label it was drawn from."""

    image: Image.Image
    caption: str
    label: ShapeLabel


def full_caption(label: ShapeLabel) -> str:
    """The caption naming every attribute, e.g. 'a small red circle on the left on a blue background'."""
    return (
        f"a {label.size} {label.color} {label.shape} {POSITION_PHRASE[label.position]} "
        f"on a {label.background} background"
    )


def caption_for(label: ShapeLabel, rng: random.Random) -> str:
    """A caption in one of several templates; background, size and position are each sometimes left out."""
    size = f"{label.size} " if rng.random() < 0.75 else ""
    where = POSITION_PHRASE[label.position] if rng.random() < 0.8 else ""
    bg = label.background if rng.random() < 0.85 else ""
    shape = f"{size}{label.color} {label.shape}"
    template = rng.randrange(4)
    if template == 0:
        parts = [f"a {shape}", where, f"on a {bg} background" if bg else ""]
    elif template == 1:
        parts = [f"a {shape}", f"on a {bg} background" if bg else "", where]
    elif template == 2:
        parts = [f"{shape}, ", f"{bg} background, " if bg else "", where]
    else:
        parts = ["a picture of a", shape, where, f"on {bg}" if bg else ""]
    return " ".join(" ".join(p.strip() for p in parts if p).replace(" ,", ",").split()).strip(" ,")


def random_label(rng: random.Random) -> ShapeLabel:
    """A uniformly random label whose shape and background colours differ."""
    color, background = rng.sample(COLORS, 2)
    return ShapeLabel(color, background, rng.choice(SHAPES), rng.choice(SIZES), rng.choice(POSITIONS))


def labels_for_pairs(pairs: list[tuple[str, str]]) -> list[ShapeLabel]:
    """One label per (shape colour, background) pair, shape, size and position cycling evenly.

    The evaluation prompt sets (tests, `scripts/shapes_grid.py`) are built this way.
    """
    return [ShapeLabel(c, b, SHAPES[i % 3], SIZES[(i // 3) % 2], POSITIONS[(i // 2) % 5])
            for i, (c, b) in enumerate(pairs)]


def shape_box(label: ShapeLabel, size: int, jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[
    float, float, float, float
]:
    """The shape's bounding box (x0, y0, x1, y1) in pixels; `jitter` = (dx, dy, scale) in fractions."""
    dx, dy = _DIRECTION[label.position]
    side = SIZE_FRACTION[label.size] * (1.0 + jitter[2]) * size
    cx = (0.5 + dx * _OFFSET[label.size] + jitter[0]) * size
    cy = (0.5 + dy * _OFFSET[label.size] + jitter[1]) * size
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def render(
    label: ShapeLabel, size: int = 64, jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> Image.Image:
    """Draw `label` as an RGB image of `size` x `size` pixels."""
    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), PALETTE[label.background])
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = (v * _SUPERSAMPLE for v in shape_box(label, size, jitter))
    fill = PALETTE[label.color]
    if label.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif label.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    else:  # an upright isosceles triangle filling its box: fill ratio 0.5
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return image.resize((size, size), Image.Resampling.BOX)


def sample(index: int, *, seed: int = 0, size: int = 64) -> ShapeSample:
    """Dataset item `index` for `seed`: a pure function of (index, seed, size)."""
    rng = random.Random(f"shapes-{seed}-{index}")
    label = random_label(rng)
    jitter = (rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(-0.08, 0.08))
    return ShapeSample(render(label, size, jitter), caption_for(label, rng), label)


def iter_samples(count: int, *, seed: int = 0, size: int = 64) -> Iterator[ShapeSample]:
    """The first `count` items of the dataset for `seed`."""
    for index in range(count):
        yield sample(index, seed=seed, size=size)


def to_array(image: Image.Image) -> np.ndarray:
    """An RGB image as a uint8 (H, W, 3) array."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
