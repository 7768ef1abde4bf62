from __future__ import annotations

import numpy as np
from PIL import Image

from diffusiond.domain.params import GenerateSpec, Img2Img, Txt2Img
from diffusiond.engine.img2img import effective_steps
from diffusiond.engine.runner import Engine
from tests.engine.conftest import Context, diffusion


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    x, y = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
    return float(np.abs(x - y).mean())


def gradient(width: int = 64, height: int = 64) -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 4 % 256, y * 4 % 256, 128) for y in range(height) for x in range(width)])
    return image


def test_strength_zero_returns_the_init_image(engine: Engine, ctx: Context) -> None:
    init = gradient(60, 44)  # not a multiple of 8: still returned untouched
    ref = ctx.put("init", init)
    out = engine.run(GenerateSpec(stages=(Img2Img(diffusion(), init=ref, strength=0.0),), count=2, seed=1), ctx)
    assert [g.image.tobytes() for g in out] == [init.tobytes(), init.tobytes()]


def test_strength_changes_image_and_keeps_size(engine: Engine, ctx: Context) -> None:
    init = gradient(72, 56)
    ref = ctx.put("init", init)
    light = engine.run(GenerateSpec(stages=(Img2Img(diffusion(steps=8), init=ref, strength=0.25),), seed=1), ctx)[0]
    heavy = engine.run(GenerateSpec(stages=(Img2Img(diffusion(steps=8), init=ref, strength=1.0),), seed=1), ctx)[0]
    assert light.image.size == heavy.image.size == (72, 56)
    # more strength moves further from the init image
    assert 0 < mean_abs_diff(light.image, init) < mean_abs_diff(heavy.image, init)


def test_step_schedule_end_stops_early(engine: Engine, ctx: Context) -> None:
    ref = ctx.put("init", gradient())
    full = engine.run(GenerateSpec(stages=(Img2Img(diffusion(steps=8), init=ref, strength=1.0),), seed=2), ctx)[0]
    ctx.progress.clear()
    cut = Img2Img(diffusion(steps=8), init=ref, strength=1.0, step_schedule_end=0.5)
    early = engine.run(GenerateSpec(stages=(cut,), seed=2), ctx)[0]
    assert early.image.tobytes() != full.image.tobytes()
    assert ctx.progress[-1][1] == 1.0


def test_img2img_on_previous_stage(engine: Engine, ctx: Context) -> None:
    spec = GenerateSpec(stages=(Txt2Img(diffusion()), Img2Img(diffusion(), strength=0.0)), count=2, seed=9)
    chained = engine.run(spec, ctx)
    alone = engine.run(GenerateSpec(stages=(Txt2Img(diffusion()),), count=2, seed=9), ctx)
    assert [g.image.tobytes() for g in chained] == [g.image.tobytes() for g in alone]


def test_effective_steps_runs_at_least_one() -> None:
    assert effective_steps(10, 0.5) == 10
    assert effective_steps(4, 0.1) == 10


def test_img2img_with_an_inpainting_unet(engine: Engine, ctx: Context) -> None:
    init = gradient(64, 48)
    ref = ctx.put("init", init)
    out = engine.run(GenerateSpec(stages=(Img2Img(diffusion("tiny-inpaint"), init=ref, strength=0.5),), seed=1), ctx)
    assert out[0].image.size == (64, 48)
    assert mean_abs_diff(out[0].image, init) > 0
