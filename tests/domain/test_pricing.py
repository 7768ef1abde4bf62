"""The documented price rule."""

from __future__ import annotations

from dataclasses import replace

from diffusiond.domain.merge import MergeSpec
from diffusiond.domain.params import (
    Diffusion,
    GenerateSpec,
    ImageRef,
    Img2Img,
    LoraMix,
    LoraRef,
    Txt2Img,
    Upscale,
    WeightedPrompt,
)
from diffusiond.domain.pricing import job_cost, price, upscale_size
from diffusiond.domain.training import TrainingImage, TrainMethod, TrainSettings, TrainSpec


def d(w: int = 512, h: int = 512, steps: int = 30) -> Diffusion:
    return Diffusion(model="m", prompts=(WeightedPrompt("x"),), width=w, height=h, steps=steps)


def test_base_image_costs_point_two_credits_and_scales() -> None:
    assert job_cost(GenerateSpec(stages=(Txt2Img(d()),))) == 200
    assert job_cost(GenerateSpec(stages=(Txt2Img(d(1024, 1024)),))) == 800
    assert job_cost(GenerateSpec(stages=(Txt2Img(d(steps=60)),), count=3)) == 1200
    assert job_cost(GenerateSpec(stages=(Txt2Img(d(64, 64, 20)),))) == 10  # the per-image floor


def test_img2img_pays_only_for_steps_it_runs() -> None:
    half = GenerateSpec(stages=(Img2Img(d(), strength=0.5),))
    assert job_cost(half, (512, 512)) == 100


def test_upscale_size_and_cost_follow_the_previous_stage() -> None:
    up = Upscale(width=1024)
    assert upscale_size((512, 256), up) == (1024, 512)
    assert upscale_size((100, 50), Upscale()) == (200, 100)
    spec = GenerateSpec(stages=(Txt2Img(d()), Upscale(scale=4.0)))
    assert job_cost(spec) == 200 + 200  # 2048x2048 output is the upscale base price


def test_an_image_reference_prices_the_work_done_on_it() -> None:
    half = GenerateSpec(stages=(Img2Img(d(), init=ImageRef("k", 1024, 512), strength=0.5),))
    assert price(half) == 200  # 1024x512 is twice 512x512; half the steps run


def test_training_and_merge_prices() -> None:
    images = tuple(TrainingImage(ImageRef(f"{i}.png")) for i in range(4))
    settings = TrainSettings(steps=1000, learning_rate=1e-4, batch_size=4, resolution=512)
    lora = TrainSpec(base_model="m", images=images, trigger_word="t", settings=settings)
    assert price(lora) == 2 * 1000 * 4  # 2 millicredits per image-step at 512x512
    assert price(replace(lora, settings=replace(settings, train_text_encoder=True))) == 12_000
    assert price(replace(lora, method=TrainMethod.FULL)) == 24_000
    tiny = replace(lora, settings=replace(settings, resolution=64, steps=10))
    assert price(tiny) == 100  # the per-training floor
    assert price(MergeSpec(primary="a", secondary="b", output_model="c")) == 500


def test_prompts_beyond_four_cost_a_millicredit_each_per_image() -> None:
    def priced(positive: int, negative: int, count: int = 1) -> int:
        base = d(64, 64, 10)
        many = Diffusion(model="m", prompts=tuple(WeightedPrompt(f"p{i}") for i in range(positive)),
                         negative_prompts=tuple(WeightedPrompt(f"n{i}") for i in range(negative)),
                         width=base.width, height=base.height, steps=base.steps)
        return job_cost(GenerateSpec(stages=(Txt2Img(many),), count=count))

    assert priced(1, 0) == priced(3, 1) == 10  # the per-image floor; four prompts are free
    assert priced(32, 0) == 10 + 28
    assert priced(20, 12, count=3) == 3 * (10 + 28)


def test_composed_loras_pay_for_every_unet_pass() -> None:
    def priced(*loras: tuple[str, float], mix: LoraMix = LoraMix.COMPOSED) -> int:
        refs = tuple(LoraRef(model_id, weight) for model_id, weight in loras)
        return job_cost(GenerateSpec(stages=(Txt2Img(replace(d(), loras=refs, lora_mix=mix)),), count=2))

    assert priced() == priced(("a", 1.0)) == priced(("a", 1.0), ("b", 0.0)) == 2 * 200  # one plain pass
    assert priced(("a", 1.0), ("b", 0.5)) == 2 * 3 * 200  # base, a, b
    assert priced(("a", 1.0), ("b", 0.5), ("c", 2.0)) == 2 * 4 * 200
    assert priced(("a", 0.5), ("a", 0.5), ("b", 1.0), ("c", 1.0), ("c", -1.0)) == 2 * 3 * 200  # a once, c cancels
    assert priced(("a", 1.0), ("b", 0.5), mix=LoraMix.MERGED) == 2 * 200
