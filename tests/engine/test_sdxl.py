"""The SDXL code paths (two text encoders, pooled embeddings, time ids) on a tiny SDXL model."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import (
    EmbeddingRef,
    GenerateSpec,
    Img2Img,
    Inpaint,
    LoraMix,
    LoraRef,
    Txt2Img,
    WeightedPrompt,
)
from diffusiond.engine.runner import Engine
from diffusiond.testing.tiny_models import save_tiny_lora
from tests.engine.conftest import Context, Resolver, diffusion, max_abs_diff


@pytest.fixture(scope="module")
def xl(tmp_path_factory: pytest.TempPathFactory, resolver: Resolver) -> str:
    from diffusiond.testing.tiny_models import save_tiny_embedding, save_tiny_sdxl

    root = tmp_path_factory.mktemp("xl")
    folder = save_tiny_sdxl(root / "tiny-xl")
    emb = save_tiny_embedding(root / "xl_emb.safetensors", sdxl=True)
    resolver.add(ModelRecord("tiny-xl", ModelKind.CHECKPOINT, ModelFormat.DIFFUSERS, str(folder), family="sdxl"))
    resolver.add(ModelRecord("tiny-xl-emb", ModelKind.EMBEDDING, ModelFormat.SAFETENSORS, str(emb), family="sdxl"))
    return "tiny-xl"


def test_sdxl_txt2img_img2img_inpaint(engine: Engine, ctx: Context, xl: str) -> None:
    d = diffusion(xl, prompts=(WeightedPrompt("a cat"), WeightedPrompt("a hat", 0.5)))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 31, 31), fill=255)
    stages = (Txt2Img(d), Img2Img(d, strength=0.5), Inpaint(d, mask=ctx.put("m", mask)))
    spec = GenerateSpec(stages=stages, count=2, seed=4)
    out = engine.run(spec, ctx)
    assert [g.image.size for g in out] == [(64, 64), (64, 64)]
    assert max_abs_diff(out[0].image, out[1].image) > 0
    again = engine.run(GenerateSpec(stages=(Txt2Img(d),), seed=4), ctx)[0].image
    assert again.tobytes() == engine.run(GenerateSpec(stages=(Txt2Img(d),), seed=4), ctx)[0].image.tobytes()
    assert engine.cache.get(xl).loaded.is_sdxl


def test_sdxl_embedding_loads_into_both_encoders(engine: Engine, ctx: Context, xl: str, tmp_path: Path) -> None:
    prompt = "a photo of xlemb"
    plain = engine.run(GenerateSpec(stages=(Txt2Img(diffusion(xl, prompt=prompt)),), seed=1), ctx)[0].image
    ref = EmbeddingRef("tiny-xl-emb", token="xlemb")
    embedded = engine.run(GenerateSpec(stages=(Txt2Img(diffusion(xl, prompt=prompt, embeddings=(ref,))),), seed=1), ctx)
    assert embedded[0].image.tobytes() != plain.tobytes()
    pipe = engine.cache.get(xl).base
    assert "xlemb" not in pipe.tokenizer.get_vocab() and "xlemb" not in pipe.tokenizer_2.get_vocab()


def test_sdxl_encoding_matches_diffusers_and_chunks(engine: Engine, xl: str) -> None:
    import torch

    from diffusiond.engine.prompts import encode_prompts

    pipe = engine.cache.get(xl).base
    cpu = torch.device("cpu")
    ours = encode_prompts(pipe, diffusion(xl, prompt="a cat"), cpu, is_sdxl=True)
    with torch.no_grad():
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt("a cat", device=cpu)
    assert torch.equal(ours.prompt_embeds, embeds) and torch.equal(ours.pooled_prompt_embeds, pooled)
    assert torch.equal(ours.negative_prompt_embeds, negative)  # zeros: force_zeros_for_empty_prompt
    assert torch.equal(ours.negative_pooled_prompt_embeds, negative_pooled)
    long = encode_prompts(pipe, diffusion(xl, prompt=" ".join(["cat"] * 100)), cpu, is_sdxl=True)
    assert long.prompt_embeds.shape[1] == 154


def test_sdxl_single_file_round_trip(engine: Engine, ctx: Context, xl: str, resolver: Resolver, tmp_path: Path) -> None:
    from diffusiond.engine.single_file import export_single_file

    folder = Path(resolver.resolve(xl, ModelKind.CHECKPOINT).path)
    path = export_single_file(folder, tmp_path / "xl.safetensors")
    resolver.add(ModelRecord("tiny-xl-file", ModelKind.CHECKPOINT, ModelFormat.SAFETENSORS, str(path)))
    images = [engine.run(GenerateSpec(stages=(Txt2Img(diffusion(model, prompt="a cat")),), seed=5), ctx)[0].image
              for model in (xl, "tiny-xl-file")]
    # Same weights and configs; the single file's weights are converted views, so float sums may differ
    # in the last bit (1e-7 in the pooled text embedding): at most one 8-bit level per pixel.
    assert max_abs_diff(images[0], images[1]) <= 1


def test_sdxl_loras_compose_with_their_own_pooled_prompts(engine: Engine, ctx: Context, xl: str,
                                                          resolver: Resolver, tmp_path: Path) -> None:
    """SDXL's UNet also takes the pooled prompt vector: each composed branch gets its own."""
    for model_id, seed, word in (("xl-lora-a", 5, "FJA90AB"), ("xl-lora-b", 6, "KQZ27MD")):
        path = save_tiny_lora(tmp_path / f"{model_id}.safetensors", seed=seed, sdxl=True)
        resolver.add(ModelRecord(model_id, ModelKind.LORA, ModelFormat.SAFETENSORS, str(path), family="sdxl",
                                 trigger_words=(word,)))

    def run(weights: tuple[float, float], mix: LoraMix) -> bytes:
        loras = (LoraRef("xl-lora-a", weights[0]), LoraRef("xl-lora-b", weights[1]))
        d = diffusion(xl, prompt="a cat FJA90AB KQZ27MD", loras=loras, lora_mix=mix)
        return engine.run(GenerateSpec(stages=(Txt2Img(d),), count=2, seed=3), ctx)[0].image.tobytes()

    composed = run((1.0, 0.7), LoraMix.COMPOSED)
    assert composed != run((1.0, 0.7), LoraMix.MERGED) and composed == run((1.0, 0.7), LoraMix.COMPOSED)
    assert run((1.0, 0.0), LoraMix.COMPOSED) == run((1.0, 0.0), LoraMix.MERGED)
