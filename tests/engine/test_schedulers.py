from __future__ import annotations

import pytest

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import GenerateSpec, Sampler, Schedule, Txt2Img
from diffusiond.engine.runner import Engine
from diffusiond.engine.schedulers import build_scheduler, supports_schedule
from tests.engine.conftest import Context, diffusion

NO_SIGMA_SPACING = {Sampler.DDIM, Sampler.DDPM, Sampler.PNDM, Sampler.K_EULER_ANCESTRAL}


@pytest.mark.parametrize("sampler", list(Sampler))
def test_every_sampler_runs(engine: Engine, ctx: Context, sampler: Sampler) -> None:
    schedule = Schedule.DEFAULT if sampler in NO_SIGMA_SPACING else Schedule.KARRAS
    spec = GenerateSpec(stages=(Txt2Img(diffusion(sampler=sampler, schedule=schedule, steps=3)),), seed=1)
    image = engine.run(spec, ctx)[0].image
    assert image.size == (64, 64)
    assert len(image.getcolors(maxcolors=1 << 24) or ()) > 1  # a real decode, not a blank canvas


def test_exponential_schedule_and_default_differ(engine: Engine, ctx: Context) -> None:
    runs = [
        engine.run(GenerateSpec(stages=(Txt2Img(diffusion(sampler=Sampler.K_DPMPP_2M, schedule=s)),), seed=1), ctx)[0]
        for s in (Schedule.DEFAULT, Schedule.EXPONENTIAL)
    ]
    assert runs[0].image.tobytes() != runs[1].image.tobytes()


def test_schedule_flags_reach_the_scheduler() -> None:
    from diffusers import PNDMScheduler

    base = PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).config
    karras = build_scheduler(base, Sampler.K_DPMPP_2M, Schedule.KARRAS)
    assert type(karras).__name__ == "DPMSolverMultistepScheduler" and karras.config.use_karras_sigmas
    assert karras.config.beta_schedule == "scaled_linear"  # the model's own training schedule is kept
    assert not build_scheduler(dict(karras.config), Sampler.K_EULER, Schedule.DEFAULT).config.use_karras_sigmas


def test_unsupported_combination_is_invalid() -> None:
    assert not supports_schedule(Sampler.DDIM, Schedule.KARRAS)
    with pytest.raises(InvalidParams):
        build_scheduler({}, Sampler.DDIM, Schedule.KARRAS)


def test_lms_without_scipy_matches_closed_form() -> None:
    from diffusiond.engine.schedulers import _lms_class

    lms = _lms_class()(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    lms.set_timesteps(10)
    sigmas = [float(s) for s in lms.sigmas]
    # order 1: the basis is 1, so the integral is the sigma step itself
    assert lms.get_lms_coefficient(1, 3, 0) == pytest.approx(sigmas[4] - sigmas[3], rel=1e-9)
    # order 2, current 0: integral of (tau - s2) / (s3 - s2) from s3 to s4
    s2, s3, s4 = sigmas[2], sigmas[3], sigmas[4]
    expected = ((s4 - s2) ** 2 - (s3 - s2) ** 2) / (2 * (s3 - s2))
    assert lms.get_lms_coefficient(2, 3, 0) == pytest.approx(expected, rel=1e-9)
