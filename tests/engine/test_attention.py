"""The signed SDPA processor: the same attention as diffusers' default, bit for bit, minus a lookup."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from diffusiond.engine.attention import fast_attention


def test_swapped_processors_give_identical_outputs(tiny_sd_dir: Path) -> None:
    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet").eval()
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((2, unet.config.in_channels, 8, 8), generator=generator)
    context = torch.randn((2, 7, unet.config.cross_attention_dim), generator=generator)
    with torch.no_grad():
        before = unet(latents, 10, context).sample
        swapped = fast_attention(unet)
        after = unet(latents, 10, context).sample
    processors = list(unet.attn_processors.values())
    assert swapped == len(processors) > 0
    assert all(isinstance(p, AttnProcessor2_0) and type(p) is not AttnProcessor2_0 for p in processors)
    assert torch.equal(before, after)
    # What diffusers reads on every call is the stored signature, with the same parameters.
    signed = processors[0].__call__
    assert inspect.signature(signed).parameters.keys() == \
        inspect.signature(AttnProcessor2_0().__call__).parameters.keys()


def test_other_processors_are_left_alone(tiny_sd_dir: Path) -> None:
    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet")
    unet.set_attn_processor(AttnProcessor())
    assert fast_attention(unet) == 0
    assert all(type(p) is AttnProcessor for p in unet.attn_processors.values())
