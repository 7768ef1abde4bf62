from __future__ import annotations

import torch

from diffusiond.domain.params import GenerateSpec, Txt2Img
from diffusiond.engine.runner import Engine
from diffusiond.engine.tiling import circular_padding
from tests.engine.conftest import Context, diffusion


def _decode(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = vae.decode(latents, return_dict=False)[0]  # type: ignore[operator]
    return out


def test_circular_padding_makes_the_decoder_wrap_around(engine: Engine) -> None:
    vae = engine.cache.get("tiny").base.vae
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    shifted = torch.roll(latents, shifts=3, dims=3)
    with circular_padding([vae], True):
        image, moved = _decode(vae, latents), _decode(vae, shifted)
    factor = image.shape[-1] // latents.shape[-1]
    # wrapped around: moving the latents across the border moves the picture with them, seam and all
    assert torch.allclose(torch.roll(image, shifts=3 * factor, dims=3), moved, atol=1e-4)
    plain, plain_moved = _decode(vae, latents), _decode(vae, shifted)
    assert not torch.allclose(torch.roll(plain, shifts=3 * factor, dims=3), plain_moved, atol=1e-2)


def test_a_tiling_job_changes_the_image_and_leaves_the_model_as_it_was(engine: Engine, ctx: Context) -> None:
    def run(tiling: bool) -> bytes:
        return engine.run(GenerateSpec(stages=(Txt2Img(diffusion(tiling=tiling)),), seed=9), ctx)[0].image.tobytes()

    plain = run(False)
    assert run(True) != plain
    assert run(False) == plain
    convs = [m for m in engine.cache.get("tiny").base.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.padding_mode == "zeros" for m in convs)
