"""Pictures of concepts the bundled `shapes` model lacks, and pixel checks that find them.

The `shapes` model knows ten palette colours (`shapes_dataset.PALETTE`). A pink shape and a brown
background are outside it: the base model never draws them, so a trained model that does has
learnt them from the pictures. The README's custom-model walkthrough and the end-to-end tests train
on these pictures:

    python -m diffusiond.testing.concepts pink ./pink-pictures --count 12
"""

from __future__ import annotations

import argparse
import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from diffusiond.engine.training.shapes_dataset import COLORS, PALETTE, POSITIONS, SHAPES, SIZES, ShapeLabel, shape_box
from diffusiond.testing.shapes_checks import ImageLike, background_rgb, foreground_mask, largest_component, shape_rgb

RGB = tuple[int, int, int]
PINK: RGB = (255, 150, 200)  # nearest palette colour: white, 106 away
BROWN: RGB = (140, 80, 40)  # nearest palette colour: red, 95 away


def draw(background: RGB, colour: RGB, label: ShapeLabel, rng: random.Random, size: int = 64) -> Image.Image:
    """One picture as the shapes dataset draws them (supersampled, jittered), in any two colours.

    `label` gives the shape, its size and position (its colour names are not used)."""
    jitter = (rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(-0.08, 0.08))
    big = size * 4
    image = Image.new("RGB", (big, big), background)
    x0, y0, x1, y1 = (v * 4 for v in shape_box(label, size, jitter))
    pen = ImageDraw.Draw(image)
    if label.shape == "circle":
        pen.ellipse((x0, y0, x1, y1), fill=colour)
    elif label.shape == "square":
        pen.rectangle((x0, y0, x1, y1), fill=colour)
    else:
        pen.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    return image.resize((size, size), Image.Resampling.BOX)


def pink_shapes(count: int = 12, seed: int = 1) -> list[Image.Image]:
    """Pink circles of both sizes in every position, on palette backgrounds."""
    rng = random.Random(seed)
    backgrounds = [c for c in COLORS if c not in ("white", "magenta")]  # the two nearest pink
    return [draw(PALETTE[backgrounds[i % len(backgrounds)]], PINK,
                 ShapeLabel("red", "blue", "circle", SIZES[i % 2], POSITIONS[i % 5]), rng) for i in range(count)]


def brown_backgrounds(count: int = 12, seed: int = 2) -> list[Image.Image]:
    """Palette shapes of every kind, size and position on a brown background."""
    rng = random.Random(seed)
    colours = [c for c in COLORS if c not in ("red", "orange", "black")]  # the three nearest brown
    return [draw(BROWN, PALETTE[colours[i % len(colours)]],
                 ShapeLabel("red", "blue", SHAPES[i % 3], SIZES[i % 2], POSITIONS[i % 5]), rng)
            for i in range(count)]


CONCEPTS: dict[str, Callable[[int], list[Image.Image]]] = {"pink": pink_shapes, "brown": brown_backgrounds}


def nearest_is(rgb: Any, colour: RGB) -> bool:
    """Is `rgb` nearer to `colour` than to every palette colour (`colour` as an eleventh one)?"""
    if rgb is None:
        return False
    mine = float(np.linalg.norm(np.asarray(rgb, dtype=np.float64) - np.asarray(colour)))
    return all(mine < float(np.linalg.norm(np.asarray(rgb, dtype=np.float64) - np.asarray(p)))
               for p in PALETTE.values())


def has_pink_shape(image: ImageLike) -> bool:
    mask = largest_component(foreground_mask(image))
    return bool(mask.any()) and nearest_is(shape_rgb(image, mask), PINK)


def has_brown_background(image: ImageLike) -> bool:
    return nearest_is(background_rgb(image), BROWN)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write pictures of a concept the `shapes` model lacks.")
    parser.add_argument("concept", choices=sorted(CONCEPTS))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=12)
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(CONCEPTS[args.concept](args.count)):
        image.save(args.folder / f"{args.concept}-{i:02d}.png")
    print(f"wrote {args.count} pictures to {args.folder}")


if __name__ == "__main__":
    main()
