"""The bundled `shapes` model does what prompts, seeds, guidance, img2img, inpainting and upscaling ask.

Every assertion measures pixels with `diffusiond.testing.shapes_checks`. The model runs through plain
diffusers pipelines (the code paths real SD 1.x checkpoints use), on CPU generators.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import diffusiond
from diffusiond.engine.training.shapes_dataset import (
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeLabel,
    full_caption,
    render,
)
from diffusiond.testing import shapes_checks as checks

# SHAPES_MODEL points the suite at another folder (e.g. a training snapshot) while developing.
MODEL = Path(os.environ.get("SHAPES_MODEL", Path(diffusiond.__file__).parent / "bundled" / "shapes"))
STEPS = 20
CFG = 5.0


@pytest.fixture(scope="module")
def pipe() -> Any:
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(MODEL, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def _txt2img(
    pipe: Any, prompts: Sequence[str], seeds: Sequence[int], size: int = 64, **kwargs: Any
) -> list[Any]:
    out = pipe(list(prompts), generator=_generators(seeds), num_inference_steps=STEPS, guidance_scale=CFG,
               height=size, width=size, **kwargs)
    return list(out.images)


def _prompt_set() -> list[ShapeLabel]:
    """30 prompts: every colour is the shape colour 3 times and the background 3 times."""
    pairs = [(c, b) for shift in (1, 4, 7)
             for c, b in zip(COLORS, COLORS[shift:] + COLORS[:shift], strict=True)]
    return [ShapeLabel(c, b, SHAPES[i % 3], SIZES[(i // 3) % 2], POSITIONS[(i // 2) % 5])
            for i, (c, b) in enumerate(pairs)]


@pytest.fixture(scope="module")
def readings(pipe: Any) -> list[tuple[ShapeLabel, checks.ShapeReading]]:
    """30 prompts x 2 seeds, generated once and read by the checks."""
    labels = _prompt_set()
    jobs = list(itertools.product(labels, (0, 1)))
    images = _txt2img(pipe, [full_caption(label) for label, _ in jobs], [seed for _, seed in jobs])
    return [(label, checks.read_image(image)) for (label, _), image in zip(jobs, images, strict=True)]


def _rate(pairs: list[tuple[ShapeLabel, checks.ShapeReading]], field: str) -> float:
    if field == "colors":
        hits = [r.color == lb.color and r.background == lb.background for lb, r in pairs]
    else:
        hits = [getattr(r, field) == getattr(lb, field) for lb, r in pairs]
    return sum(hits) / len(hits)


def test_prompt_colours_are_followed_across_the_palette(readings: list[tuple[ShapeLabel, Any]]) -> None:
    assert len(readings) == 60
    assert _rate(readings, "colors") >= 0.9


def test_shape_kind_and_position_are_followed_for_a_clear_majority(
    readings: list[tuple[ShapeLabel, Any]],
) -> None:
    assert _rate(readings, "shape") >= 0.6
    assert _rate(readings, "position") >= 0.6


def test_same_seed_same_image_different_seed_different_image(pipe: Any) -> None:
    prompt = "a circle"  # leaves colours and place open, so seeds have room to differ
    a = _txt2img(pipe, [prompt], [11])[0]
    b = _txt2img(pipe, [prompt], [11])[0]
    c = _txt2img(pipe, [prompt], [12])[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert checks.mean_abs_diff(a, c) > 5.0


def test_negative_prompt_moves_the_background_away_from_the_named_colour(pipe: Any) -> None:
    seeds = [0, 1, 2, 3]
    prompt = "a white circle"  # no background named: the model picks one per seed
    baseline = _txt2img(pipe, [prompt] * len(seeds), seeds)
    backgrounds = [checks.background_color(image) for image in baseline]
    negatives = [f"{color} background" for color in backgrounds]
    steered = _txt2img(pipe, [prompt] * len(seeds), seeds, negative_prompt=negatives)
    moved = 0
    for before, after, color in zip(baseline, steered, backgrounds, strict=True):
        gain = checks.color_distance(checks.background_rgb(after), color) - checks.color_distance(
            checks.background_rgb(before), color)
        moved += gain > 40 and checks.background_color(after) != color
    assert moved >= 3, backgrounds


def _init_image() -> Image.Image:
    return render(ShapeLabel("yellow", "purple", "square", "large", "center"))


def test_img2img_strength_near_zero_returns_the_init_image(pipe: Any) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    init = _init_image()
    out = img2img("a small green circle on the left on a white background", image=init, strength=0.1,
                  num_inference_steps=STEPS, guidance_scale=CFG,
                  generator=torch.Generator().manual_seed(0)).images[0]
    assert checks.mean_abs_diff(out, init) < 10.0
    assert (checks.shape_color(out), checks.background_color(out)) == ("yellow", "purple")


def test_img2img_strength_near_one_follows_the_prompt(pipe: Any) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    init = _init_image()
    outs = img2img(["a small green circle on the left on a white background"] * 2, image=[init, init],
                   strength=0.95, num_inference_steps=STEPS, guidance_scale=CFG,
                   generator=_generators([0, 1])).images
    for out in outs:
        reading = checks.read_image(out)
        assert (reading.color, reading.background) == ("green", "white")
        assert checks.mean_abs_diff(out, init) > 60.0


def test_inpainting_keeps_outside_pixels_and_paints_the_prompt_colour_inside(pipe: Any) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    inpaint = StableDiffusionInpaintPipeline(**pipe.components)
    init = render(ShapeLabel("white", "black", "square", "large", "center"))
    inside = checks.box_mask(64, 64, (16, 16, 48, 48))
    mask = Image.fromarray((inside * 255).astype(np.uint8))
    outs = inpaint(["a large red square in the center on a black background"] * 2, image=[init, init],
                   mask_image=[mask, mask], strength=1.0, num_inference_steps=STEPS, guidance_scale=CFG,
                   height=64, width=64, generator=_generators([0, 1])).images
    outside = ~checks.box_mask(64, 64, (12, 12, 52, 52))  # a 4-pixel band of blending at the edge
    for out in outs:
        # diffusers decodes the whole latent, so outside pixels carry the autoencoder's round-trip error.
        assert checks.mean_abs_diff(out, init, outside) < 12.0
        assert checks.region_color(out, checks.box_mask(64, 64, (22, 22, 42, 42))) == "red"


def test_larger_sizes_still_follow_the_prompt(pipe: Any) -> None:
    label = ShapeLabel("orange", "blue", "circle", "large", "center")
    image = _txt2img(pipe, [full_caption(label)], [0], size=128)[0]
    assert image.size == (128, 128)
    reading = checks.read_image(image)
    assert (reading.color, reading.background) == ("orange", "blue")


def test_upscale_has_the_requested_size_and_matches_the_source(pipe: Any) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    prompt = "a large magenta triangle in the center on a cyan background"
    source = _txt2img(pipe, [prompt], [3])[0]
    resized = source.resize((128, 128), Image.Resampling.LANCZOS)
    # A "hires fix": re-diffuse the resized image lightly so edges are re-drawn at the new size.
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    upscaled = img2img(prompt, image=resized, strength=0.3, num_inference_steps=STEPS, guidance_scale=CFG,
                       generator=torch.Generator().manual_seed(3)).images[0]
    assert upscaled.size == (128, 128)
    for big in (resized, upscaled):
        back = big.resize((64, 64), Image.Resampling.LANCZOS)
        assert checks.mean_abs_diff(back, source) < 12.0
    reading = checks.read_image(upscaled)
    expected = (checks.shape_color(source), checks.background_color(source))
    assert (reading.color, reading.background) == expected
