"""Custom-model translation without a server: body parsing and its codes, sizes, presets, trigger words."""

from __future__ import annotations

import re

import pytest

from diffusiond.api.custom import schemas as w
from diffusiond.api.custom import translate as t
from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import ImageFormat, LoraRef, Txt2Img
from diffusiond.domain.training import PRESETS, TrainingSpeed, preset


@pytest.mark.parametrize("raw,code", [
    (b"", "invalid_json"),
    (b"{", "invalid_json"),
    (b"[]", "invalid_json"),
    (b'{"prompt": "x", "num_images": "2"}', "invalid_num_images"),
    (b'{"prompt": "x", "guidance_scale": NaN}', "invalid_guidance_scale"),
    (b'{"prompt": "x", "image_size": {"width": 64, "height": 64, "depth": 3}}', "unknown_field"),
    (b'{"promt": "x"}', "unknown_field"),  # reported before the missing `prompt` it misspells
])
def test_parse_names_the_bad_field(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidParams) as e:
        t.parse(raw, w.PredictionCreate)
    assert e.value.code == code


def test_prediction_defaults_follow_the_seed() -> None:
    body = t.parse(b'{"prompt": "a dress in the style of FJA90AB"}', w.PredictionCreate)
    assert (body.num_images, body.output_format, body.guidance_scale, body.num_inference_steps, body.seed) == \
        (1, w.OutputFormat.PNG, 7.5, 30, 0)


@pytest.mark.parametrize("family,size,ok", [
    ("sd15", (512, 512), True), ("sd15", (1024, 1024), True), ("sd15", (1536, 512), True),
    ("sd15", (448, 512), False),  # the seed's 512 minimum, though SD 1.x could
    ("sd15", (1536, 1536), False),  # within the seed's range but past SD 1.x's pixel count
    ("sdxl", (1536, 1536), True), ("sdxl", (1600, 1024), False),
    ("shapes", (64, 64), True), ("shapes", (512, 512), True), ("shapes", (128, 64), True),
    ("shapes", (576, 64), False), ("shapes", (96, 64), False),
])
def test_image_sizes_by_family(family: str, size: tuple[int, int], ok: bool) -> None:
    if ok:
        t.check_image_size(*size, family)
    else:
        with pytest.raises(InvalidParams) as e:
            t.check_image_size(*size, family)
        assert e.value.code == "invalid_image_size"


def test_a_prediction_is_one_txt2img_pass_with_loras_side_by_side() -> None:
    body = w.PredictionCreate(prompt="FJA90AB dress", seed=5, num_images=3, output_format=w.OutputFormat.JPEG,
                              guidance_scale=4.0, num_inference_steps=12)
    loras = (LoraRef("a", 0.8), LoraRef("b", 0.3))
    spec = t.prediction_spec(body, "shapes", "shapes", loras)
    (stage,) = spec.stages
    assert isinstance(stage, Txt2Img) and spec.count == 3 and spec.seed == 5 and spec.output_format is ImageFormat.JPEG
    d = stage.diffusion
    assert (d.model, d.width, d.height, d.steps, d.cfg_scale, d.loras) == ("shapes", 64, 64, 12, 4.0, loras)
    assert [p.text for p in d.prompts] == ["FJA90AB dress"]
    assert t.prediction_spec(body, "sd", "sd15", ()).stages[0].diffusion.width == 512  # type: ignore[union-attr]


@pytest.mark.parametrize("speed", list(w.TrainingSpeedWord))
@pytest.mark.parametrize("strength", [0, 5, 10])
def test_training_knobs_map_through_the_preset_table(speed: w.TrainingSpeedWord, strength: int) -> None:
    settings = t.training_settings(w.TrainingCreate(trainingStrength=strength, trainingSpeed=speed), "sd15")
    assert settings == preset(strength, TrainingSpeed(speed.value), 512)
    base_steps, per_point, _, rank, _ = PRESETS[TrainingSpeed(speed.value)]
    assert settings.steps == base_steps + per_point * strength and settings.rank == rank
    assert t.training_settings(w.TrainingCreate(), "shapes").resolution == 64


def test_trigger_words_look_like_the_seeds_and_avoid_taken_ones() -> None:
    words = {t.trigger_word() for _ in range(200)}
    assert all(re.fullmatch(r"[A-Z]{3}[0-9]{2}[A-Z]{2}", word) for word in words) and len(words) > 190
    taken = set(words)
    assert t.trigger_word(taken) not in taken
