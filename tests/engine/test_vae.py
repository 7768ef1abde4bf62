from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import GenerateSpec, Img2Img, Txt2Img
from diffusiond.engine.runner import Engine
from diffusiond.engine.single_file import vae_to_ldm
from tests.engine.conftest import Context, Resolver, diffusion


@pytest.fixture(scope="module")
def vaes(engine: Engine, resolver: Resolver, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny model's own VAE and a perturbed copy, both as standalone LDM-layout files."""
    root = tmp_path_factory.mktemp("vaes")
    own = engine.cache.get("tiny").base.vae.state_dict()
    same = vae_to_ldm(dict(own), 2)
    other = {k: v + 0.05 * torch.randn_like(v) if "decoder" in k else v for k, v in same.items()}
    paths = {"vae-same": root / "same.safetensors", "vae-other": root / "other.safetensors"}
    save_file({k.removeprefix("first_stage_model."): v.contiguous() for k, v in same.items()}, str(paths["vae-same"]))
    save_file({k: v.contiguous() for k, v in other.items()}, str(paths["vae-other"]))
    for name, path in paths.items():
        resolver.add(ModelRecord(name, ModelKind.VAE, ModelFormat.SAFETENSORS, str(path)))
    return {name: str(path) for name, path in paths.items()}


def image(engine: Engine, ctx: Context, vae: str | None = None) -> bytes:
    d = diffusion(vae=vae)
    return engine.run(GenerateSpec(stages=(Txt2Img(d), Img2Img(d, strength=0.5)), seed=8), ctx)[0].image.tobytes()


def test_vae_override_applies_for_one_job(engine: Engine, ctx: Context, vaes: dict[str, str]) -> None:
    base = image(engine, ctx)
    assert image(engine, ctx, "vae-same") == base  # the same weights through the LDM converter
    other = image(engine, ctx, "vae-other")
    assert other != base
    assert image(engine, ctx) == base  # and the model's own VAE is back afterwards
    cached = engine.cache.get("tiny")
    assert all(pipe.vae is cached.base.vae for pipe in cached.pipelines())


def test_vae_that_does_not_fit_is_invalid(engine: Engine, ctx: Context, resolver: Resolver, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, str(bad))
    resolver.add(ModelRecord("vae-bad", ModelKind.VAE, ModelFormat.SAFETENSORS, str(bad)))
    with pytest.raises(InvalidParams):
        image(engine, ctx, "vae-bad")
    assert image(engine, ctx) == image(engine, ctx)
