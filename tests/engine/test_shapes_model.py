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
from diffusiond.domain.params import Sampler, Schedule
from diffusiond.engine.schedulers import build_scheduler, supports_schedule
from diffusiond.engine.training.shapes_dataset import (
    COLORS,
    ShapeLabel,
    full_caption,
    labels_for_pairs,
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
    pipe: Any, prompts: Sequence[str], seeds: Sequence[int], size: int = 64, cfg: float = CFG, **kwargs: Any
) -> list[Any]:
    out = pipe(list(prompts), generator=_generators(seeds), num_inference_steps=STEPS, guidance_scale=cfg,
               height=size, width=size, **kwargs)
    return list(out.images)


def _prompt_set() -> list[ShapeLabel]:
    """90 prompts: every ordered (shape colour, background) pair of the palette, as in the grid."""
    return labels_for_pairs(list(itertools.permutations(COLORS, 2)))


@pytest.fixture(scope="module")
def readings(pipe: Any) -> list[tuple[ShapeLabel, checks.ShapeReading]]:
    """90 prompts x 2 seeds, generated once and read by the checks (what scripts/shapes_grid.py does)."""
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


# Issue 3's targets, measured on the shipped weights over the whole palette (97.2% colours, 100%
# position, 98.9% size, 80.0% shape kind; see the model card).
def test_prompt_colours_are_followed_across_the_palette(readings: list[tuple[ShapeLabel, Any]]) -> None:
    assert len(readings) == 180
    assert _rate(readings, "colors") >= 0.9


def test_position_is_followed_for_a_clear_majority(readings: list[tuple[ShapeLabel, Any]]) -> None:
    assert _rate(readings, "position") >= 0.6


def test_prompt_sizes_are_followed(readings: list[tuple[ShapeLabel, Any]]) -> None:
    assert _rate(readings, "size") >= 0.9


def test_shape_kind_is_followed_for_a_clear_majority(readings: list[tuple[ShapeLabel, Any]]) -> None:
    assert _rate(readings, "shape") >= 0.6


SAMPLER_PROMPTS = [ShapeLabel("red", "blue", "circle", "large", "center"),
                   ShapeLabel("yellow", "green", "square", "large", "center"),
                   ShapeLabel("white", "black", "triangle", "large", "center"),
                   ShapeLabel("orange", "purple", "circle", "large", "center")]
# diffusers' KDPM2 schedulers with Karras sigmas do not survive the zero-terminal-SNR schedule
# (sigma_max 4096): their output decodes to a flat dark image.
KDPM2_KARRAS = {Sampler.K_DPM_2, Sampler.K_DPM_2_ANCESTRAL}
# Fewer than 3 of 4 colour pairs right in 20 steps on the shipped weights.
WEAK = {
    (Sampler.K_DPMPP_SDE, Schedule.KARRAS): "Karras spacing from sigma 4096 leaves the SDE sampler few useful steps",
}


@pytest.mark.parametrize("schedule", [Schedule.DEFAULT, Schedule.KARRAS], ids=lambda s: s.value)
@pytest.mark.parametrize("sampler", list(Sampler), ids=lambda s: s.value)
def test_every_sampler_follows_the_prompt_colours(pipe: Any, sampler: Sampler, schedule: Schedule) -> None:
    from diffusers import StableDiffusionPipeline

    if not supports_schedule(sampler, schedule):
        pytest.skip(f"{sampler.value} has no {schedule.value} schedule")
    if schedule is Schedule.KARRAS and sampler in KDPM2_KARRAS:
        pytest.xfail("KDPM2 + Karras sigmas break on a zero-terminal-SNR schedule")
    if (sampler, schedule) in WEAK:
        pytest.xfail(WEAK[(sampler, schedule)])
    scheduler = build_scheduler(dict(pipe.scheduler.config), sampler, schedule)
    with_sampler = StableDiffusionPipeline(**{**pipe.components, "scheduler": scheduler})
    with_sampler.set_progress_bar_config(disable=True)
    images = _txt2img(with_sampler, [full_caption(label) for label in SAMPLER_PROMPTS], range(4))
    readings = [checks.read_image(image) for image in images]
    hits = [(r.color, r.background) == (lb.color, lb.background) for lb, r in zip(SAMPLER_PROMPTS, readings,
                                                                                  strict=True)]
    assert sum(hits) >= 3, [(r.color, r.background) for r in readings]


