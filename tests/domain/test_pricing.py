"""The documented price rule."""

from __future__ import annotations

from diffusiond.domain.params import Diffusion, Img2Img, JobSpec, Txt2Img, Upscale, WeightedPrompt
from diffusiond.domain.pricing import job_cost, upscale_size


def d(w: int = 512, h: int = 512, steps: int = 30) -> Diffusion:
    return Diffusion(model="m", prompts=(WeightedPrompt("x"),), width=w, height=h, steps=steps)


def test_base_image_costs_point_two_credits_and_scales() -> None:
    assert job_cost(JobSpec(stages=(Txt2Img(d()),))) == 200
    assert job_cost(JobSpec(stages=(Txt2Img(d(1024, 1024)),))) == 800
    assert job_cost(JobSpec(stages=(Txt2Img(d(steps=60)),), count=3)) == 1200
    assert job_cost(JobSpec(stages=(Txt2Img(d(64, 64, 20)),))) == 10  # the per-image floor


def test_img2img_pays_only_for_steps_it_runs() -> None:
    half = JobSpec(stages=(Img2Img(d(), strength=0.5),))
    assert job_cost(half, (512, 512)) == 100


def test_upscale_size_and_cost_follow_the_previous_stage() -> None:
    up = Upscale(width=1024)
    assert upscale_size((512, 256), up) == (1024, 512)
    assert upscale_size((100, 50), Upscale()) == (200, 100)
    spec = JobSpec(stages=(Txt2Img(d()), Upscale(scale=4.0)))
    assert job_cost(spec) == 200 + 200  # 2048x2048 output is the upscale base price


def test_prompts_beyond_four_cost_a_millicredit_each_per_image() -> None:
    def priced(positive: int, negative: int, count: int = 1) -> int:
        base = d(64, 64, 10)
        many = Diffusion(model="m", prompts=tuple(WeightedPrompt(f"p{i}") for i in range(positive)),
                         negative_prompts=tuple(WeightedPrompt(f"n{i}") for i in range(negative)),
                         width=base.width, height=base.height, steps=base.steps)
        return job_cost(JobSpec(stages=(Txt2Img(many),), count=count))

    assert priced(1, 0) == priced(3, 1) == 10  # the per-image floor; four prompts are free
    assert priced(32, 0) == 10 + 28
    assert priced(20, 12, count=3) == 3 * (10 + 28)
