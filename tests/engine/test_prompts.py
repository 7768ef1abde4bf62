from __future__ import annotations

import pytest
import torch

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import GenerateSpec, Txt2Img, WeightedPrompt
from diffusiond.engine.prompts import encode_prompts, split_by_sign
from diffusiond.engine.runner import Engine
from diffusiond.engine.style_presets import STYLE_PRESETS, apply_style
from tests.engine.conftest import Context, diffusion

STABILITY_PRESETS = {
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
    "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic",
    "pixel-art", "tile-texture",
}
LONG = ", ".join(f"word{i}" for i in range(60))  # 229 tokens: four chunks


def test_every_stability_style_preset_exists() -> None:
    assert set(STYLE_PRESETS) == STABILITY_PRESETS
    styled, negatives = apply_style("anime", (WeightedPrompt("a fox", 2.0),), ())
    assert styled[0].text.startswith("anime artwork a fox") and styled[0].weight == 2.0
    assert negatives and "photo" in negatives[0].text
    with pytest.raises(InvalidParams):
        apply_style("van-gogh", (WeightedPrompt("x"),), ())


def test_negative_weights_become_negative_prompts() -> None:
    pos, neg = split_by_sign((WeightedPrompt("a", 1.0), WeightedPrompt("b", -0.5), WeightedPrompt("c", 0)), ())
    assert [p.text for p in pos] == ["a"] and [(n.text, n.weight) for n in neg] == [("b", 0.5)]


def test_short_prompts_encode_exactly_like_diffusers(engine: Engine) -> None:
    pipe = engine.cache.get("tiny").base
    ours = encode_prompts(pipe, diffusion(prompt="a red circle"), torch.device("cpu"), is_sdxl=False)
    with torch.no_grad():
        theirs, negative = pipe.encode_prompt("a red circle", "cpu", 1, True, negative_prompt="")
    assert torch.equal(ours.prompt_embeds, theirs) and torch.equal(ours.negative_prompt_embeds, negative)


def test_clip_skip_uses_an_earlier_layer(engine: Engine) -> None:
    pipe = engine.cache.get("tiny").base
    last = encode_prompts(pipe, diffusion(), torch.device("cpu"), is_sdxl=False).prompt_embeds
    skipped = encode_prompts(pipe, diffusion(clip_skip=2), torch.device("cpu"), is_sdxl=False).prompt_embeds
    assert last.shape == skipped.shape and not torch.equal(last, skipped)


def test_long_prompts_are_chunked_not_truncated(engine: Engine, ctx: Context) -> None:
    pipe = engine.cache.get("tiny").base
    cond = encode_prompts(pipe, diffusion(prompt=LONG), torch.device("cpu"), is_sdxl=False)
    assert cond.prompt_embeds.shape[1] == 77 * 4 == cond.negative_prompt_embeds.shape[1]
    tail_changed = diffusion(prompt=LONG + ", word999")
    first = engine.run(GenerateSpec(stages=(Txt2Img(diffusion(prompt=LONG)),), seed=1), ctx)[0].image
    second = engine.run(GenerateSpec(stages=(Txt2Img(tail_changed),), seed=1), ctx)[0].image
    assert first.tobytes() != second.tobytes()  # words past token 77 still matter
    with pytest.raises(InvalidParams, match="too long"):
        encode_prompts(pipe, diffusion(prompt=LONG * 6), torch.device("cpu"), is_sdxl=False)