def test_same_seed_same_image_different_seed_different_image(pipe: Any) -> None:
    prompt = "a circle"  # leaves colours and place open, so seeds have room to differ
    a = _txt2img(pipe, [prompt], [11])[0]
    b = _txt2img(pipe, [prompt], [11])[0]
    c = _txt2img(pipe, [prompt], [12])[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert checks.mean_abs_diff(a, c) > 5.0


def test_negative_prompt_moves_the_background_away_from_the_named_colour(pipe: Any) -> None:
    seeds = [0, 1, 2, 3]
    gains, changed = [], 0
    # No background named: the model picks one per seed, and the negative prompt names that one. At
    # the APIs' default CFG 7 (the model card gives the figures at CFG 5 too).
    for prompt in ("a white circle", "a red square", "a yellow circle"):
        baseline = _txt2img(pipe, [prompt] * len(seeds), seeds, cfg=7.0)
        backgrounds = [checks.background_color(image) for image in baseline]
        steered = _txt2img(pipe, [prompt] * len(seeds), seeds, cfg=7.0,
                           negative_prompt=[f"{color} background" for color in backgrounds])
        for before, after, color in zip(baseline, steered, backgrounds, strict=True):
            gains.append(checks.color_distance(checks.background_rgb(after), color)
                         - checks.color_distance(checks.background_rgb(before), color))
            changed += checks.background_color(after) != color
    # every background moves away from the named colour; most leave it for another palette colour
    # (the model's favourite backgrounds, magenta and orange, are the stickiest)
    assert min(gains) > 5.0, gains
    assert changed >= 7, changed


def _init_image() -> Image.Image:
    return render(ShapeLabel("yellow", "purple", "square", "large", "center"))


def _vae_round_trip(pipe: Any, image: Image.Image) -> Image.Image:
    """The image encoded and decoded by the model's autoencoder: the floor for any latent edit."""
    x = pipe.image_processor.preprocess(image)
    with torch.no_grad():
        decoded = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample
    return pipe.image_processor.postprocess(decoded)[0]  # type: ignore[no-any-return]


def test_img2img_strength_near_zero_returns_the_init_image(pipe: Any) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    init = _init_image()
    floor = checks.mean_abs_diff(_vae_round_trip(pipe, init), init)
    # A prompt that describes the picture at the default guidance, and one that contradicts it
    # without guidance: both hand the init image back. (A contradicting prompt at CFG 5 repaints
    # the colours even at strength 0.1: guidance amplifies the text at every noise level; see the
    # model card.)
    for prompt, cfg in (("a yellow square on a purple background", CFG),
                        ("a small green circle on the left on a white background", 1.0)):
        out = img2img(prompt, image=init, strength=0.1, num_inference_steps=STEPS, guidance_scale=cfg,
                      generator=torch.Generator().manual_seed(0)).images[0]
        assert checks.mean_abs_diff(out, init) < floor + 4.0, prompt
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
    # the prompt describes what goes into the hole (naming the black background too makes the
    # model keep more of the hole black)
    outs = inpaint(["a large red square"] * 2, image=[init, init],
                   mask_image=[mask, mask], strength=1.0, num_inference_steps=STEPS, guidance_scale=CFG,
                   height=64, width=64, generator=_generators([0, 1])).images
    outside = ~checks.box_mask(64, 64, (12, 12, 52, 52))  # a 4-pixel band of blending at the edge
    assert _color_fraction(init, "red", inside) == 0.0
    for raw in outs:
        # diffusers decodes the whole latent, so the edit bleeds past the hole; the change must still be
        # concentrated inside it, and pasting the original back outside (as the engine does) is exact.
        assert checks.mean_abs_diff(raw, init, outside) < 0.5 * checks.mean_abs_diff(raw, init, inside)
        out = Image.fromarray(np.where(inside[..., None], np.asarray(raw), np.asarray(init)))
        assert checks.mean_abs_diff(out, init, ~inside) == 0.0
        # the init has no red at all; red must fill a good part of the hole, and only the hole
        red_inside = _color_fraction(out, "red", inside)
        assert red_inside > 0.3, red_inside
        assert _color_fraction(out, "red", outside) < 0.02


def _color_fraction(image: Image.Image, name: str, mask: np.ndarray) -> float:
    """The share of masked pixels whose nearest palette colour is `name`."""
    pixels = checks.as_rgb_array(image)[mask]
    return sum(checks.nearest_color(p) == name for p in pixels) / len(pixels)


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
    floor = checks.mean_abs_diff(_vae_round_trip(pipe, resized), resized)
    assert checks.mean_abs_diff(resized.resize((64, 64), Image.Resampling.LANCZOS), source) < 3.0
    back = upscaled.resize((64, 64), Image.Resampling.LANCZOS)
    assert checks.mean_abs_diff(back, source) < floor + 6.0
    # same picture: same background, and a shape colour within a small RGB distance of the source's
    assert checks.background_color(upscaled) == checks.background_color(source)
    source_rgb, upscaled_rgb = checks.shape_rgb(source), checks.shape_rgb(upscaled)
    assert source_rgb is not None and upscaled_rgb is not None
    assert float(np.linalg.norm(source_rgb - upscaled_rgb)) < 60.0
