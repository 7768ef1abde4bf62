from __future__ import annotations

from diffusiond.domain.infotext import infotext, parse
from diffusiond.domain.params import (
    Diffusion,
    GenerateSpec,
    LoraRef,
    Sampler,
    Schedule,
    Txt2Img,
    Upscale,
    WeightedPrompt,
)


def spec(**kwargs: object) -> GenerateSpec:
    d = Diffusion(model="shapes", prompts=(WeightedPrompt("a red circle, on blue"),),
                  negative_prompts=(WeightedPrompt("blurry"),), width=64, height=64, steps=20, cfg_scale=7.0,
                  sampler=Sampler.K_DPMPP_2M, schedule=Schedule.KARRAS, loras=(LoraRef("sharp", 0.8),), **kwargs)  # type: ignore[arg-type]
    hires = Upscale(upscaler="lanczos", scale=2.0, hires=d, hires_strength=0.5)
    return GenerateSpec(stages=(Txt2Img(d), hires), count=2, seed=5)


def test_infotext_reads_like_a1111_and_parses_back() -> None:
    text = infotext(spec(clip_skip=2, subseed=9, subseed_strength=0.25), 1)
    assert text is not None
    lines = text.split("\n")
    assert lines[0] == "a red circle, on blue <lora:sharp:0.8>"
    assert lines[1] == "Negative prompt: blurry"
    assert lines[2].startswith("Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 5, ")
    parsed = parse(text)
    assert parsed["Prompt"] == lines[0] and parsed["Negative prompt"] == "blurry"
    assert parsed["Seed"] == "5"  # variation: every image shares the seed ...
    assert parsed["Variation seed"] == "10" and parsed["Variation seed strength"] == "0.25"  # ... its subseed steps
    assert (parsed["Size-1"], parsed["Size-2"]) == (64, 64)
    assert parsed["Hires upscale"] == "2" and parsed["Hires upscaler"] == "Lanczos"
    assert parsed["Clip skip"] == "2" and parsed["Model"] == "shapes"


def test_quoted_values_and_plain_prompts() -> None:
    parsed = parse('just words\nSteps: 4, Sampler: Euler, Model: "a, b", Seed: 1')
    assert parsed["Prompt"] == "just words" and parsed["Model"] == "a, b" and parsed["Negative prompt"] == ""
    assert parse("only a prompt") == {"Prompt": "only a prompt", "Negative prompt": ""}


def test_image_seeds_step_unless_varied() -> None:
    assert spec().image_seeds() == [5, 6]
    assert spec(subseed_strength=0.5).image_seeds() == [5, 5]
