from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import GenerateSpec, Inpaint, InpaintFill, MaskSource, Txt2Img
from diffusiond.engine.inpaint import build_mask
from diffusiond.engine.runner import Engine
from tests.engine.conftest import Context, diffusion

BOX = (16, 16, 48, 40)  # the repainted rectangle


def init_image() -> Image.Image:
    image = Image.new("RGB", (64, 64))
    image.putdata([(x * 4, 255 - y * 4, (x * y) % 256) for y in range(64) for x in range(64)])
    return image


def white_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((BOX[0], BOX[1], BOX[2] - 1, BOX[3] - 1), fill=255)
    return mask


def outside_box_diff(a: Image.Image, b: Image.Image) -> int:
    x = np.asarray(a.convert("RGB"), dtype=np.int16)
    y = np.asarray(b.convert("RGB"), dtype=np.int16)
    keep = np.ones(x.shape[:2], dtype=bool)
    keep[BOX[1] : BOX[3], BOX[0] : BOX[2]] = False
    return int(np.abs(x - y)[keep].max())


def inside_box_diff(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.int16)[BOX[1] : BOX[3], BOX[0] : BOX[2]]
    y = np.asarray(b.convert("RGB"), dtype=np.int16)[BOX[1] : BOX[3], BOX[0] : BOX[2]]
    return float(np.abs(x - y).mean())


def sources(ctx: Context) -> dict[MaskSource, tuple[object, object]]:
    init = init_image()
    rgba = init.copy()
    black = Image.eval(white_mask(), lambda v: 255 - v)
    rgba.putalpha(black)  # transparent inside the box
    return {
        MaskSource.MASK_IMAGE_WHITE: (ctx.put("init", init), ctx.put("white", white_mask())),
        MaskSource.MASK_IMAGE_BLACK: (ctx.put("init", init), ctx.put("black", black)),
        MaskSource.INIT_IMAGE_ALPHA: (ctx.put("rgba", rgba), None),
    }


@pytest.mark.parametrize("model", ["tiny", "tiny-inpaint"])
@pytest.mark.parametrize("source", list(MaskSource))
def test_unmasked_pixels_stay(engine: Engine, ctx: Context, model: str, source: MaskSource) -> None:
    init_ref, mask_ref = sources(ctx)[source]
    stage = Inpaint(diffusion(model), init=init_ref, mask=mask_ref, mask_source=source)  # type: ignore[arg-type]
    out = engine.run(GenerateSpec(stages=(stage,), seed=4), ctx)[0].image
    assert out.size == (64, 64)
    assert outside_box_diff(out, init_image()) <= 1
    assert inside_box_diff(out, init_image()) > 5  # and the box really was repainted


def test_only_masked_blur_and_fill(engine: Engine, ctx: Context) -> None:
    init_ref, mask_ref = sources(ctx)[MaskSource.MASK_IMAGE_WHITE]
    stage = Inpaint(
        diffusion(), init=init_ref, mask=mask_ref, only_masked=True, only_masked_padding=8, fill=InpaintFill.FILL
    )
    out = engine.run(GenerateSpec(stages=(stage,), seed=4), ctx)[0].image
    assert outside_box_diff(out, init_image()) <= 1
    blurred = Inpaint(diffusion(), init=init_ref, mask=mask_ref, mask_blur=2, fill=InpaintFill.LATENT_NOTHING)
    out = engine.run(GenerateSpec(stages=(blurred,), seed=4), ctx)[0].image
    far = np.asarray(out, dtype=np.int16)[:8], np.asarray(init_image(), dtype=np.int16)[:8]
    assert int(np.abs(far[0] - far[1]).max()) <= 1  # far from the blurred edge nothing moves


def test_inpaint_after_txt2img(engine: Engine, ctx: Context) -> None:
    mask_ref = ctx.put("white", white_mask())
    spec = GenerateSpec(stages=(Txt2Img(diffusion()), Inpaint(diffusion(), mask=mask_ref)), seed=6)
    base = engine.run(GenerateSpec(stages=(Txt2Img(diffusion()),), seed=6), ctx)[0].image
    out = engine.run(spec, ctx)[0].image
    assert outside_box_diff(out, base) <= 1


def test_build_mask_sources_and_invert() -> None:
    init = init_image()
    white = build_mask(init, white_mask(), MaskSource.MASK_IMAGE_WHITE)
    black = build_mask(init, Image.eval(white_mask(), lambda v: 255 - v), MaskSource.MASK_IMAGE_BLACK)
    assert white.tobytes() == black.tobytes()
    inverted = build_mask(init, white_mask(), MaskSource.MASK_IMAGE_WHITE, invert=True)
    assert inverted.getpixel((0, 0)) == 255 and inverted.getpixel((20, 20)) == 0


def test_missing_mask_is_a_clear_error(engine: Engine, ctx: Context) -> None:
    ref = ctx.put("init", init_image())
    with pytest.raises(InvalidParams):
        engine.run(GenerateSpec(stages=(Inpaint(diffusion(), init=ref),), seed=1), ctx)
    with pytest.raises(InvalidParams):  # RGB init has no alpha channel
        engine.run(GenerateSpec(stages=(Inpaint(diffusion(), init=ref, mask_source=MaskSource.INIT_IMAGE_ALPHA),)), ctx)
