"""A GenerateSpec survives the JSON round trip exactly (the job row is what the worker runs)."""

from __future__ import annotations

from diffusiond.domain.jobs import JobKind
from diffusiond.domain.merge import MergeMethod, MergeSpec
from diffusiond.domain.params import (
    Adetailer,
    AdetailerRegion,
    Diffusion,
    EmbeddingRef,
    GenerateSpec,
    ImageRef,
    Inpaint,
    LoraRef,
    MaskSource,
    Sampler,
    Schedule,
    Txt2Img,
    Upscale,
    WeightedPrompt,
)
from diffusiond.domain.spec_codec import kind_of, spec_from_json, spec_to_json
from diffusiond.domain.training import TrainingImage, TrainingSpeed, TrainMethod, TrainSpec, preset


def test_round_trip_of_every_stage_kind() -> None:
    d = Diffusion(model="m", prompts=(WeightedPrompt("a", 0.5), WeightedPrompt("b")),
                  negative_prompts=(WeightedPrompt("c"),), sampler=Sampler.K_HEUN, schedule=Schedule.KARRAS,
                  loras=(LoraRef("l", 0.7),), embeddings=(EmbeddingRef("e", "tok"),))
    spec = GenerateSpec(
        stages=(
            Txt2Img(d),
            Upscale(upscaler="lanczos", scale=2.0, hires=d),
            Inpaint(d, mask=ImageRef("m.png"), mask_source=MaskSource.MASK_IMAGE_BLACK, invert=True),
            Adetailer(regions=(AdetailerRegion(detector="shapes", diffusion=d),)),
        ),
        count=3, seed=42, init=ImageRef("i.png"),
    )
    assert spec_from_json(spec_to_json(spec)) == spec


def test_round_trip_of_training_and_merge_specs() -> None:
    images = tuple(TrainingImage(ImageRef(f"{i}.png", 64, 64), f"picture {i}") for i in range(4))
    train = TrainSpec(base_model="shapes", images=images, trigger_word="FJA90AB",
                      settings=preset(7, TrainingSpeed.HIGH_QUALITY, 64), method=TrainMethod.LORA,
                      output_model="my-lora", seed=3)
    assert kind_of(train) is JobKind.TRAIN
    assert spec_from_json(spec_to_json(train), JobKind.TRAIN) == train
    merge = MergeSpec(primary="a", secondary="b", tertiary="c", multiplier=0.4, method=MergeMethod.ADD_DIFFERENCE,
                      output_model="abc")
    assert kind_of(merge) is JobKind.MERGE
    assert spec_from_json(spec_to_json(merge), JobKind.MERGE) == merge
