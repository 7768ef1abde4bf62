from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import GenerateSpec, Txt2Img, Upscale
from diffusiond.engine.runner import Engine
from diffusiond.engine.upscale import target_size
from diffusiond.engine.upscalers import load_upscaler, read_state_dict
from tests.engine.conftest import Context, TinyModels, diffusion


def test_lanczos_sizes(engine: Engine, ctx: Context) -> None:
    ref = ctx.put("small", Image.new("RGB", (40, 30), (200, 10, 10)))
    by_width = engine.run(GenerateSpec(stages=(Upscale(init=ref, width=80),)), ctx)[0].image
    exact = engine.run(GenerateSpec(stages=(Upscale(init=ref, width=100, height=50),)), ctx)[0].image
    scaled = engine.run(GenerateSpec(stages=(Upscale(init=ref, scale=3),)), ctx)[0].image
    default = engine.run(GenerateSpec(stages=(Upscale(init=ref),)), ctx)[0].image
    assert (by_width.size, exact.size, scaled.size, default.size) == ((80, 60), (100, 50), (120, 90), (80, 60))
    assert by_width.getpixel((40, 30)) == (200, 10, 10)


@pytest.mark.parametrize("model_id", ["x2", "x2-pth"])
def test_esrgan_through_spandrel(engine: Engine, ctx: Context, model_id: str) -> None:
    out = engine.run(GenerateSpec(stages=(Txt2Img(diffusion()), Upscale(upscaler=model_id)), count=2, seed=1), ctx)
    assert [g.image.size for g in out] == [(128, 128), (128, 128)]
    odd = ctx.put("odd", Image.new("RGB", (24, 16), (0, 90, 0)))
    out = engine.run(GenerateSpec(stages=(Upscale(upscaler=model_id, init=odd, width=60),)), ctx)
    assert out[0].image.size == (60, 40)


def test_safetensors_and_pth_load_the_same_network(tiny: TinyModels) -> None:
    a = read_state_dict(tiny.esrgan_safetensors)
    b = read_state_dict(tiny.esrgan_pth)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Payload:
    """Any object a weights-only load must refuse to rebuild."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


def test_pickles_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": Payload()}, str(evil))
    with pytest.raises(InvalidParams, match="weights-only"):
        read_state_dict(evil)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not even read")
    with pytest.raises(InvalidParams, match="pickle"):
        load_upscaler(ModelRecord("c", ModelKind.UPSCALER, ModelFormat.PTH, str(ckpt)))


def test_hires_pass_rediffuses_at_new_size(engine: Engine, ctx: Context) -> None:
    plain = Upscale(scale=2)
    hires = Upscale(scale=2, hires=diffusion(width=128, height=128), hires_strength=0.5)
    a = engine.run(GenerateSpec(stages=(Txt2Img(diffusion()), plain), seed=3), ctx)[0].image
    b = engine.run(GenerateSpec(stages=(Txt2Img(diffusion()), hires), seed=3), ctx)[0].image
    assert a.size == b.size == (128, 128)
    assert a.tobytes() != b.tobytes()


def test_target_size_rules() -> None:
    assert target_size((100, 50), Upscale(height=100), None) == (200, 100)
    assert target_size((100, 50), Upscale(), 4) == (400, 200)
    with pytest.raises(InvalidParams):
        target_size((5000, 5000), Upscale(scale=2), None)


def test_spandrel_imports_without_torchvision() -> None:
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    import sys

    from diffusiond.engine.upscalers import ensure_spandrel_importable

    ensure_spandrel_importable()
    assert "spandrel" in sys.modules
    # the placeholder is gone again: other libraries still see that torchvision is not installed
    assert "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None
    lama = sys.modules["spandrel.architectures.LaMa.__arch.LaMa"]
    with pytest.raises(RuntimeError, match="torchvision"):
        lama.rotate(None, None)


def test_hires_progress_keeps_rising(engine: Engine, ctx: Context) -> None:
    hires = Upscale(scale=2, hires=diffusion(width=128, height=128, steps=4), hires_strength=0.5)
    engine.run(GenerateSpec(stages=(Txt2Img(diffusion(steps=2)), hires), seed=3), ctx)
    fractions = [f for _, f in ctx.progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
