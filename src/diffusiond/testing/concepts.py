"""Pictures of concepts the bundled `shapes` model lacks, and pixel checks that find them.

The `shapes` model draws one small or large circle, square or triangle, away from the image's edges,
in one of ten palette colours. Its autoencoder knows those colours only (an off-palette pink comes
back magenta), so the concepts here are shapes, not colours:

- `huge`: a circle or square filling most of the frame (side 0.9; the base model's largest is 0.55);
- `stripe`: a band from the left edge to the right edge (the base model never touches an edge).

The README's custom-model walkthrough and the end-to-end tests upload these (no captions: the
custom-model API takes pictures only, and a training captions each with its trigger word):

    python -m diffusiond.testing.concepts huge ./huge --count 12
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

from diffusiond.engine.training.shapes_dataset import COLORS, PALETTE
from diffusiond.testing.shapes_checks import (
    ImageLike,
    area_fraction,
    as_rgb_array,
    bounding_box,
    foreground_mask,
    largest_component,
)

SUPERSAMPLE = 4
HUGE_SIDE = 0.9  # of the image side
HUGE_MIN_AREA = 0.45  # a large square of the base model covers 0.30 of the image, a huge circle 0.64
STRIPE_HEIGHT = 0.34  # of the image side
STRIPE_CENTERS = (0.28, 0.5, 0.72)  # top, centre, bottom


def _canvas(background: str, size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (size * SUPERSAMPLE,) * 2, PALETTE[background])
    return image, ImageDraw.Draw(image)


def huge(colour: str, background: str, rng: random.Random, size: int = 64) -> Image.Image:
    """A circle or square of side 0.9, centred (a little jitter)."""
    image, pen = _canvas(background, size)
    big = size * SUPERSAMPLE
    side = big * HUGE_SIDE * rng.uniform(0.96, 1.0)
    cx, cy = big * rng.uniform(0.48, 0.52), big * rng.uniform(0.48, 0.52)
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    if rng.random() < 0.5:
        pen.ellipse(box, fill=PALETTE[colour])
    else:
        pen.rectangle(box, fill=PALETTE[colour])
    return image.resize((size, size), Image.Resampling.BOX)


def stripe(colour: str, background: str, rng: random.Random, size: int = 64) -> Image.Image:
    """A full-width band at the top, the centre or the bottom."""
    image, pen = _canvas(background, size)
    big = size * SUPERSAMPLE
    cy = big * (rng.choice(STRIPE_CENTERS) + rng.uniform(-0.02, 0.02))
    half = big * STRIPE_HEIGHT / 2
    pen.rectangle((0, cy - half, big, cy + half), fill=PALETTE[colour])
    return image.resize((size, size), Image.Resampling.BOX)


def is_huge(image: ImageLike) -> bool:
    """The shape covers more of the image than the base model's large shapes ever do."""
    return area_fraction(image) >= HUGE_MIN_AREA


def reaches_both_sides(image: ImageLike) -> bool:
    """The shape reaches (nearly) the left and the right edge."""
    a = as_rgb_array(image)
    box = bounding_box(largest_component(foreground_mask(a)))
    return box is not None and box[0] <= 2 and box[2] >= a.shape[1] - 2


def is_stripe(image: ImageLike) -> bool:
    """A band: it reaches both side edges and leaves the top or the bottom edge clear."""
    a = as_rgb_array(image)
    box = bounding_box(largest_component(foreground_mask(a)))
    return box is not None and reaches_both_sides(a) and (box[3] - box[1]) <= 0.7 * a.shape[0]


Draw = Callable[[str, str, random.Random, int], Image.Image]
CONCEPTS: dict[str, Draw] = {"huge": huge, "stripe": stripe}
CHECKS: dict[str, Callable[[ImageLike], bool]] = {"huge": is_huge, "stripe": is_stripe}


def pictures(concept: str, count: int = 12, seed: int = 0, size: int = 64) -> list[Image.Image]:
    """`count` pictures of the concept in varied colours (a pure function of the seed)."""
    rng = random.Random(f"{concept}-{seed}")
    out = []
    for _ in range(count):
        colour, background = rng.sample(COLORS, 2)
        out.append(CONCEPTS[concept](colour, background, rng, size))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write pictures of a concept the `shapes` model lacks.")
    parser.add_argument("concept", choices=sorted(CONCEPTS))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=12)
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(pictures(args.concept, args.count)):
        image.save(args.folder / f"{args.concept}-{i:02d}.png")
    print(f"wrote {args.count} pictures to {args.folder}")


if __name__ == "__main__":
    main()
