"""A JobSpec survives the JSON round trip exactly (the job row is what the worker runs)."""

from __future__ import annotations

from diffusiond.domain.params import (
    Adetailer,
    AdetailerRegion,
    Diffusion,
    EmbeddingRef,
    ImageRef,
    Inpaint,
    JobSpec,
    LoraRef,
    MaskSource,
    Sampler,
    Schedule,
    Txt2Img,
    Upscale,
    WeightedPrompt,
)
from diffusiond.domain.spec_codec import spec_from_json, spec_to_json


def test_round_trip_of_every_stage_kind() -> None:
    d = Diffusion(model="m", prompts=(WeightedPrompt("a", 0.5), WeightedPrompt("b")),
                  negative_prompts=(WeightedPrompt("c"),), sampler=Sampler.K_HEUN, schedule=Schedule.KARRAS,
                  loras=(LoraRef("l", 0.7),), embeddings=(EmbeddingRef("e", "tok"),))
    spec = JobSpec(
        stages=(
            Txt2Img(d),
            Upscale(upscaler="lanczos", scale=2.0, hires=d),
            Inpaint(d, mask=ImageRef("m.png"), mask_source=MaskSource.MASK_IMAGE_BLACK, invert=True),
            Adetailer(regions=(AdetailerRegion(detector="shapes", diffusion=d),)),
        ),
        count=3, seed=42, init=ImageRef("i.png"),
    )
    assert spec_from_json(spec_to_json(spec)) == spec
